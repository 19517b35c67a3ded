# ---- ec2-deploy on-instance script (src/instance/deploy.sh) ----
# shellcheck shell=bash
# Runs as root through SSM Run Command (AWS-RunShellScript) or from user-data, after a header of
# shell assignments that ec2-deploy generates and quotes:
#   MODE IMAGE REGISTRY CONTAINER_NAME PORTS ENV_VARS SECRET_ID HEALTH_PATH HEALTH_PORT
#   HEALTH_TIMEOUT RELEASE
# MODE=deploy (the default) does the steps below. MODE=rollback goes back to the kept
# <name>-previous container, which must run IMAGE with the settings ROLLBACK_CONFIG (its
# ec2-deploy.config label), or finds that already running: no pull, the previous container's own
# environment; if it does not become healthy the newer container is started again.
# Needs docker, the aws CLI and curl; jq or python3 when SECRET_ID is set. It:
#   1. logs in to the registry with the instance's own credentials and pulls IMAGE (by digest);
#   2. writes the container's environment to a file only root can read: ENV_VARS, then the keys
#      of the Secrets Manager secret SECRET_ID (fetched here; values never reach argv or logs);
#   3. keeps the running container as <name>-previous, starts the new one and waits for it to
#      be healthy; on failure puts the previous one back;
#   4. removes older images of the repository, keeping the current and previous releases.
# Deploying what already runs (same image, ports and environment) restarts nothing and only
# verifies health. The last stdout line says what happened:
#   ec2-deploy-result outcome=deployed|unchanged|rolled-back previous=<image> current=<image>
#     previous_config=<id> current_config=<id>   (the ec2-deploy.config labels; - when none)
# Exit codes tell the failed step (ec2-deploy maps them for its report):
#   2 bad parameters   10 prerequisites   11 registry login   12 pull   13 secret
#   14 container did not start   15 unhealthy (the previous container, if any, is restored for both)
#   16 unhealthy and the previous could not be restored   17 another deploy holds the lock
#   18 rollback impossible: IMAGE is not the previous container here
#   19 rollback failed: the release to go back to is unhealthy, the newer one runs again
#   20 the Docker daemon does not answer (nothing was changed)
# From stopping the running container until the new one is healthy (or the old one is back), a
# script that fails, is signalled, or is killed outright (SIGKILL, as the SSM agent does at the
# execution timeout) leaves the previous container running: a trap handles the first two, a guard
# process in a session of its own the third.
# Written for bash 4.2 and later (Amazon Linux 2): an array that may be empty is expanded as
# ${a[@]+"${a[@]}"} (bash before 4.4 calls an empty one unbound under set -u).
set -Eeuo pipefail
umask 077
export LC_ALL=C

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
case $MODE in deploy | rollback) ;; *) fail 2 "MODE must be deploy or rollback" ;; esac
: "${IMAGE:?}" "${REGISTRY:?}" "${CONTAINER_NAME:?}" "${HEALTH_TIMEOUT:?}" "${RELEASE:?}"
case $HEALTH_TIMEOUT in '' | *[!0-9]*) fail 2 "HEALTH_TIMEOUT must be a number of seconds" ;; esac
if [ -n "$HEALTH_PATH" ] && [ -z "$HEALTH_PORT" ]; then
  fail 2 "HEALTH_PATH needs HEALTH_PORT"
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
mkdir -p "$state_dir"
chmod 700 /var/lib/ec2-deploy "$state_dir"

# One deploy at a time on this instance.
exec 9>"$state_dir/lock"
if command -v flock >/dev/null 2>&1; then
  flock -w 120 9 || fail 17 "another deploy of $CONTAINER_NAME is running on this instance"
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

# A container's field, or nothing when there is no such container.
inspect() { docker inspect --type container --format "$2" "$1" 2>/dev/null || true; }
config_of() { inspect "$1" '{{index .Config.Labels "ec2-deploy.config"}}'; }

