# ---- ec2-deploy on-instance script (src/instance/script/*.sh, assembled in order) ----
# shellcheck shell=bash
# Runs as root through SSM Run Command (AWS-RunShellScript) or from user-data, after a header of
# shell assignments that ec2-deploy generates and quotes:
#   MODE IMAGE REGISTRY CONTAINER_NAME PORTS ENV_VARS SECRET_ID HEALTH_PATH HEALTH_PORT
#   HEALTH_TIMEOUT RELEASE PROXY PROXY_IMAGE PROXY_PORT APP_PORT PROXY_TRUSTED PROXY_HOSTS
#   PROXY_ACME_EMAIL PROXY_ACME_CA PROXY_ACME_CA_ROOT DRAIN_TIMEOUT RELEASE_VERSION, and
#   the run options MEMORY CPUS LOG_DRIVER RUN_USER COMMAND VOLUMES LOG_OPTS LABELS (docker create
#   options, each may be empty)
# MODE=deploy (the default) does the steps below. MODE=rollback goes back to the kept
# <name>-previous container, which must run IMAGE with the settings ROLLBACK_CONFIG (its
# ec2-deploy.config label), or finds that already running: no pull, the previous container's own
# environment, the same switch as a deploy. MODE=check changes nothing: it says whether the
# instance runs this release (below, before the lock). MODE=logs changes nothing either: it
# prints the container's last LOG_LINES lines of output, the secret's values masked.
# MODE=maintenance puts a page in front of the app through the proxy, or takes it away.
# MODE=pull does step 1 and nothing else (the run pulls everywhere before the first batch
# switches); under the instance's lock, as it may finish what a run that died left.
# Needs docker, the aws CLI and curl; jq or python3 when SECRET_ID is set. It:
#   1. logs in to the registry with the instance's own credentials and pulls IMAGE (by digest),
#      and PROXY_IMAGE with it, unless they are here already;
#   2. writes the container's environment to a file only root can read: ENV_VARS, then the keys
#      of the Secrets Manager secret SECRET_ID (fetched here; values never reach argv or logs);
#   3. starts the new container as <name>-next and waits for it to be healthy, then moves the
#      traffic to it; <name> (what ran before) becomes <name>-previous, stopped and kept for a
#      fast rollback. A new container that fails never replaces the one that serves.
#   4. removes older images of the repository, keeping the current and previous releases.
# With PROXY=1, a Caddy container (ec2-deploy-proxy-<name>, image PROXY_IMAGE) holds the host port
# PROXY_PORT and sends each request to the serving container's APP_PORT on the Docker network
# ec2-deploy: the switch is an atomic rename of the file it reads the upstream from (no reload),
# the old container finishes its requests in flight before it stops, and the port never stops
# answering. The first such deploy on an
# instance whose container publishes the port itself stops that container once the new one is
# healthy, then starts the proxy: the port does not answer for that moment (measured, reported).
# When the new container publishes ports itself (PORTS; all of them without PROXY) and the
# running one does too, the running one stops before the new one starts: two containers cannot
# hold one host port.
# Deploying what already runs (same image, ports and environment) restarts nothing and only
# verifies health. The last stdout line says what happened:
#   ec2-deploy-result outcome=deployed|unchanged|rolled-back previous=<image> current=<image>
#     previous_config=<id> current_config=<id> [gap_ms=<n>]
#   (the ec2-deploy.config labels, - when none; gap_ms when the port did not answer for a moment)
# Exit codes tell the failed step (ec2-deploy maps them for its report):
#   2 bad parameters   10 prerequisites   11 registry login   12 pull   13 secret
#   14 container (or proxy) did not start   15 unhealthy (what ran before serves again for both)
#   16 unhealthy and what ran before could not be restored   17 another deploy holds the lock
#   18 rollback impossible: IMAGE is not the previous container here
#   19 rollback failed: the release to go back to is unhealthy, the newer one serves again
#   20 the Docker daemon does not answer (nothing was changed)
#   21 MODE=predeploy or exec: the one-off command failed, timed out or could not start
#   22 logs or maintenance: there is no (running) container of this name here
# From creating <name>-next until the traffic moved to it, a script that fails, is signalled, or
# is killed outright (SIGKILL, as the SSM agent does at the execution timeout) leaves what ran
# before serving: a trap handles the first two, a guard process in a session of its own the
# third. A run interrupted after the switch is completed by the next run.
# Written for bash 4.2 and later (Amazon Linux 2): an array that may be empty is expanded as
# ${a[@]+"${a[@]}"} (bash before 4.4 calls an empty one unbound under set -u).
#
# The parts, in order (src/instance/script/, one job each): common (this: parameters, logging,
# prerequisites, region), containers (names and docker helpers), environment (the env file and
# the settings' identity), check (MODE=check, read-only), lock (the instance's deploy lock),
# proxy, guard (the swap marker, restore, traps, the repair of an interrupted run), health, swap
# (switch, undo, finish), maintenance (MODE=maintenance), rollback (MODE=rollback), pull (login
# and pull), predeploy (MODE=predeploy), deploy (the new release's container).
# Globals that more than one part uses (beyond the header's parameters):
#   region            the AWS region the instance's aws CLI calls (common)
#   state_dir         /var/lib/ec2-deploy/<name>: lock, env files, swap marker, proxy files (common)
#   secret_values     the secret's values, masked in everything printed (common, set by environment)
#   next kept         <name>-next, <name>-previous: the container being started, the one kept (containers)
#   proxy_name        ec2-deploy-proxy-<name>, the proxy's container (containers)
#   page_name         ec2-deploy-maintenance-<name>, the maintenance page's container (containers)
#   network           the Docker network the proxy reaches containers on (containers)
#   swap_marker       present while a swap may have left what ran before stopped (containers)
#   proxy_spec        the proxy's identity, image and port, kept as its label (proxy)
#   proxy_error       why the proxy did not start, for the message (proxy, set by its functions)
#   DOCKER_CONFIG     this run's private registry credentials, removed on exit (lock)
#   previous_image    what ran before this run (guard), previous_config its settings' identity
#   health_reason     why the last health wait failed (health)
#   gap_ms            how long the port did not answer, when it did not (swap)
#   phases            the phases' durations so far, for the result line (common)
#   stopped_previous  what ran before was stopped before the new container was healthy (swap)
#   env_new           the new release's env file (predeploy), resource_args its docker options
set -Eeuo pipefail
umask 077
export LC_ALL=C
# The run options: a release recorded before they existed has none of them in its header.
MEMORY=${MEMORY:-} CPUS=${CPUS:-} LOG_DRIVER=${LOG_DRIVER:-} RUN_USER=${RUN_USER:-}
[ -n "${COMMAND[0]+x}" ] || COMMAND=()
[ -n "${VOLUMES[0]+x}" ] || VOLUMES=()
[ -n "${LOG_OPTS[0]+x}" ] || LOG_OPTS=()
[ -n "${LABELS[0]+x}" ] || LABELS=()
# The proxy's trusted hops: none in a release recorded before they existed (as it ran).
[ -n "${PROXY_TRUSTED[0]+x}" ] || PROXY_TRUSTED=()

