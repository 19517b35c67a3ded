# ---- ec2-deploy on-instance script (src/instance/deploy.sh) ----
# shellcheck shell=bash
# Runs as root through SSM Run Command (AWS-RunShellScript) or from user-data, after a header of
# shell assignments that ec2-deploy generates and quotes:
#   MODE IMAGE REGISTRY CONTAINER_NAME PORTS ENV_VARS SECRET_ID HEALTH_PATH HEALTH_PORT
#   HEALTH_TIMEOUT RELEASE PROXY PROXY_IMAGE PROXY_PORT APP_PORT, and the run options MEMORY CPUS
#   LOG_DRIVER RUN_USER COMMAND VOLUMES LOG_OPTS LABELS (docker create options, each may be empty)
# MODE=deploy (the default) does the steps below. MODE=rollback goes back to the kept
# <name>-previous container, which must run IMAGE with the settings ROLLBACK_CONFIG (its
# ec2-deploy.config label), or finds that already running: no pull, the previous container's own
# environment, the same switch as a deploy. MODE=check changes nothing: it says whether the
# instance runs this release (below, before the lock).
# Needs docker, the aws CLI and curl; jq or python3 when SECRET_ID is set. It:
#   1. logs in to the registry with the instance's own credentials and pulls IMAGE (by digest),
#      and PROXY_IMAGE with it;
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
#   21 MODE=predeploy: the one-off command failed, timed out or could not start
# From creating <name>-next until the traffic moved to it, a script that fails, is signalled, or
# is killed outright (SIGKILL, as the SSM agent does at the execution timeout) leaves what ran
# before serving: a trap handles the first two, a guard process in a session of its own the
# third. A run interrupted after the switch is completed by the next run.
# Written for bash 4.2 and later (Amazon Linux 2): an array that may be empty is expanded as
# ${a[@]+"${a[@]}"} (bash before 4.4 calls an empty one unbound under set -u).
set -Eeuo pipefail
umask 077
export LC_ALL=C
# The run options: a release recorded before they existed has none of them in its header.
MEMORY=${MEMORY:-} CPUS=${CPUS:-} LOG_DRIVER=${LOG_DRIVER:-} RUN_USER=${RUN_USER:-}
[ -n "${COMMAND[0]+x}" ] || COMMAND=()
[ -n "${VOLUMES[0]+x}" ] || VOLUMES=()
[ -n "${LOG_OPTS[0]+x}" ] || LOG_OPTS=()
[ -n "${LABELS[0]+x}" ] || LABELS=()

log() { printf 'ec2-deploy: %s\n' "$*"; }
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
case $MODE in deploy | rollback | predeploy | check) ;; *) fail 2 "MODE must be deploy, rollback, predeploy or check" ;; esac
PRE_DEPLOY_TIMEOUT=${PRE_DEPLOY_TIMEOUT:-600}
[ -n "${PRE_DEPLOY[0]+x}" ] || PRE_DEPLOY=()
if [ "$MODE" = predeploy ]; then
  [ -n "${PRE_DEPLOY[0]+x}" ] || fail 2 "MODE=predeploy needs PRE_DEPLOY"
  case $PRE_DEPLOY_TIMEOUT in '' | *[!0-9]*) fail 2 "PRE_DEPLOY_TIMEOUT must be a number of seconds" ;; esac
fi
: "${IMAGE:?}" "${REGISTRY:?}" "${CONTAINER_NAME:?}" "${HEALTH_TIMEOUT:?}" "${RELEASE:?}"
case $HEALTH_TIMEOUT in '' | *[!0-9]*) fail 2 "HEALTH_TIMEOUT must be a number of seconds" ;; esac
if [ -n "$HEALTH_PATH" ] && [ -z "$HEALTH_PORT" ]; then
  fail 2 "HEALTH_PATH needs HEALTH_PORT"
fi
PROXY=${PROXY:-} PROXY_IMAGE=${PROXY_IMAGE:-} PROXY_PORT=${PROXY_PORT:-} APP_PORT=${APP_PORT:-}
if [ -n "$PROXY" ]; then
  [ -n "$PROXY_IMAGE" ] || fail 2 "PROXY needs PROXY_IMAGE"
  case $PROXY_PORT$APP_PORT in '' | *[!0-9]*) fail 2 "PROXY needs PROXY_PORT and APP_PORT, as numbers" ;; esac
  if [ -z "$PROXY_PORT" ] || [ -z "$APP_PORT" ]; then
    fail 2 "PROXY needs PROXY_PORT and APP_PORT, as numbers"
  fi
fi

for tool in docker aws curl; do
  command -v "$tool" >/dev/null 2>&1 || fail 10 "$tool is not installed on this instance"
done
# A daemon that does not answer would read as "no container" below: stop here, changing nothing.
docker info >/dev/null 2>&1 ||
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