# ---- the swap guard ----
# While the marker exists, the instance may be between two containers. If this script dies
# then, the previous container is put back: by the EXIT trap when the script can still run it
# (an error, SIGTERM, SIGINT), by the guard when it cannot (SIGKILL).
swap_marker=$state_dir/swap-in-progress
restore_if_interrupted() {
  [ -f "$swap_marker" ] || return 0
  if docker inspect --type container "$CONTAINER_NAME-previous" >/dev/null 2>&1; then
    docker rm --force "$CONTAINER_NAME" >/dev/null 2>&1 || true
    if [ -f "$state_dir/env.previous" ]; then
      mv -f "$state_dir/env.previous" "$state_dir/env"
    fi
    docker rename "$CONTAINER_NAME-previous" "$CONTAINER_NAME" && docker start "$CONTAINER_NAME" >/dev/null
  fi
  rm -f "$swap_marker"
}
# The guard: its own session (a SIGKILL of the script's process group does not reach it), the
# same lock (no other deploy of this container starts while it works), the same restore.
# shellcheck disable=SC2016 # expanded by the guard's own bash, from its arguments
guard_code='
pid=$1 name=$2 state=$3
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
[ -f "$state/swap-in-progress" ] || exit 0
exec 9>"$state/lock"
command -v flock >/dev/null 2>&1 && flock -w 300 9
[ -f "$state/swap-in-progress" ] || exit 0
echo "$(date -u +%FT%TZ) the deploy script $pid died mid-swap: putting $name-previous back"
if docker inspect --type container "$name-previous" >/dev/null 2>&1; then
  docker rm --force "$name" >/dev/null 2>&1
  [ -f "$state/env.previous" ] && mv -f "$state/env.previous" "$state/env"
  docker rename "$name-previous" "$name" && docker start "$name" >/dev/null
fi
rm -f "$state/swap-in-progress"
'
begin_swap() {
  printf '%s\n' "$$" >"$swap_marker"
  if command -v setsid >/dev/null 2>&1; then
    setsid bash -c "$guard_code" ec2-deploy-guard "$$" "$CONTAINER_NAME" "$state_dir" \
      >>"$state_dir/guard.log" 2>&1 </dev/null &
  fi
}
end_swap() { rm -f "$swap_marker"; }

on_exit() {
  local code=$?
  if [ "$code" -ne 0 ] && [ -f "$swap_marker" ]; then
    log "interrupted mid-swap (exit $code): putting the previous container back"
    restore_if_interrupted || true
  fi
  rm -rf "$DOCKER_CONFIG" "$state_dir/env.new"
}
trap on_exit EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

# What runs now, before this run changes anything.
previous_image=$(inspect "$CONTAINER_NAME" '{{.Config.Image}}')
[ -n "$previous_image" ] || previous_image=none
previous_config=$(config_of "$CONTAINER_NAME")
health_reason=

# Healthy means: running without restarting, and the HTTP path answers 2xx (when given), else
# the image's own HEALTHCHECK says healthy (when it has one), else still running after a few
# seconds. A container that restarts (a crash loop under its restart policy) is not healthy,
# whatever it answers in between.
wait_healthy() {
  local deadline=$((SECONDS + HEALTH_TIMEOUT)) status health code running_since=$SECONDS restarts
  restarts=$(inspect "$CONTAINER_NAME" '{{.RestartCount}}')
  while :; do
    status=$(inspect "$CONTAINER_NAME" '{{.State.Status}}')
    if [ -z "$status" ]; then
      health_reason="the container disappeared"
      return 1
    elif [ "$status" != running ]; then
      health_reason="the container is $status (exit code $(inspect "$CONTAINER_NAME" '{{.State.ExitCode}}'))"
      return 1
    elif [ "$(inspect "$CONTAINER_NAME" '{{.RestartCount}}')" != "$restarts" ]; then
      health_reason="the container keeps restarting (it exited with $(inspect "$CONTAINER_NAME" '{{.State.ExitCode}}'))"
      return 1
    fi
    if [ -n "$HEALTH_PATH" ]; then
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$HEALTH_PORT$HEALTH_PATH" || true)
      case $code in
        2??) return 0 ;;
        000) health_reason="GET $HEALTH_PATH on port $HEALTH_PORT: no answer" ;;
        *) health_reason="GET $HEALTH_PATH on port $HEALTH_PORT answered $code" ;;
      esac
    else
      health=$(inspect "$CONTAINER_NAME" '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}')
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
    sleep 1
  done
}

