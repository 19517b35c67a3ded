env_new="$state_dir/env.new"
write_env "$env_new"
phase secret

# MODE=predeploy: the new release's one-off command, in a container of its own with the new
# environment, before any instance is switched. MODE=exec: the same for an operator's command
# (`ec2-deploy exec`) in the live release. Nothing that serves is touched. The last stdout line
# is `ec2-deploy-one-off exit=<code>` (exit=timeout when it was stopped).
# What the release's container and its pre-deploy one-off share: volumes, limits and user.
resource_args=()
for volume in ${VOLUMES[@]+"${VOLUMES[@]}"}; do
  resource_args+=(--volume "$volume")
done
[ -z "$MEMORY" ] || resource_args+=(--memory "$MEMORY")
[ -z "$CPUS" ] || resource_args+=(--cpus "$CPUS")
[ -z "$RUN_USER" ] || resource_args+=(--user "$RUN_USER")

if [ "$MODE" = predeploy ] || [ "$MODE" = exec ]; then
  one_off=$CONTAINER_NAME-$MODE
  what="exec"
  [ "$MODE" = exec ] || what=pre-deploy
  docker rm --force "$one_off" >/dev/null 2>&1 || true
  run_args=(create --name "$one_off" --env-file "$env_new" --label "ec2-deploy.$MODE=$RELEASE"
    ${resource_args[@]+"${resource_args[@]}"})
  if ! err=$(docker "${run_args[@]}" "$IMAGE" ${PRE_DEPLOY[@]+"${PRE_DEPLOY[@]}"} 2>&1 >/dev/null); then
    rm -f "$env_new"
    fail 21 "$what: docker create failed: $(docker_reason "$err")"
  fi
  rm -f "$env_new"
  log "$what: running $(mask_text "${PRE_DEPLOY[*]}") (at most ${PRE_DEPLOY_TIMEOUT}s)"
  if ! err=$(docker start "$one_off" 2>&1 >/dev/null); then
    docker rm --force "$one_off" >/dev/null 2>&1 || true
    fail 21 "$what: the container did not start: $(docker_reason "$err")"
  fi
  if code=$(timeout "$PRE_DEPLOY_TIMEOUT" docker wait "$one_off"); then
    timed_out=false
  else
    timed_out=true
    docker kill "$one_off" >/dev/null 2>&1 || true
  fi
  docker logs "$one_off" 2>&1 | tail -n 200 | while IFS= read -r line; do
    printf '  | %s\n' "$(mask_text "$line")"
  done
  docker rm --force "$one_off" >/dev/null 2>&1 || true
  if [ "$timed_out" = true ]; then
    printf 'ec2-deploy-one-off exit=timeout\n'
    fail 21 "$what did not finish within ${PRE_DEPLOY_TIMEOUT}s: it was stopped"
  fi
  printf 'ec2-deploy-one-off exit=%s\n' "$code"
  [ "$code" = 0 ] || fail 21 "$what exited with $code"
  log "$what succeeded"
  exit 0
fi