# ---- containers ----
next=$CONTAINER_NAME-next
kept=$CONTAINER_NAME-previous
proxy_name=ec2-deploy-proxy-$CONTAINER_NAME
network=ec2-deploy
swap_marker=$state_dir/swap-in-progress

# A container's field, or nothing when there is no such container.
inspect() { docker inspect --type container --format "$2" "$1" 2>/dev/null || true; }
exists() { docker inspect --type container "$1" >/dev/null 2>&1; }
running() { [ "$(inspect "$1" '{{.State.Running}}')" = true ]; }
config_of() { inspect "$1" '{{index .Config.Labels "ec2-deploy.config"}}'; }
# Where the proxy sends requests for a container of the proxy layout (alias:port on the
# network); nothing for one that publishes its port itself.
upstream_of() { inspect "$1" '{{index .Config.Labels "ec2-deploy.upstream"}}'; }
publishes() {
  local n
  n=$(inspect "$1" '{{len .HostConfig.PortBindings}}')
  [ -n "$n" ] && [ "$n" != 0 ]
}
now_ms() { date +%s%3N; }
# The daemon's own reason from a failed docker command's stderr (the CLI adds a summary line
# after it, such as "Error: failed to start containers: NAME", that says less).
docker_reason() {
  local reason
  reason=$(printf '%s\n' "$1" | grep -m 1 '^Error response from daemon: ' || true)
  reason=${reason#Error response from daemon: }
  [ -n "$reason" ] || reason=$(printf '%s\n' "$1" | head -n 1)
  printf '%s' "$reason"
}

# The secret's JSON object becomes KEY=VALUE lines. Errors name keys, never values.
secret_to_env() {
  if command -v jq >/dev/null 2>&1; then
    jq -r '
      if type != "object" then error("the secret is not a JSON object") else . end
      | to_entries[]
      | if (.key | test("^[A-Za-z_][A-Za-z0-9_]*$") | not) then error("key \(.key) is not a valid variable name")
        elif (.value | type) == "object" or (.value | type) == "array" then error("the value of \(.key) is not a string, number or boolean")
        elif (.value | tostring | test("[\n\r\u0000]")) then error("the value of \(.key) has a line break, which an env file cannot carry")
        else "\(.key)=\(.value | if type == "string" then . else tostring end)" end'
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c '
import json, re, sys
data = json.load(sys.stdin)
if not isinstance(data, dict):
    sys.exit("the secret is not a JSON object")
for key, value in data.items():
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        sys.exit(f"key {key} is not a valid variable name")
    if isinstance(value, (dict, list)):
        sys.exit(f"the value of {key} is not a string, number or boolean")
    text = value if isinstance(value, str) else json.dumps(value)
    if any(c in text for c in "\n\r\0"):
        sys.exit(f"the value of {key} has a line break, which an env file cannot carry")
    print(f"{key}={text}")
'
  else
    echo "neither jq nor python3 is installed to read the secret" >&2
    return 1
  fi
}

# Writes the container's environment to file $1: ENV_VARS, then the keys of the secret SECRET_ID
# (fetched here; its values are remembered only to mask them).
write_env() {
  local file=$1 kv secret_json secret_env
  : >"$file"
  for kv in ${ENV_VARS[@]+"${ENV_VARS[@]}"}; do
    printf '%s\n' "$kv" >>"$file"
  done
  [ -n "$SECRET_ID" ] || return 0
  secret_json=$(aws secretsmanager get-secret-value --region "$region" --secret-id "$SECRET_ID" \
    --query SecretString --output text) ||
    fail 13 "cannot read secret $SECRET_ID (does the instance role allow secretsmanager:GetSecretValue on it?)"
  secret_env=$(printf '%s' "$secret_json" | secret_to_env) || fail 13 "secret $SECRET_ID cannot become environment variables (see above)"
  while IFS= read -r kv; do
    [ -n "$kv" ] || continue
    secret_values+=("${kv#*=}")
    printf '%s\n' "$kv" >>"$file"
  done <<<"$secret_env"
}

# What the container runs with, so an identical redeploy can be recognised. The run options count
# only when given, so a container made before they existed keeps its identity.
run_options() {
  local item
  for item in ${COMMAND[@]+"${COMMAND[@]}"}; do printf 'command:%s\n' "$item"; done
  for item in ${VOLUMES[@]+"${VOLUMES[@]}"}; do printf 'volume:%s\n' "$item"; done
  [ -z "$MEMORY" ] || printf 'memory:%s\n' "$MEMORY"
  [ -z "$CPUS" ] || printf 'cpus:%s\n' "$CPUS"
  [ -z "$LOG_DRIVER" ] || printf 'log-driver:%s\n' "$LOG_DRIVER"
  for item in ${LOG_OPTS[@]+"${LOG_OPTS[@]}"}; do printf 'log-opt:%s\n' "$item"; done
  for item in ${LABELS[@]+"${LABELS[@]}"}; do printf 'label:%s\n' "$item"; done
  [ -z "$RUN_USER" ] || printf 'user:%s\n' "$RUN_USER"
}
# The identity of what a container of this release runs with the environment file $1 (its
# ec2-deploy.config label).
config_id_for() {
  (printf '%s\n' "$IMAGE" ${PORTS[@]+"${PORTS[@]}"} && if [ -n "$PROXY" ]; then
    printf 'proxy:%s->%s\n' "$PROXY_PORT" "$APP_PORT"
  fi && run_options && cat "$1") | sha256sum | cut -d' ' -f1
}

# MODE=check: read-only. Says whether this instance runs the release as a deploy of it would
# leave it (the same image and settings, the secret's values as they are now), without taking the
# lock, pulling or changing anything; the line ec2-deploy reads:
#   ec2-deploy-check state=STATE image=<what runs> release=<its ec2-deploy.release label>
# STATE: current, or why not: missing (no container), stopped, other-release, other-settings,
# proxy-down, changing (a deploy is swapping it, or one died mid-swap and the next completes it).
if [ "$MODE" = check ]; then
  check_env=$(mktemp)
  trap 'rm -f "$check_env"' EXIT
  running_image=$(inspect "$CONTAINER_NAME" '{{.Config.Image}}')
  running_release=$(inspect "$CONTAINER_NAME" '{{index .Config.Labels "ec2-deploy.release"}}')
  if [ -z "$running_image" ]; then
    state=missing
  elif [ -f "$swap_marker" ] || exists "$next"; then
    state=changing
  elif ! running "$CONTAINER_NAME"; then
    state=stopped
  elif [ "$running_image" != "$IMAGE" ]; then
    state=other-release
  else
    write_env "$check_env"
    if [ "$(config_of "$CONTAINER_NAME")" != "$(config_id_for "$check_env")" ]; then
      state=other-settings
    elif [ -n "$(upstream_of "$CONTAINER_NAME")" ] && ! running "$proxy_name"; then
      state=proxy-down
    else
      state=current
    fi
  fi
  printf 'ec2-deploy-check state=%s image=%s release=%s\n' "$state" "${running_image:--}" "${running_release:--}"
  exit 0
fi

mkdir -p "$state_dir"
chmod 700 /var/lib/ec2-deploy "$state_dir"

# One deploy at a time on this instance.
exec 9>"$state_dir/lock"
if command -v flock >/dev/null 2>&1; then
  flock -w 120 9 || fail 17 "another deploy of $CONTAINER_NAME is running on this instance"
fi

# A boot (the user-data sets EC2_DEPLOY_BOOT_SINCE: when it started, in ms) after which a deploy
# finished here (it waited for that deploy's lock, or came later): the deploy sent a newer release
# than the record this boot read, so the instance keeps what the deploy left.
if [ -n "${EC2_DEPLOY_BOOT_SINCE:-}" ] &&
  [ "$(cat "$state_dir/deployed-at" 2>/dev/null || echo 0)" -ge "$EC2_DEPLOY_BOOT_SINCE" ]; then
  log "a deploy reached this instance while it booted: it keeps the release that deploy left"
  exit 0
fi

# Registry credentials live in a private directory for this run only.
DOCKER_CONFIG=$(mktemp -d)
export DOCKER_CONFIG

retry() {
  local attempt=1 max=$1
  shift
  until "$@"; do
    if [ "$attempt" -ge "$max" ]; then
      return 1
    fi
    sleep $((attempt * 2))
    attempt=$((attempt + 1))
  done
}

# ---- the proxy ----
# Caddy reads where to send each request from the file /ec2-deploy/upstream in its container
# ({file.*} placeholder), so the switch is an atomic rename of that file: no config reload (a
# reload reopens the listening socket and loses connections queued on the old one). Nothing
# listens for commands: there is no admin API. Keep-alive connections to the app close after 2 s
# idle, so a container with no connection from the proxy has no request in flight; a request
# whose connection to a stopped container is refused is retried, reading the file again.
proxy_spec="$PROXY_IMAGE port $PROXY_PORT"
proxy_config() {
  printf '%s\n' '{"admin":{"disabled":true},"apps":{"http":{"servers":{"ec2-deploy":{"listen":[":80"],"automatic_https":{"disable":true},"routes":[{"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"{file./ec2-deploy/upstream}"}],"load_balancing":{"retries":3,"try_interval":"100ms"},"transport":{"protocol":"http","keep_alive":{"idle_timeout":"2s"}}}]}]}}}}}'
}
# Creates the proxy (not started) sending requests to DIAL.
prepare_proxy() {
  local files=$state_dir/proxy err
  docker rm --force --volumes "$proxy_name" >/dev/null 2>&1 || true
  rm -rf "$files"
  mkdir -p "$files"
  proxy_config >"$files/caddy.json"
  printf '%s' "$1" >"$files/upstream"
  chmod 755 "$files"
  chmod 644 "$files/caddy.json" "$files/upstream"
  if ! err=$(docker create --name "$proxy_name" --restart unless-stopped --network "$network" \
    --publish "$PROXY_PORT:80" --env XDG_CONFIG_HOME=/config --env XDG_DATA_HOME=/data \
    --label "ec2-deploy.proxy-for=$CONTAINER_NAME" --label "ec2-deploy.proxy=$proxy_spec" \
    "$PROXY_IMAGE" /usr/bin/caddy run --config /ec2-deploy/caddy.json 2>&1 >/dev/null) ||
    ! err=$(docker cp "$files" "$proxy_name:/ec2-deploy" 2>&1); then
    proxy_error=$(docker_reason "$err")
    return 1
  fi
}
# Starts the proxy and waits (15 s at most) until its port answers.
start_proxy() {
  local err deadline=$((SECONDS + 15))
  if ! err=$(docker start "$proxy_name" 2>&1 >/dev/null); then
    proxy_error=$(docker_reason "$err")
    return 1
  fi
  until curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PROXY_PORT/"; do
    if [ "$SECONDS" -ge "$deadline" ] || ! running "$proxy_name"; then
      proxy_error="it did not answer on port $PROXY_PORT ($(docker logs --tail 1 "$proxy_name" 2>&1 || true))"
      return 1
    fi
    sleep 0.05
  done
}
# Points the proxy at DIAL: an atomic rename in the running proxy's root (requests read the
# old file or the new one, never half of one), or a copy into a stopped one.
set_upstream() {
  local pid root
  pid=$(inspect "$proxy_name" '{{.State.Pid}}')
  if [ -n "$pid" ] && [ "$pid" != 0 ]; then
    root=/proc/$pid/root/ec2-deploy
    printf '%s' "$1" >"$root/upstream.new" && mv -f "$root/upstream.new" "$root/upstream"
  else
    printf '%s' "$1" >"$state_dir/proxy/upstream" &&
      docker cp "$state_dir/proxy/upstream" "$proxy_name:/ec2-deploy/upstream" >/dev/null
  fi
}
# Sends the proxy's requests to container $1, starting (or, for another image or port,
# replacing) the proxy when needed.
route() {
  local dial
  dial=$(upstream_of "$1")
  mkdir -p "$state_dir/proxy"
  if exists "$proxy_name" && [ "$(inspect "$proxy_name" '{{index .Config.Labels "ec2-deploy.proxy"}}')" = "$proxy_spec" ]; then
    set_upstream "$dial" || { proxy_error="cannot write its upstream"; return 1; }
    running "$proxy_name" || start_proxy
    return
  fi
  if ! prepare_proxy "$dial" || ! start_proxy; then
    docker rm --force --volumes "$proxy_name" >/dev/null 2>&1 || true
    return 1
  fi
}
# Waits (30 s at most) until container $1 has no connection from the proxy left, i.e. no
# request in flight (its own network namespace's TCP table, read from /proc).
drain() {
  local pid port deadline=$((SECONDS + 30))
  pid=$(inspect "$1" '{{.State.Pid}}')
  port=$(printf '%04X' "${2##*:}")
  [ -n "$pid" ] && [ "$pid" != 0 ] || return 0
  while [ "$(cat "/proc/$pid/net/tcp" "/proc/$pid/net/tcp6" 2>/dev/null |
    awk -v p=":$port" '$4 == "01" && substr($2, length($2) - 4) == p' | wc -l)" != 0 ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "connections to the previous container still open after 30s: stopping it anyway"
      return 0
    fi
    sleep 0.1
  done
}

# ---- the swap guard ----
# While the marker exists, <name>-next may be serving or starting and what ran before may be
# stopped. If this script dies then, restore puts back what ran before: the EXIT trap when the
# script can still run it (an error, SIGTERM, SIGINT), the guard when it cannot (SIGKILL).
# Marker lines: the script's pid; what <name>-next is (discard: a new container,
# previous: the kept container of a rollback); 1 when <name> was running.
restore() {
  [ -f "$swap_marker" ] || return 0
  local kind was_running
  kind=$(sed -n 2p "$swap_marker")
  was_running=$(sed -n 3p "$swap_marker")
  if exists "$next"; then
    if [ "$kind" = previous ] && ! exists "$kept"; then
      docker stop --time 10 "$next" >/dev/null 2>&1 || true
      docker rename "$next" "$kept"
    else
      docker rm --force "$next" >/dev/null 2>&1 || true
    fi
  fi
  if exists "$CONTAINER_NAME" && [ "$was_running" = 1 ]; then
    if [ -n "$(upstream_of "$CONTAINER_NAME")" ]; then
      running "$CONTAINER_NAME" || docker start "$CONTAINER_NAME" >/dev/null
      route "$CONTAINER_NAME" || log "the proxy did not come back: ${proxy_error:-}"
    else
      # It publishes its port itself: a proxy started meanwhile would hold it.
      docker rm --force --volumes "$proxy_name" >/dev/null 2>&1 || true
      running "$CONTAINER_NAME" || docker start "$CONTAINER_NAME" >/dev/null
    fi
  fi
  rm -f "$swap_marker"
}
# The guard: its own session (a SIGKILL of the script's process group does not reach it), the
# same lock (no other deploy of this container starts while it works), the same restore.
guard_script=$state_dir/guard.sh
begin_swap() {
  local was_running=0
  running "$CONTAINER_NAME" && was_running=1
  printf '%s\n%s\n%s\n' "$$" "$1" "$was_running" >"$swap_marker"
  command -v setsid >/dev/null 2>&1 || return 0
  {
    declare -p CONTAINER_NAME PROXY_IMAGE PROXY_PORT state_dir next kept proxy_name network swap_marker proxy_spec
    declare -f log inspect exists running upstream_of docker_reason proxy_config prepare_proxy start_proxy set_upstream route restore
    # shellcheck disable=SC2016 # expanded by the guard
    printf '%s\n' 'pid=$1' \
      'while kill -0 "$pid" 2>/dev/null; do sleep 1; done' \
      '[ "$(sed -n 1p "$swap_marker" 2>/dev/null)" = "$pid" ] || exit 0' \
      'exec 9>"$state_dir/lock"' \
      'command -v flock >/dev/null 2>&1 && flock -w 300 9' \
      '[ "$(sed -n 1p "$swap_marker" 2>/dev/null)" = "$pid" ] || exit 0' \
      'log "$(date -u +%FT%TZ) the deploy script $pid died mid-swap: putting back what ran before"' \
      'restore'
  } >"$guard_script"
  setsid bash "$guard_script" "$$" >>"$state_dir/guard.log" 2>&1 </dev/null 9>&- &
}
end_swap() { rm -f "$swap_marker"; }

on_exit() {
  local code=$?
  if [ "$code" -ne 0 ] && [ -f "$swap_marker" ]; then
    log "interrupted mid-swap (exit $code): putting back what ran before"
    restore || true
  fi
  rm -rf "$DOCKER_CONFIG" "$state_dir/env.new"
}
trap on_exit EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

# Moves what runs to <name>-next for good: <name> becomes <name>-previous, stopped and kept.
promote() {
  if exists "$CONTAINER_NAME"; then
    docker stop --time 10 "$CONTAINER_NAME" >/dev/null 2>&1 || true
    docker rm --force "$kept" >/dev/null 2>&1 || true
    docker rename "$CONTAINER_NAME" "$kept"
  fi
  docker rename "$next" "$CONTAINER_NAME"
  # A container that publishes its port itself needs no proxy.
  if [ -z "$(upstream_of "$CONTAINER_NAME")" ]; then
    docker rm --force --volumes "$proxy_name" >/dev/null 2>&1 || true
  fi
}

# A run that died left its work half done: finish it (the switch happened) or undo it.
if [ -f "$swap_marker" ]; then
  log "the last run on this instance stopped mid-swap: putting back what ran before"
  restore
elif exists "$next"; then
  log "the last run on this instance stopped after the switch: completing it"
  promote
fi

# What runs now, before this run changes anything.
previous_image=$(inspect "$CONTAINER_NAME" '{{.Config.Image}}')
[ -n "$previous_image" ] || previous_image=none
previous_config=$(config_of "$CONTAINER_NAME")
health_reason=
proxy_error=
gap_ms=

# Healthy means: running without restarting, and the HTTP path answers 2xx (when given), else
# the image's own HEALTHCHECK says healthy (when it has one), else still running after a few
# seconds. A container that restarts (a crash loop under its restart policy) is not healthy,
# whatever it answers in between. A container of the proxy layout is asked directly on the
# network, before the proxy sends it anything.
wait_healthy() {
  local c=$1 deadline=$((SECONDS + HEALTH_TIMEOUT)) status count exit_code health code running_since=$SECONDS restarts url upstream where
  restarts=$(inspect "$c" '{{.RestartCount}}')
  upstream=$(upstream_of "$c")
  while :; do
    # One snapshot: the container may be removed between two questions.
    read -r status count exit_code <<<"$(inspect "$c" '{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}')" || true
    if [ -z "$status" ]; then
      health_reason="the container disappeared"
      return 1
    elif [ "$status" = removing ] || [ "$status" = dead ]; then
      # On its way out: removed by someone else (docker rm --force passes through these).
      health_reason="the container disappeared (it is $status)"
      return 1
    elif [ "$status" = restarting ] || [ "$count" != "$restarts" ]; then
      # Caught between two starts, or after one: a crash loop under its restart policy.
      health_reason="the container keeps restarting (it exited with $exit_code)"
      return 1
    elif [ "$status" != running ]; then
      health_reason="the container is $status (exit code $exit_code)"
      return 1
    fi
    if [ -n "$HEALTH_PATH" ]; then
      where="port $HEALTH_PORT"
      if [ -n "$upstream" ]; then
        where="container port ${upstream##*:}"
        url="http://$(inspect "$c" "{{with index .NetworkSettings.Networks \"$network\"}}{{.IPAddress}}{{end}}"):${upstream##*:}$HEALTH_PATH"
      else
        url="http://127.0.0.1:$HEALTH_PORT$HEALTH_PATH"
      fi
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
      case $code in
        2??) return 0 ;;
        000) health_reason="GET $HEALTH_PATH on $where: no answer" ;;
        *) health_reason="GET $HEALTH_PATH on $where answered $code" ;;
      esac
    else
      health=$(inspect "$c" '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}')
      case $health in
        healthy) return 0 ;;
        none)
          if [ $((SECONDS - running_since)) -ge 3 ]; then
            return 0
          fi
          health_reason="the container has no health check and did not stay up"
          ;;
        *) health_reason="the image's HEALTHCHECK says $health" ;;
      esac
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      health_reason="not healthy after ${HEALTH_TIMEOUT}s: $health_reason"
      return 1
    fi
    sleep 0.25
  done
}

