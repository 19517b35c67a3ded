config_id=$(config_id_for "$env_new")

# previous_config: the running container's, read before this run changed anything (guard).
if [ "$previous_config" = "$config_id" ] && running "$CONTAINER_NAME"; then
  log "$CONTAINER_NAME already runs this release: checking its health"
  verify_running "this release"
  result unchanged "$IMAGE" "$config_id"
  exit 0
fi

create_args=(create --name "$next" --restart unless-stopped --env-file "$env_new"
  --label "ec2-deploy.config=$config_id" --label "ec2-deploy.release=$RELEASE")
if [ -n "$PROXY" ]; then
  ensure_network
  alias=ec2-deploy-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
  create_args+=(--network "$network" --network-alias "$alias" --label "ec2-deploy.upstream=$alias:$APP_PORT")
fi
for port in ${PORTS[@]+"${PORTS[@]}"}; do
  create_args+=(--publish "$port")
done
create_args+=(${resource_args[@]+"${resource_args[@]}"})
[ -z "$LOG_DRIVER" ] || create_args+=(--log-driver "$LOG_DRIVER")
for option in ${LOG_OPTS[@]+"${LOG_OPTS[@]}"}; do
  create_args+=(--log-opt "$option")
done
# Log rotation by default: given neither LOG_DRIVER nor LOG_OPTS, under the engine's default
# json-file driver (which keeps a container's log whole, until the disk is full) at most 3 files
# of 10 MB. An engine whose default is another driver (local rotates; journald, awslogs) is left
# as it is.
if [ -z "$LOG_DRIVER" ] && [ -z "${LOG_OPTS[0]+x}" ] &&
  [ "$default_log_driver" = json-file ]; then
  create_args+=(--log-opt max-size=10m --log-opt max-file=3)
fi
for label in ${LABELS[@]+"${LABELS[@]}"}; do
  create_args+=(--label "$label")
done

begin_swap discard
# COMMAND, after the image, replaces its CMD word for word.
if ! err=$(docker "${create_args[@]}" "$IMAGE" ${COMMAND[@]+"${COMMAND[@]}"} 2>&1 >/dev/null); then
  undo 14 "docker create failed: $(docker_reason "$err")"
fi
switch
finish
log "$CONTAINER_NAME is serving $IMAGE"

# Older images of this repository go; the current and previous releases (and the proxy's) stay.
keep=" $(docker inspect --type container --format '{{.Image}}' "$CONTAINER_NAME" "$kept" "$proxy_name" 2>/dev/null |
  tr '\n' ' ' || true) "
repo=${IMAGE%@*}
case ${repo##*/} in *:*) repo=${repo%:*} ;; esac
docker image ls --no-trunc --quiet "$repo" 2>/dev/null | sort -u | while read -r id; do
  case $keep in *" $id "*) ;; *) docker image rm "$id" >/dev/null 2>&1 || true ;; esac
done

result deployed "$IMAGE" "$config_id"
