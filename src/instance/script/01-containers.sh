# ---- containers ----
next=$CONTAINER_NAME-next
kept=$CONTAINER_NAME-previous
proxy_name=ec2-deploy-proxy-$CONTAINER_NAME
page_name=ec2-deploy-maintenance-$CONTAINER_NAME
network=ec2-deploy
swap_marker=$state_dir/swap-in-progress

# A container's field, or nothing when there is no such container.
inspect() { docker inspect --type container --format "$2" "$1" 2>/dev/null || true; }
exists() { docker inspect --type container "$1" >/dev/null 2>&1; }
running() { [ "$(inspect "$1" '{{.State.Running}}')" = true ]; }
config_of() { inspect "$1" '{{index .Config.Labels "ec2-deploy.config"}}'; }
# Where the proxy sends requests for a container of the proxy layout (alias:port on the
# network); nothing for one that publishes its port itself.
upstream_of() { inspect "$1" '{{index .Config.Labels "ec2-deploy.upstream"}}'; }
publishes() {
  local n
  n=$(inspect "$1" '{{len .HostConfig.PortBindings}}')
  [ -n "$n" ] && [ "$n" != 0 ]
}
# The daemon's own reason from a failed docker command's stderr (the CLI adds a summary line
# after it, such as "Error: failed to start containers: NAME", that says less).
docker_reason() {
  local reason
  reason=$(printf '%s\n' "$1" | grep -m 1 '^Error response from daemon: ' || true)
  reason=${reason#Error response from daemon: }
  [ -n "$reason" ] || reason=$(printf '%s\n' "$1" | head -n 1)
  printf '%s' "$reason"
}