# The last lines a failing container printed, masked.
last_logs() {
  docker logs --tail 20 "$1" 2>&1 | mask_lines | sed 's/^/  | /' >&2 || true
}

# result OUTCOME IMAGE CONFIG: the line ec2-deploy reads.
result() {
  # When a run last left a release here (see EC2_DEPLOY_BOOT_SINCE above).
  date +%s%3N >"$state_dir/deployed-at" 2>/dev/null || true
  printf 'ec2-deploy-result outcome=%s previous=%s current=%s previous_config=%s current_config=%s%s\n' \
    "$1" "$previous_image" "$2" "${previous_config:--}" "${3:--}" "${gap_ms:+ gap_ms=$gap_ms}"
}

# Checks what already runs: healthy, and (proxy layout) the proxy sends requests to it.
verify_running() {
  wait_healthy "$CONTAINER_NAME" || fail 15 "$CONTAINER_NAME runs $1 but is not healthy: $health_reason"
  if [ -n "$(upstream_of "$CONTAINER_NAME")" ]; then
    route "$CONTAINER_NAME" || fail 14 "the proxy did not start: $proxy_error"
  fi
}

# After a failed start, health check or switch: put back what ran before and say so.
stopped_previous=false
undo() {
  local code=$1 reason=$2 was_running
  was_running=$(sed -n 3p "$swap_marker" 2>/dev/null || true)
  last_logs "$next"
  restore
  if [ "$was_running" != 1 ]; then
    if exists "$CONTAINER_NAME"; then
      fail "$code" "$reason (the previous container was not running)"
    fi
    fail "$code" "$reason (there was no previous container)"
  fi
  if ! wait_healthy "$CONTAINER_NAME"; then
    fail 16 "$reason, and what ran before is not healthy again: $health_reason"
  fi
  if [ "$MODE" = rollback ]; then
    [ "$code" = 15 ] && code=19
    fail "$code" "rollback failed: $reason; $previous_image runs again"
  fi
  if [ "$stopped_previous" = true ]; then
    fail "$code" "$reason; the previous container is back"
  fi
  fail "$code" "$reason; the release that was running kept serving"
}

