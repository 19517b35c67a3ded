# ---- the proxy ----
# Caddy reads where to send each request from the file /ec2-deploy/upstream in its container
# ({file.*} placeholder), so the switch is an atomic rename of that file: no config reload (a
# reload reopens the listening socket and loses connections queued on the old one). Nothing
# listens for commands: there is no admin API. Keep-alive connections to the app close after 2 s
# idle, so a container with no connection from the proxy has no request in flight; a request
# whose connection to a stopped container is refused is retried, reading the file again.
# The forwarded headers (X-Forwarded-For, -Proto, -Host) of a peer in PROXY_TRUSTED pass on to
# the app; from any other peer Caddy sets them to its own view. A change of them replaces the
# proxy, as one of its image or port does (the spec is its label).
#
# With PROXY_HOSTS (HTTPS on the instance), the proxy serves those names on 443 with certificates
# it obtains and renews from PROXY_ACME_CA by itself (HTTP or TLS-ALPN challenge), and its port
# 80 (published as PROXY_PORT) answers the challenges and redirects the rest to HTTPS: Caddy's
# automatic HTTPS. Certificates and the ACME account live in the volume <proxy>-data, which a
# deploy, a restart or a new proxy image leaves in place (a CA limits how often it reissues).
#
# With ports the container publishes itself (PORTS), the previous container stops before the new
# one starts (two cannot hold one port), so for the new one's start and health check no container
# is behind the proxy. The proxy then holds each request, trying again every 100 ms, for up to
# the health timeout and 15 s more (proxy_hold), instead of answering 502 at once; without such
# ports a request is tried 4 times over 300 ms, so a dead app gets its 502 without a wait.
proxy_hold=
[ -z "${PORTS[0]+x}" ] || proxy_hold=$((HEALTH_TIMEOUT + 15))
proxy_spec="$PROXY_IMAGE port $PROXY_PORT${PROXY_TRUSTED[0]+ trusted ${PROXY_TRUSTED[*]}}${proxy_hold:+ hold ${proxy_hold}s}"
if [ -n "${PROXY_HOSTS[0]+x}" ]; then
  proxy_spec="$proxy_spec hosts ${PROXY_HOSTS[*]} ca $PROXY_ACME_CA${PROXY_ACME_EMAIL:+ email $PROXY_ACME_EMAIL}"
  [ -z "$PROXY_ACME_CA_ROOT" ] || proxy_spec="$proxy_spec root $(printf '%s' "$PROXY_ACME_CA_ROOT" | cksum | cut -d' ' -f1)"
fi
# JSON array of the words given (each validated: no quote or backslash in them).
json_words() {
  local out='' word
  for word in "$@"; do out="$out${out:+,}\"$word\""; done
  printf '[%s]' "$out"
}
proxy_config() {
  local trusted='' listen='":80"' tls='' match='' route
  [ -z "${PROXY_TRUSTED[0]+x}" ] || trusted=',"trusted_proxies":{"source":"static","ranges":'"$(json_words ${PROXY_TRUSTED[@]+"${PROXY_TRUSTED[@]}"})"'}'
  local retry='"retries":3'
  [ -z "$proxy_hold" ] || retry='"try_duration":"'"$proxy_hold"'s"'
  route='"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"{file./ec2-deploy/upstream}"}],"load_balancing":{'"$retry"',"try_interval":"100ms"},"transport":{"protocol":"http","keep_alive":{"idle_timeout":"2s"}}}]'
  if [ -n "${PROXY_HOSTS[0]+x}" ]; then
    local hosts issuer
    hosts=$(json_words ${PROXY_HOSTS[@]+"${PROXY_HOSTS[@]}"})
    issuer='{"module":"acme","ca":"'"$PROXY_ACME_CA"'"'
    [ -z "$PROXY_ACME_EMAIL" ] || issuer="$issuer"',"email":"'"$PROXY_ACME_EMAIL"'"'
    [ -z "$PROXY_ACME_CA_ROOT" ] || issuer="$issuer"',"trusted_roots_pem_files":["/ec2-deploy/acme-ca-root.pem"]'
    listen='":443"' match='"match":[{"host":'"$hosts"'}],'
    tls=',"tls":{"automation":{"policies":[{"subjects":'"$hosts"',"issuers":['"$issuer"'}]}]}}'
  else
    trusted=',"automatic_https":{"disable":true}'"$trusted"
  fi
  printf '%s\n' '{"admin":{"disabled":true},"apps":{"http":{"servers":{"ec2-deploy":{"listen":['"$listen"']'"$trusted"',"routes":[{'"$match$route"'}]}}}'"$tls"'}}'
}
# A request to the proxy as a client makes it: over HTTPS to the first of PROXY_HOSTS (the
# certificate not checked: this asks whether it answers), else over HTTP on its port. Extra
# arguments go to curl.
proxy_request() {
  if [ -n "${PROXY_HOSTS[0]+x}" ]; then
    curl -sk --resolve "${PROXY_HOSTS[0]}:443:127.0.0.1" "$@" "https://${PROXY_HOSTS[0]}/"
  else
    curl -s "$@" "http://127.0.0.1:$PROXY_PORT/"
  fi
}
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

