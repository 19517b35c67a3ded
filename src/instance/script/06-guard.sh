# ---- the swap guard ----
# While the marker exists, <name>-next may be serving or starting and what ran before may be
# stopped. If this script dies then, restore puts back what ran before: the EXIT trap when the
# script can still run it (an error, SIGTERM, SIGINT), the guard when it cannot (SIGKILL).
# Marker lines: the script's pid; what <name>-next is (discard: a new container,
# previous: the kept container of a rollback); 1 when <name> was running.
# Returns non-zero, with restore_error set, when what ran before cannot be started again: the
# caller says so (exit 16), where a bare failure under set -e would end the script with 1.
restore() {
  restore_error=
  [ -f "$swap_marker" ] || return 0
  local kind was_running err
  kind=$(sed -n 2p "$swap_marker")
  was_running=$(sed -n 3p "$swap_marker")
  if exists "$next"; then
    if [ "$kind" = previous ] && ! exists "$kept"; then
      docker stop --time 10 "$next" >/dev/null 2>&1 || true
      err=$(docker rename "$next" "$kept" 2>&1) || restore_error="docker rename $next $kept: $(docker_reason "$err")"
    else
      docker rm --force "$next" >/dev/null 2>&1 || true
    fi
  fi
  if exists "$CONTAINER_NAME" && [ "$was_running" = 1 ]; then
    # A container that publishes its port itself: a proxy started meanwhile would hold it.
    [ -n "$(upstream_of "$CONTAINER_NAME")" ] || docker rm --force --volumes "$proxy_name" >/dev/null 2>&1 || true
    if ! running "$CONTAINER_NAME" && ! err=$(docker start "$CONTAINER_NAME" 2>&1 >/dev/null); then
      restore_error="docker start $CONTAINER_NAME: $(docker_reason "$err")"
    fi
    if [ -n "$(upstream_of "$CONTAINER_NAME")" ]; then
      route "$CONTAINER_NAME" keep || log "the proxy did not come back: ${proxy_error:-}"
    fi
  fi
  rm -f "$swap_marker"
  [ -z "$restore_error" ]
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
    declare -p CONTAINER_NAME PROXY_IMAGE PROXY_PORT PROXY_TRUSTED PROXY_HOSTS PROXY_ACME_EMAIL PROXY_ACME_CA PROXY_ACME_CA_ROOT state_dir next kept proxy_name network swap_marker proxy_spec proxy_hold
    declare -f log inspect exists running upstream_of docker_reason json_words proxy_config proxy_request await_certificate prepare_proxy start_proxy set_upstream route restore
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
  # What cannot start again is no reason to leave the instance without its app: this run goes on.
  restore || log "what ran before could not be started again ($restore_error): this run goes on"
elif exists "$next"; then
  log "the last run on this instance stopped after the switch: completing it"
  promote
fi

# What runs now, before this run changes anything.
previous_image='' previous_config=''
IFS=$'\t' read -r previous_image previous_config <<<"$(inspect "$CONTAINER_NAME" \
  $'{{.Config.Image}}\t{{index .Config.Labels "ec2-deploy.config"}}')" || true
[ -n "$previous_image" ] || previous_image=none
health_reason=
proxy_error=
gap_ms=