# Moves the traffic from <name> to <name>-next (created, or kept from an earlier release).
# Two containers cannot publish one host port: when both do, <name> stops first (a gap that the
# plan announces). Otherwise <name> serves until <name>-next is healthy and the proxy has moved.
switch() {
  local err old_dial t0 deadline direct_next=
  [ -n "$(upstream_of "$next")" ] || direct_next=1
  if running "$CONTAINER_NAME" && { { publishes "$CONTAINER_NAME" && publishes "$next"; } ||
    { [ -n "$direct_next" ] && running "$proxy_name"; }; }; then
    log "stopping $CONTAINER_NAME ($previous_image) first: the new container publishes its ports itself"
    stopped_previous=true
    docker stop --time 10 "$CONTAINER_NAME" >/dev/null
  fi
  if [ -n "$direct_next" ] && running "$proxy_name"; then
    docker stop --time 10 "$proxy_name" >/dev/null
  fi
  log "starting $next"
  if ! err=$(docker start "$next" 2>&1 >/dev/null); then
    undo 14 "docker start failed: $(docker_reason "$err")"
  fi
  wait_healthy "$next" || undo 15 "$health_reason"
  log "$next is healthy"
  [ -z "$direct_next" ] || return 0
  if running "$CONTAINER_NAME" && [ -z "$(upstream_of "$CONTAINER_NAME")" ] && publishes "$CONTAINER_NAME"; then
    # The one move from the old layout: the port is free only once <name> stops.
    log "moving port $PROXY_PORT from $CONTAINER_NAME to the proxy (once; the port does not answer for a moment)"
    prepare_proxy "$(upstream_of "$next")" || undo 14 "the proxy did not start: $proxy_error"
    stopped_previous=true
    t0=$(now_ms)
    docker stop --time 10 "$CONTAINER_NAME" >/dev/null
    start_proxy || undo 14 "the proxy did not start: $proxy_error"
    deadline=$((SECONDS + 10))
    until curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PROXY_PORT/"; do
      [ "$SECONDS" -lt "$deadline" ] || break
      sleep 0.01
    done
    gap_ms=$(($(now_ms) - t0))
    log "port $PROXY_PORT answered again after ${gap_ms} ms"
    return 0
  fi
  old_dial=
  running "$CONTAINER_NAME" && old_dial=$(upstream_of "$CONTAINER_NAME")
  route "$next" || undo 14 "the proxy did not start: $proxy_error"
  log "the proxy sends requests to $next"
  if [ -n "$old_dial" ]; then
    drain "$CONTAINER_NAME" "$old_dial"
  fi
}

