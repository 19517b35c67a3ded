# MODE=maintenance: the proxy answers 503 with a page (MAINTENANCE_MESSAGE, plain text) and
# Retry-After (MAINTENANCE_RETRY_AFTER seconds) while the app keeps running, untouched; with
# MAINTENANCE=off it sends requests to the app again. The page is served by a second Caddy, from
# the proxy's own image, on the proxy's network: the proxy's upstream file points at it, as a
# deploy's switch points it at a new container, so the proxy is never replaced. The app's health
# path (HEALTH_PATH) still reaches the app, so a load balancer's health checks keep passing,
# unless MAINTENANCE_HEALTH=fail. A deploy or rollback ends maintenance (see finish).
if [ "$MODE" = maintenance ]; then
  case ${MAINTENANCE:-} in on | off) ;; *) fail 2 "MODE=maintenance needs MAINTENANCE=on or off" ;; esac
  [ -n "$PROXY" ] || fail 2 "maintenance needs the proxy: this release publishes its ports itself (proxy: false)"
  running "$CONTAINER_NAME" || fail 22 "there is no running container $CONTAINER_NAME on this instance"
  running "$proxy_name" || fail 14 "the proxy $proxy_name is not running"
  app_dial=$(upstream_of "$CONTAINER_NAME")
  [ -n "$app_dial" ] || fail 2 "$CONTAINER_NAME publishes its ports itself: it is not behind the proxy"
  answers_page() {
    proxy_request -o /dev/null -D - --max-time 2 | grep -qi '^x-ec2-deploy-maintenance:'
  }
  if [ "$MAINTENANCE" = off ]; then
    set_upstream "$app_dial" || fail 14 "cannot point the proxy at $CONTAINER_NAME again"
    docker rm --force "$page_name" >/dev/null 2>&1 || true
    ! answers_page || fail 14 "the proxy still answers with the maintenance page"
    log "maintenance off: the proxy sends requests to $CONTAINER_NAME"
    printf 'ec2-deploy-maintenance state=off\n'
    exit 0
  fi
  [[ ${MAINTENANCE_RETRY_AFTER:-} =~ ^[0-9]+$ ]] || fail 2 "MAINTENANCE_RETRY_AFTER must be a number of seconds"
  page_files=$state_dir/maintenance
  rm -rf "$page_files"
  mkdir -p "$page_files"
  printf '%s\n' "${MAINTENANCE_MESSAGE:-}" >"$page_files/message"
  printf '%s' "$app_dial" >"$page_files/upstream"
  health_route=
  if [ -n "$HEALTH_PATH" ] && [ "${MAINTENANCE_HEALTH:-pass}" = pass ]; then
    health_match=${HEALTH_PATH%%\?*}
    health_match=${health_match//\\/\\\\}
    health_match=${health_match//\"/\\\"}
    health_route='{"match":[{"path":["'"$health_match"'"]}],"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"{file./ec2-deploy/upstream}"}]}]},'
  fi
  printf '%s\n' '{"admin":{"disabled":true},"apps":{"http":{"servers":{"page":{"listen":[":80"],"automatic_https":{"disable":true},"routes":['"$health_route"'{"handle":[{"handler":"static_response","status_code":503,"headers":{"Retry-After":["'"$MAINTENANCE_RETRY_AFTER"'"],"Content-Type":["text/plain; charset=utf-8"],"Cache-Control":["no-store"],"X-Ec2-Deploy-Maintenance":["on"]},"body":"{file./ec2-deploy/message}"}]}]}}}}}' >"$page_files/caddy.json"
  chmod 755 "$page_files"
  chmod 644 "$page_files"/*
  docker rm --force "$page_name" >/dev/null 2>&1 || true
  if ! err=$(docker create --name "$page_name" --restart unless-stopped --network "$network" \
    --label "ec2-deploy.maintenance-for=$CONTAINER_NAME" \
    "$PROXY_IMAGE" /usr/bin/caddy run --config /ec2-deploy/caddy.json 2>&1 >/dev/null) ||
    ! err=$(docker cp "$page_files" "$page_name:/ec2-deploy" 2>&1) ||
    ! err=$(docker start "$page_name" 2>&1 >/dev/null); then
    docker rm --force "$page_name" >/dev/null 2>&1 || true
    fail 14 "the maintenance page did not start: $(docker_reason "$err")"
  fi
  set_upstream "$page_name:80" || fail 14 "cannot point the proxy at the maintenance page"
  deadline=$((SECONDS + 15))
  until answers_page; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      set_upstream "$app_dial" || true
      docker rm --force "$page_name" >/dev/null 2>&1 || true
      fail 14 "the maintenance page did not answer within 15 s: $CONTAINER_NAME serves again"
    fi
    sleep 0.2
  done
  log "maintenance on: the proxy answers 503 with the page; $CONTAINER_NAME keeps running"
  printf 'ec2-deploy-maintenance state=on\n'
  exit 0
fi

