# MODE=check: read-only. Says whether this instance runs the release as a deploy of it would
# leave it (the same image and settings, the secret's values as they are now), without taking the
# lock, pulling or changing anything; the line ec2-deploy reads:
#   ec2-deploy-check state=STATE image=<what runs> release=<its ec2-deploy.release label>
#     restarts=<Docker's restart count> exit=<its exit code while it is not running, else ->
#     maintenance=<on while the proxy answers with the maintenance page, else off>
# STATE: current, or why not: missing (no container), stopped, other-release, other-settings,
# proxy-down, changing (a deploy is swapping it, or one died mid-swap and the next completes it),
# restarting (Docker is restarting it, or restarted it in the last 300 s: a crash loop looks
# "running" between its crashes).
if [ "$MODE" = check ]; then
  check_env=$(mktemp)
  trap 'rm -f "$check_env"' EXIT
  running_image=$(inspect "$CONTAINER_NAME" '{{.Config.Image}}')
  running_release=$(inspect "$CONTAINER_NAME" '{{index .Config.Labels "ec2-deploy.release"}}')
  restarts=$(inspect "$CONTAINER_NAME" '{{.RestartCount}}')
  # Docker keeps the exit code only until the next start.
  last_exit=$(inspect "$CONTAINER_NAME" '{{if .State.Running}}-{{else}}{{.State.ExitCode}}{{end}}')
  started=$(inspect "$CONTAINER_NAME" '{{.State.StartedAt}}')
  started_s=$(date -d "$started" +%s 2>/dev/null || echo 0)
  if [ -z "$running_image" ]; then
    state=missing
  elif [ -f "$swap_marker" ] || exists "$next"; then
    state=changing
  elif [ "$(inspect "$CONTAINER_NAME" '{{.State.Restarting}}')" = true ] ||
    { running "$CONTAINER_NAME" && [ "${restarts:-0}" != 0 ] && [ $(($(date +%s) - started_s)) -lt 300 ]; }; then
    state=restarting
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
  maintenance=off
  running "$page_name" && maintenance=on
  printf 'ec2-deploy-check state=%s image=%s release=%s restarts=%s exit=%s maintenance=%s\n' "$state" \
    "${running_image:--}" "${running_release:--}" "${restarts:--}" "${last_exit:--}" "$maintenance"
  exit 0
fi

