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