log() { printf 'ec2-deploy: %s\n' "$*"; }
now_ms() { date +%s%3N; }
# Where the time goes: `phase NAME` ends the phase NAME now (it began at the previous mark);
# the result line carries them all, `phases=prepare:120,login:80,...` in milliseconds.
phases='' phase_mark=$(now_ms)
phase() {
  local t
  t=$(now_ms)
  phases+="${phases:+,}$1:$((t - phase_mark))"
  phase_mark=$t
}
fail() {
  local code=$1
  shift
  printf 'ec2-deploy: error: %s\n' "$(mask_text "$*")" >&2
  exit "$code"
}

# Values of the secret's keys: masked in everything this script prints (a failing container's
# last log lines may well echo its configuration).
secret_values=()
mask_text() {
  local text=$1 value
  for value in ${secret_values[@]+"${secret_values[@]}"}; do
    [ -n "$value" ] && text=${text//"$value"/***}
  done
  printf '%s' "$text"
}
mask_lines() {
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    printf '%s\n' "$(mask_text "$line")"
  done
}

MODE=${MODE:-deploy}
ROLLBACK_CONFIG=${ROLLBACK_CONFIG:-}
case $MODE in
  deploy | rollback | predeploy | exec | check | logs | maintenance | pull) ;;
  *) fail 2 "MODE must be deploy, rollback, predeploy, exec, check, logs, maintenance or pull" ;;
esac
PRE_DEPLOY_TIMEOUT=${PRE_DEPLOY_TIMEOUT:-600}
[ -n "${PRE_DEPLOY[0]+x}" ] || PRE_DEPLOY=()
if [ "$MODE" = predeploy ] || [ "$MODE" = exec ]; then
  [ -n "${PRE_DEPLOY[0]+x}" ] || fail 2 "MODE=$MODE needs PRE_DEPLOY"
  case $PRE_DEPLOY_TIMEOUT in '' | *[!0-9]*) fail 2 "PRE_DEPLOY_TIMEOUT must be a number of seconds" ;; esac