# The last lines a failing container printed, masked.
last_logs() {
  docker logs --tail 20 "$1" 2>&1 | mask_lines | sed 's/^/  | /' >&2 || true
}

# result OUTCOME IMAGE CONFIG: the line ec2-deploy reads.
result() {
  printf 'ec2-deploy-result outcome=%s previous=%s current=%s previous_config=%s current_config=%s\n' \
    "$1" "$previous_image" "$2" "${previous_config:--}" "${3:--}"
}

if [ "$MODE" = rollback ]; then
  # The release to go back to: IMAGE with the settings ROLLBACK_CONFIG (a change of settings
  # alone is a release too).
  is_target() {
    [ "$(inspect "$1" '{{.Config.Image}}')" = "$IMAGE" ] &&
      { [ -z "$ROLLBACK_CONFIG" ] || [ "$(config_of "$1")" = "$ROLLBACK_CONFIG" ]; }
  }
  if is_target "$CONTAINER_NAME" && [ "$(inspect "$CONTAINER_NAME" '{{.State.Running}}')" = true ]; then
    log "$CONTAINER_NAME already runs $IMAGE with those settings: checking its health"
    wait_healthy || fail 15 "$CONTAINER_NAME runs $IMAGE but is not healthy: $health_reason"
    result unchanged "$IMAGE" "$previous_config"
    exit 0
  fi
  if ! is_target "$CONTAINER_NAME-previous"; then
    kept=$(inspect "$CONTAINER_NAME-previous" '{{.Config.Image}}')
    fail 18 "cannot roll back to $IMAGE: the previous container here runs ${kept:-nothing}${kept:+ with other settings}"
  fi
  log "rolling back $CONTAINER_NAME from $previous_image to $IMAGE"
  docker rm --force "$CONTAINER_NAME-rollback" >/dev/null 2>&1 || true
  docker stop --time 10 "$CONTAINER_NAME" >/dev/null 2>&1 || true
  docker rename "$CONTAINER_NAME" "$CONTAINER_NAME-rollback"
  docker rename "$CONTAINER_NAME-previous" "$CONTAINER_NAME"
  if docker start "$CONTAINER_NAME" >/dev/null && wait_healthy; then
    docker rename "$CONTAINER_NAME-rollback" "$CONTAINER_NAME-previous"
    if [ -f "$state_dir/env.previous" ]; then
      mv -f "$state_dir/env" "$state_dir/env.tmp"
      mv -f "$state_dir/env.previous" "$state_dir/env"
      mv -f "$state_dir/env.tmp" "$state_dir/env.previous"
    fi
    result rolled-back "$IMAGE" "$(config_of "$CONTAINER_NAME")"
    exit 0
  fi
  reason=$health_reason
  log "$IMAGE is not healthy ($reason): starting $previous_image again"
  docker stop --time 10 "$CONTAINER_NAME" >/dev/null 2>&1 || true
  docker rename "$CONTAINER_NAME" "$CONTAINER_NAME-previous"
  docker rename "$CONTAINER_NAME-rollback" "$CONTAINER_NAME"
  if ! docker start "$CONTAINER_NAME" >/dev/null || ! wait_healthy; then
    fail 16 "rollback failed ($reason) and $previous_image did not come back: $health_reason"
  fi
  fail 19 "rollback failed: $reason; $previous_image runs again"
fi

registry_login() {
  local password
  password=$(aws ecr get-login-password --region "$region") || return 1
  printf '%s' "$password" | docker login --username AWS --password-stdin "$REGISTRY" >/dev/null
}

log "release $RELEASE: $IMAGE"
retry 3 registry_login || fail 11 "cannot log in to $REGISTRY with this instance's credentials (does its role allow ecr:GetAuthorizationToken?)"
retry 3 docker pull --quiet "$IMAGE" >/dev/null || fail 12 "cannot pull $IMAGE (does the instance role allow ECR pulls, and can the instance reach $REGISTRY?)"

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

env_new="$state_dir/env.new"
: >"$env_new"
for kv in ${ENV_VARS[@]+"${ENV_VARS[@]}"}; do
  printf '%s\n' "$kv" >>"$env_new"
