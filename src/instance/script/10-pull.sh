log "release $RELEASE: $IMAGE"
retry 3 registry_login || fail 11 "cannot log in to $REGISTRY with this instance's credentials (does its role allow ecr:GetAuthorizationToken?)"
retry 3 docker pull --quiet "$IMAGE" >/dev/null || fail 12 "cannot pull $IMAGE (does the instance role allow ECR pulls, and can the instance reach $REGISTRY?)"
logged_in=1
if [ -n "$PROXY" ]; then
  ensure_proxy_image || fail 12 "$proxy_error"
fi