fi
: "${IMAGE:?}" "${REGISTRY:?}" "${CONTAINER_NAME:?}" "${HEALTH_TIMEOUT:?}" "${RELEASE:?}"
case $HEALTH_TIMEOUT in '' | *[!0-9]*) fail 2 "HEALTH_TIMEOUT must be a number of seconds" ;; esac
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-30} # a release recorded before drain-timeout drained 30 s
case $DRAIN_TIMEOUT in *[!0-9]*) fail 2 "DRAIN_TIMEOUT must be a number of seconds" ;; esac
if [ -n "$HEALTH_PATH" ] && [ -z "$HEALTH_PORT" ]; then
  fail 2 "HEALTH_PATH needs HEALTH_PORT"
fi
PROXY=${PROXY:-} PROXY_IMAGE=${PROXY_IMAGE:-} PROXY_PORT=${PROXY_PORT:-} APP_PORT=${APP_PORT:-}
# Headers recorded before HTTPS on the instance set none of these.
PROXY_ACME_EMAIL=${PROXY_ACME_EMAIL:-} PROXY_ACME_CA=${PROXY_ACME_CA:-} PROXY_ACME_CA_ROOT=${PROXY_ACME_CA_ROOT:-}
declare -p PROXY_TRUSTED >/dev/null 2>&1 || PROXY_TRUSTED=()
declare -p PROXY_HOSTS >/dev/null 2>&1 || PROXY_HOSTS=()
if [ -n "$PROXY" ]; then
  [ -n "$PROXY_IMAGE" ] || fail 2 "PROXY needs PROXY_IMAGE"
  case $PROXY_PORT$APP_PORT in '' | *[!0-9]*) fail 2 "PROXY needs PROXY_PORT and APP_PORT, as numbers" ;; esac
  if [ -z "$PROXY_PORT" ] || [ -z "$APP_PORT" ]; then
    fail 2 "PROXY needs PROXY_PORT and APP_PORT, as numbers"
  fi
  for range in ${PROXY_TRUSTED[@]+"${PROXY_TRUSTED[@]}"}; do
    [[ $range =~ ^[0-9A-Fa-f.:]+(/[0-9]+)?$ ]] || fail 2 "PROXY_TRUSTED: $range is not an address or CIDR range"
  done
  for host in ${PROXY_HOSTS[@]+"${PROXY_HOSTS[@]}"}; do
    [[ $host =~ ^[a-z0-9.-]+$ ]] || fail 2 "PROXY_HOSTS: $host is not a host name"
  done
  if [ -n "${PROXY_HOSTS[0]+x}" ]; then
    [[ $PROXY_ACME_CA =~ ^https://[^\"\\[:space:]]+$ ]] || fail 2 "PROXY_HOSTS needs PROXY_ACME_CA, an https:// URL"
    [[ $PROXY_ACME_EMAIL =~ ^[^\"\\[:space:]]*$ ]] || fail 2 "PROXY_ACME_EMAIL is not an email address"
  fi
fi

for tool in docker aws curl; do
  command -v "$tool" >/dev/null 2>&1 || fail 10 "$tool is not installed on this instance"
done
# A daemon that does not answer would read as "no container" below: stop here, changing nothing.
# (Its default log driver decides the default log rotation: deploy.)
default_log_driver=$(docker info --format '{{.LoggingDriver}}' 2>/dev/null) ||
  fail 20 "the Docker daemon on this instance does not answer (is it running? systemctl start docker); nothing was changed"

region=${AWS_SSM_REGION_NAME:-${AWS_REGION:-${AWS_DEFAULT_REGION:-}}}
if [ -z "$region" ]; then
  # Outside Run Command (user-data): ask the instance metadata service (IMDSv2).
  imds_token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
    http://169.254.169.254/latest/api/token --max-time 2 || true)
  if [ -n "$imds_token" ]; then
    region=$(curl -sf -H "X-aws-ec2-metadata-token: $imds_token" --max-time 2 \
      http://169.254.169.254/latest/meta-data/placement/region || true)
  fi
fi
[ -n "$region" ] || fail 10 "cannot tell the AWS region (no AWS_SSM_REGION_NAME, AWS_REGION or instance metadata)"

state_dir=/var/lib/ec2-deploy/$CONTAINER_NAME

