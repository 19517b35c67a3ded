# After a failed start, health check or switch: put back what ran before and say so.
stopped_previous=false
undo() {
  local code=$1 reason=$2 was_running
  was_running=$(sed -n 3p "$swap_marker" 2>/dev/null || true)
  last_logs "$next"
  restore || fail 16 "$reason, and what ran before could not be started again: $restore_error"
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
  local err old_dial='' t0 deadline direct_next='' old_running='' old_ports='' old_upstream=''
  [ -n "$(upstream_of "$next")" ] || direct_next=1
  # What serves now, in one look: running or not, how many ports it publishes, its upstream.
  read -r old_running old_ports old_upstream <<<"$(inspect "$CONTAINER_NAME" \
    '{{.State.Running}} {{len .HostConfig.PortBindings}} {{index .Config.Labels "ec2-deploy.upstream"}}')" || true
  local old_publishes=''
  [ -z "$old_ports" ] || [ "$old_ports" = 0 ] || old_publishes=1
  if [ "$old_running" = true ] && { { [ -n "$old_publishes" ] && publishes "$next"; } ||
    { [ -n "$direct_next" ] && running "$proxy_name"; }; }; then
    log "stopping $CONTAINER_NAME ($previous_image) first: the new container publishes its ports itself"
    stopped_previous=true
    docker stop --time 10 "$CONTAINER_NAME" >/dev/null
    old_running=false
  fi
  if [ -n "$direct_next" ] && running "$proxy_name"; then
    docker stop --time 10 "$proxy_name" >/dev/null
  fi
  log "starting $next"
  if ! err=$(docker start "$next" 2>&1 >/dev/null); then
    undo 14 "docker start failed: $(docker_reason "$err")"
  fi
  phase start
  wait_healthy "$next" || undo 15 "$health_reason"
  log "$next is healthy"
  phase health
  [ -z "$direct_next" ] || return 0
  if [ "$old_running" = true ] && [ -z "$old_upstream" ] && [ -n "$old_publishes" ]; then
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
    phase switch
    return 0
  fi
  [ "$old_running" != true ] || old_dial=$old_upstream
  route "$next" || undo 14 "the proxy did not start: $proxy_error"
  log "the proxy sends requests to $next"
  phase switch
  if [ -n "$old_dial" ]; then
    drain "$CONTAINER_NAME" "$old_dial"
    phase drain
  fi
}

# After the switch: what ran before is kept, stopped, as <name>-previous. A maintenance page
# ended at the switch (the proxy sends requests to the new container): it goes.
finish() {
  end_swap
  if exists "$page_name"; then
    docker rm --force "$page_name" >/dev/null 2>&1 || true
    log "maintenance ended: the proxy sends requests to the new release"
  fi
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

