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
  if [ -n "$(upstream_of "$kept")" ]; then
    # Back behind the proxy: its image first, while what runs keeps serving.
    if [ -n "$PROXY" ]; then ensure_proxy_image || fail 14 "the proxy cannot start: $proxy_error"; fi
    ensure_network
  fi
  begin_swap previous
  docker rename "$kept" "$next"
  switch
  finish
  result rolled-back "$IMAGE" "$(config_of "$CONTAINER_NAME")"
  exit 0
fi