done
if [ -n "$SECRET_ID" ]; then
  secret_json=$(aws secretsmanager get-secret-value --region "$region" --secret-id "$SECRET_ID" \
    --query SecretString --output text) ||
    fail 13 "cannot read secret $SECRET_ID (does the instance role allow secretsmanager:GetSecretValue on it?)"
  secret_env=$(printf '%s' "$secret_json" | secret_to_env) || fail 13 "secret $SECRET_ID cannot become environment variables (see above)"
  unset secret_json
  while IFS= read -r kv; do
    [ -n "$kv" ] || continue
    secret_values+=("${kv#*=}")
    printf '%s\n' "$kv" >>"$env_new"
  done <<<"$secret_env"
  unset secret_env
fi

# What the container runs with, so an identical redeploy can be recognised.
config_id=$( (printf '%s\n' "$IMAGE" ${PORTS[@]+"${PORTS[@]}"} && cat "$env_new") | sha256sum | cut -d' ' -f1)

if [ "$(config_of "$CONTAINER_NAME")" = "$config_id" ] &&
  [ "$(inspect "$CONTAINER_NAME" '{{.State.Running}}')" = true ]; then
  log "$CONTAINER_NAME already runs this release: checking its health"
  wait_healthy || fail 15 "$CONTAINER_NAME runs this release but is not healthy: $health_reason"
  result unchanged "$IMAGE" "$config_id"
  exit 0
fi

# Swap: the running container becomes <name>-previous (stopped, kept for a fast rollback).
docker rm --force "$CONTAINER_NAME-previous" >/dev/null 2>&1 || true
had_previous=false
if [ "$previous_image" != none ]; then
  begin_swap
  log "stopping $CONTAINER_NAME ($previous_image)"
  docker stop --time 10 "$CONTAINER_NAME" >/dev/null
  docker rename "$CONTAINER_NAME" "$CONTAINER_NAME-previous"
  had_previous=true
  if [ -f "$state_dir/env" ]; then
    mv -f "$state_dir/env" "$state_dir/env.previous"
  fi
fi
mv -f "$env_new" "$state_dir/env"

restore_previous() {
  last_logs "$CONTAINER_NAME"
  docker rm --force "$CONTAINER_NAME" >/dev/null 2>&1 || true
  if [ "$had_previous" != true ]; then
    return 0
  fi
  log "putting the previous container back"
  if [ -f "$state_dir/env.previous" ]; then
    mv -f "$state_dir/env.previous" "$state_dir/env"
  fi
  docker rename "$CONTAINER_NAME-previous" "$CONTAINER_NAME" &&
    docker start "$CONTAINER_NAME" >/dev/null &&
    wait_healthy
}

run_args=(run --detach --name "$CONTAINER_NAME" --restart unless-stopped
  --env-file "$state_dir/env"
  --label "ec2-deploy.config=$config_id" --label "ec2-deploy.release=$RELEASE")
for port in ${PORTS[@]+"${PORTS[@]}"}; do
  run_args+=(--publish "$port")
done

# After a failed start or health check: put the previous container back and say so.
undo() {
  local code=$1 reason=$2
  if ! restore_previous; then
    end_swap
    fail 16 "$reason, and the previous container could not be restored: $health_reason"
  fi
  end_swap
  if [ "$had_previous" = true ]; then
    fail "$code" "$reason; the previous container is back"
  fi
  fail "$code" "$reason (there was no previous container)"
}

log "starting $CONTAINER_NAME"
if ! run_error=$(docker "${run_args[@]}" "$IMAGE" 2>&1 >/dev/null); then
  undo 14 "docker run failed: $(printf '%s' "$run_error" | tail -n 1)"
fi
if ! wait_healthy; then
  undo 15 "$health_reason"
fi
end_swap
log "$CONTAINER_NAME is healthy"

# Older images of this repository go; the current and previous releases stay.
keep=" $(inspect "$CONTAINER_NAME" '{{.Image}}') $(inspect "$CONTAINER_NAME-previous" '{{.Image}}') "
repo=${IMAGE%@*}
case ${repo##*/} in *:*) repo=${repo%:*} ;; esac
docker image ls --no-trunc --quiet "$repo" 2>/dev/null | sort -u | while read -r id; do
  case $keep in *" $id "*) ;; *) docker image rm "$id" >/dev/null 2>&1 || true ;; esac
done

result deployed "$IMAGE" "$config_id"
