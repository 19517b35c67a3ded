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

