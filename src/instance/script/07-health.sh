# Healthy means: running without restarting, and the HTTP path answers 2xx (when given), else
# the image's own HEALTHCHECK says healthy (when it has one), else still running after a few
# seconds — by a look taken after they are up (a slow daemon can take a second to answer). A
# container that restarts (a crash loop under its restart policy) is not healthy, whatever it
# answers in between. A container of the proxy layout is asked directly on the
# network, before the proxy sends it anything.
wait_healthy() {
  local c=$1 deadline=$((SECONDS + HEALTH_TIMEOUT)) status count exit_code ip health code since looked restarts='' url upstream='' where
  since=$(now_ms)
  read -r restarts upstream <<<"$(inspect "$c" '{{.RestartCount}} {{index .Config.Labels "ec2-deploy.upstream"}}')" || true
  while :; do
    # One snapshot: the container may be removed between two questions. Taken after `looked`.
    looked=$(now_ms)
    ip=''
    read -r status count exit_code ip <<<"$(inspect "$c" "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}} {{with index .NetworkSettings.Networks \"$network\"}}{{.IPAddress}}{{end}}")" || true
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
        url="http://$ip:${upstream##*:}$HEALTH_PATH"
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
          if [ $((looked - since)) -ge 3000 ]; then
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
  # When a run last left a release here, and the record version it has (see
  # EC2_DEPLOY_BOOT_SINCE above); a rollback to what ran before has none.
  date +%s%3N >"$state_dir/deployed-at" 2>/dev/null || true
  if [ "$MODE" = deploy ] && [ -n "${RELEASE_VERSION:-}" ]; then
    printf '%s\n' "$RELEASE_VERSION" >"$state_dir/release-version" 2>/dev/null || true
  else
    rm -f "$state_dir/release-version"
  fi
  phase finish
  local calls
  calls=$(wc -c <"$DOCKER_CONFIG/calls" 2>/dev/null || echo 0)
  printf 'ec2-deploy-result outcome=%s previous=%s current=%s previous_config=%s current_config=%s%s phases=%s docker_calls=%s\n' \
    "$1" "$previous_image" "$2" "${previous_config:--}" "${3:--}" "${gap_ms:+ gap_ms=$gap_ms}" "$phases" "$((calls))"
}

# Checks what already runs: healthy, and (proxy layout) the proxy sends requests to it.
verify_running() {
  wait_healthy "$CONTAINER_NAME" || fail 15 "$CONTAINER_NAME runs $1 but is not healthy: $health_reason"
  if [ -n "$(upstream_of "$CONTAINER_NAME")" ]; then
    route "$CONTAINER_NAME" || fail 14 "the proxy did not start: $proxy_error"
  fi
}