# After the switch: what ran before is kept, stopped, as <name>-previous.
finish() {
  end_swap
  if [ "$MODE" = rollback ]; then
    if [ -f "$state_dir/env.previous" ]; then
      mv -f "$state_dir/env" "$state_dir/env.tmp" 2>/dev/null || true
      mv -f "$state_dir/env.previous" "$state_dir/env"
      [ -f "$state_dir/env.tmp" ] && mv -f "$state_dir/env.tmp" "$state_dir/env.previous"
    fi
  else
    [ -f "$state_dir/env" ] && mv -f "$state_dir/env" "$state_dir/env.previous"
    mv -f "$state_dir/env.new" "$state_dir/env"
  fi
  promote
}

ensure_network() {
  docker network inspect "$network" >/dev/null 2>&1 ||
    docker network create "$network" >/dev/null 2>&1 ||
    docker network inspect "$network" >/dev/null 2>&1 ||
    fail 14 "cannot create the Docker network $network"
}

if [ "$MODE" = rollback ]; then
  # The release to go back to: IMAGE with the settings ROLLBACK_CONFIG (a change of settings
  # alone is a release too).
  is_target() {
    [ "$(inspect "$1" '{{.Config.Image}}')" = "$IMAGE" ] &&
      { [ -z "$ROLLBACK_CONFIG" ] || [ "$(config_of "$1")" = "$ROLLBACK_CONFIG" ]; }
  }
  if is_target "$CONTAINER_NAME" && running "$CONTAINER_NAME"; then
    log "$CONTAINER_NAME already runs $IMAGE with those settings: checking its health"
    verify_running "$IMAGE"
    result unchanged "$IMAGE" "$previous_config"
    exit 0
  fi
  if ! is_target "$kept"; then
    kept_image=$(inspect "$kept" '{{.Config.Image}}')
    fail 18 "cannot roll back to $IMAGE: the previous container here runs ${kept_image:-nothing}${kept_image:+ with other settings}"
  fi
  log "rolling back $CONTAINER_NAME from $previous_image to $IMAGE"
  [ -z "$(upstream_of "$kept")" ] || ensure_network
  begin_swap previous
  docker rename "$kept" "$next"
  switch
  finish
  result rolled-back "$IMAGE" "$(config_of "$CONTAINER_NAME")"
  exit 0
