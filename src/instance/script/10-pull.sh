log "release $RELEASE: $IMAGE"
phase prepare
# By digest, an image that is here is the release: pulled before the first batch (MODE=pull),
# or run here before. Otherwise a registry login, then the pull.
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE is on this instance already"
else
  retry 3 registry_login || fail 11 "cannot log in to $REGISTRY with this instance's credentials (does its role allow ecr:GetAuthorizationToken?)"
  logged_in=1
  phase login
  retry 3 docker pull --quiet "$IMAGE" >/dev/null || fail 12 "cannot pull $IMAGE (does the instance role allow ECR pulls, and can the instance reach $REGISTRY?)"
fi
if [ -n "$PROXY" ]; then
  ensure_proxy_image || fail 12 "$proxy_error"
fi
phase pull
# MODE=pull: the images are here; the deploy that follows switches.
if [ "$MODE" = pull ]; then
  printf 'ec2-deploy-pulled image=%s phases=%s\n' "$IMAGE" "$phases"
  exit 0
fi