# The proxy's image on this instance: pulled, after a registry login, when it is not here (a
# rollback to a proxied release from one without the proxy finds it pruned).
logged_in=
ensure_proxy_image() {
  docker image inspect "$PROXY_IMAGE" >/dev/null 2>&1 && return 0
  if [ -z "$logged_in" ]; then
    retry 3 registry_login || {
      proxy_error="cannot log in to $REGISTRY with this instance's credentials (does its role allow ecr:GetAuthorizationToken?)"
      return 1
    }
    logged_in=1
  fi
  retry 3 docker pull --quiet "$PROXY_IMAGE" >/dev/null || {
    proxy_error="cannot pull the proxy image $PROXY_IMAGE"
    return 1
  }
}
# Creates the proxy (not started) sending requests to DIAL.
prepare_proxy() {
  local files=$state_dir/proxy err
  docker rm --force --volumes "$proxy_name" >/dev/null 2>&1 || true
  rm -rf "$files"
  mkdir -p "$files"
  local https=()
  proxy_config >"$files/caddy.json"
  printf '%s' "$1" >"$files/upstream"
  [ -z "${PROXY_ACME_CA_ROOT:-}" ] || printf '%s\n' "$PROXY_ACME_CA_ROOT" >"$files/acme-ca-root.pem"
  chmod 755 "$files"
  chmod 644 "$files"/*
  [ -z "${PROXY_HOSTS[0]+x}" ] || https=(--publish 443:443 --volume "$proxy_name-data:/data")
  if ! err=$(docker create --name "$proxy_name" --restart unless-stopped --network "$network" \
    --publish "$PROXY_PORT:80" ${https[@]+"${https[@]}"} --env XDG_CONFIG_HOME=/config --env XDG_DATA_HOME=/data \
    --label "ec2-deploy.proxy-for=$CONTAINER_NAME" --label "ec2-deploy.proxy=$proxy_spec" \
    "$PROXY_IMAGE" /usr/bin/caddy run --config /ec2-deploy/caddy.json 2>&1 >/dev/null) ||
    ! err=$(docker cp "$files" "$proxy_name:/ec2-deploy" 2>&1); then
    proxy_error=$(docker_reason "$err")
    return 1
  fi
}
# Starts the proxy and waits (15 s at most) until its port answers.
start_proxy() {
  local err deadline=$((SECONDS + 15))
  if ! err=$(docker start "$proxy_name" 2>&1 >/dev/null); then
    proxy_error=$(docker_reason "$err")
    return 1
  fi
  until curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PROXY_PORT/"; do
    if [ "$SECONDS" -ge "$deadline" ] || ! running "$proxy_name"; then
      proxy_error="it did not answer on port $PROXY_PORT ($(docker logs --tail 1 "$proxy_name" 2>&1 || true))"
      return 1
    fi
    sleep 0.05
  done
}
# With PROXY_HOSTS: waits (60 s at most) until a new proxy answers HTTPS for the first host, that
# is, holds its certificate (from its volume, or new from the CA). Without one by then the deploy
# goes on (the proxy keeps trying, backing off) and the log says so, with the proxy's last error.
await_certificate() {
  [ -n "${PROXY_HOSTS[0]+x}" ] || return 0
  local deadline=$((SECONDS + 60))
  until proxy_request -o /dev/null --max-time 2; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "warning: no certificate for ${PROXY_HOSTS[0]} after 60 s, HTTPS does not answer yet; the proxy keeps asking $PROXY_ACME_CA (last error: $(docker logs --tail 100 "$proxy_name" 2>&1 | grep -i '"error"' | tail -1 | cut -c1-400))"
      return 0
    fi
    sleep 0.2
  done
  log "HTTPS: ${PROXY_HOSTS[*]} served with a certificate from $PROXY_ACME_CA"
}
# Points the proxy at DIAL: an atomic rename in the running proxy's root (requests read the
# old file or the new one, never half of one), or a copy into a stopped one. $2: the proxy's pid
# when the caller knows it (0 when it is stopped).
set_upstream() {
  local pid=${2:-} root
  [ -n "$pid" ] || pid=$(inspect "$proxy_name" '{{.State.Pid}}')
  if [ -n "$pid" ] && [ "$pid" != 0 ]; then
    root=/proc/$pid/root/ec2-deploy
    printf '%s' "$1" >"$root/upstream.new" && mv -f "$root/upstream.new" "$root/upstream"
  else
    printf '%s' "$1" >"$state_dir/proxy/upstream" &&
      docker cp "$state_dir/proxy/upstream" "$proxy_name:/ec2-deploy/upstream" >/dev/null
  fi
}
# Sends the proxy's requests to container $1, starting (or, for another image, port or trusted
# hops, replacing) the proxy when needed; with $2 = keep, any running proxy will do (a restore
# puts back what served, under the proxy that served it). A replaced proxy is kept, stopped, as
# <proxy>-old until the new one answers: if the new one does not start, the old one serves again
# (the port does not answer between the two, as for any change of the proxy).
route() {
  local dial old=$proxy_name-old p_running='' p_pid='' p_spec=''
  dial=$(upstream_of "$1")
  mkdir -p "$state_dir/proxy"
  # The proxy in one look (nothing when there is none): running, its pid, its spec (last: it
  # has spaces).
  read -r p_running p_pid p_spec <<<"$(inspect "$proxy_name" \
    '{{.State.Running}} {{.State.Pid}} {{index .Config.Labels "ec2-deploy.proxy"}}')" || true
  if [ -n "$p_running" ] && { [ "$p_spec" = "$proxy_spec" ] || { [ "${2:-}" = keep ] && [ "$p_running" = true ]; }; }; then
    set_upstream "$dial" "$p_pid" || { proxy_error="cannot write its upstream"; return 1; }
    [ "$p_running" = true ] || start_proxy
    return
  fi
  docker rm --force --volumes "$old" >/dev/null 2>&1 || true
  if exists "$proxy_name"; then
    docker rename "$proxy_name" "$old" || { proxy_error="cannot set the running proxy aside"; return 1; }
  fi
  if prepare_proxy "$dial"; then
    # At once, as its removal did before it was kept (a graceful stop waits out keep-alives),
    # and with no restart policy to bring it back onto the port meanwhile.
    docker update --restart no "$old" >/dev/null 2>&1 || true
    docker kill "$old" >/dev/null 2>&1 || true
    if start_proxy; then
      docker rm --force --volumes "$old" >/dev/null 2>&1 || true
      await_certificate
      return 0
    fi
  fi
  docker rm --force --volumes "$proxy_name" >/dev/null 2>&1 || true
  if exists "$old"; then
    local why=$proxy_error
    docker update --restart unless-stopped "$old" >/dev/null 2>&1 || true
    if docker rename "$old" "$proxy_name" && start_proxy; then
      proxy_error="$why; the proxy that served before serves again"
    else
      proxy_error="$why; the proxy that served before did not start again either: $proxy_error"
    fi
  fi
  return 1
}
# Waits (DRAIN_TIMEOUT seconds at most) until container $1 has no connection from the proxy left:
# no request in flight, no WebSocket or stream open (its own network namespace's TCP table, read
# from /proc). New requests go to the new container meanwhile.
drain() {
  local pid port deadline=$((SECONDS + DRAIN_TIMEOUT))
  pid=$(inspect "$1" '{{.State.Pid}}')
  port=$(printf '%04X' "${2##*:}")
  [ -n "$pid" ] && [ "$pid" != 0 ] || return 0
  while [ "$(cat "/proc/$pid/net/tcp" "/proc/$pid/net/tcp6" 2>/dev/null |
    awk -v p=":$port" '$4 == "01" && substr($2, length($2) - 4) == p' | wc -l)" != 0 ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "connections to the previous container still open after ${DRAIN_TIMEOUT}s (drain-timeout): stopping it"
      return 0
    fi
    sleep 0.1
  done
}