fi

# An ECR host names its region (<account>.dkr.ecr.<region>.amazonaws.com): its tokens come from
# there, which may not be the instance's region. Any other host is a stand-in: the instance's.
registry_region() {
  local rest=${REGISTRY#*.dkr.ecr.}
  [ "$rest" = "$REGISTRY" ] && rest=${REGISTRY#*.dkr.ecr-fips.}
  if [ "$rest" != "$REGISTRY" ] && [ -n "${rest%%.*}" ]; then
    printf '%s' "${rest%%.*}"
  else
    printf '%s' "$region"
  fi
}

registry_login() {
  local password
  password=$(aws ecr get-login-password --region "$(registry_region)") || return 1
  printf '%s' "$password" | docker login --username AWS --password-stdin "$REGISTRY" >/dev/null
}

log "release $RELEASE: $IMAGE"
retry 3 registry_login || fail 11 "cannot log in to $REGISTRY with this instance's credentials (does its role allow ecr:GetAuthorizationToken?)"
retry 3 docker pull --quiet "$IMAGE" >/dev/null || fail 12 "cannot pull $IMAGE (does the instance role allow ECR pulls, and can the instance reach $REGISTRY?)"
if [ -n "$PROXY" ] && ! docker image inspect "$PROXY_IMAGE" >/dev/null 2>&1; then
  retry 3 docker pull --quiet "$PROXY_IMAGE" >/dev/null || fail 12 "cannot pull the proxy image $PROXY_IMAGE"
fi

env_new="$state_dir/env.new"
write_env "$env_new"

# MODE=predeploy: the new release's one-off command, in a container of its own with the new
# environment, before any instance is switched. Nothing that serves is touched.
# What the release's container and its pre-deploy one-off share: volumes, limits and user.
resource_args=()
for volume in ${VOLUMES[@]+"${VOLUMES[@]}"}; do
  resource_args+=(--volume "$volume")
done
[ -z "$MEMORY" ] || resource_args+=(--memory "$MEMORY")
[ -z "$CPUS" ] || resource_args+=(--cpus "$CPUS")
[ -z "$RUN_USER" ] || resource_args+=(--user "$RUN_USER")

if [ "$MODE" = predeploy ]; then
  one_off=$CONTAINER_NAME-predeploy
  docker rm --force "$one_off" >/dev/null 2>&1 || true
  run_args=(create --name "$one_off" --env-file "$env_new" --label "ec2-deploy.predeploy=$RELEASE"
    ${resource_args[@]+"${resource_args[@]}"})
  if ! err=$(docker "${run_args[@]}" "$IMAGE" ${PRE_DEPLOY[@]+"${PRE_DEPLOY[@]}"} 2>&1 >/dev/null); then
    fail 21 "pre-deploy: docker create failed: $(docker_reason "$err")"
  fi
  rm -f "$env_new"
  log "pre-deploy: running $(mask_text "${PRE_DEPLOY[*]}") (at most ${PRE_DEPLOY_TIMEOUT}s)"
  docker start "$one_off" >/dev/null || fail 21 "pre-deploy: the container did not start"
  if code=$(timeout "$PRE_DEPLOY_TIMEOUT" docker wait "$one_off"); then
    timed_out=false
  else
    timed_out=true
    docker kill "$one_off" >/dev/null 2>&1 || true
  fi
  docker logs "$one_off" 2>&1 | tail -n 200 | while IFS= read -r line; do
    printf '  | %s\n' "$(mask_text "$line")"
  done
  docker rm --force "$one_off" >/dev/null 2>&1 || true
  [ "$timed_out" = false ] || fail 21 "pre-deploy did not finish within ${PRE_DEPLOY_TIMEOUT}s: it was stopped"
  [ "$code" = 0 ] || fail 21 "pre-deploy exited with $code"
  log "pre-deploy succeeded"
  exit 0
fi

config_id=$(config_id_for "$env_new")

if [ "$(config_of "$CONTAINER_NAME")" = "$config_id" ] && running "$CONTAINER_NAME"; then
  log "$CONTAINER_NAME already runs this release: checking its health"
  verify_running "this release"
  result unchanged "$IMAGE" "$config_id"
  exit 0
fi

create_args=(create --name "$next" --restart unless-stopped --env-file "$env_new"
  --label "ec2-deploy.config=$config_id" --label "ec2-deploy.release=$RELEASE")
if [ -n "$PROXY" ]; then
  ensure_network
  alias=ec2-deploy-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
  create_args+=(--network "$network" --network-alias "$alias" --label "ec2-deploy.upstream=$alias:$APP_PORT")
fi
for port in ${PORTS[@]+"${PORTS[@]}"}; do
  create_args+=(--publish "$port")
done
create_args+=(${resource_args[@]+"${resource_args[@]}"})
[ -z "$LOG_DRIVER" ] || create_args+=(--log-driver "$LOG_DRIVER")
for option in ${LOG_OPTS[@]+"${LOG_OPTS[@]}"}; do
  create_args+=(--log-opt "$option")
done
for label in ${LABELS[@]+"${LABELS[@]}"}; do
  create_args+=(--label "$label")
done

begin_swap discard
# COMMAND, after the image, replaces its CMD word for word.
if ! err=$(docker "${create_args[@]}" "$IMAGE" ${COMMAND[@]+"${COMMAND[@]}"} 2>&1 >/dev/null); then
  undo 14 "docker create failed: $(docker_reason "$err")"
fi
switch
finish
log "$CONTAINER_NAME is serving $IMAGE"

# Older images of this repository go; the current and previous releases (and the proxy's) stay.
keep=" $(inspect "$CONTAINER_NAME" '{{.Image}}') $(inspect "$kept" '{{.Image}}') $(inspect "$proxy_name" '{{.Image}}') "
repo=${IMAGE%@*}
case ${repo##*/} in *:*) repo=${repo%:*} ;; esac
docker image ls --no-trunc --quiet "$repo" 2>/dev/null | sort -u | while read -r id; do
  case $keep in *" $id "*) ;; *) docker image rm "$id" >/dev/null 2>&1 || true ;; esac
done

result deployed "$IMAGE" "$config_id"
