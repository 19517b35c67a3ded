mkdir -p "$state_dir"
chmod 700 /var/lib/ec2-deploy "$state_dir"

# One deploy at a time on this instance.
exec 9>"$state_dir/lock"
if command -v flock >/dev/null 2>&1; then
  flock -w 120 9 || fail 17 "another deploy of $CONTAINER_NAME is running on this instance"
fi

# A boot (the user-data sets EC2_DEPLOY_BOOT_SINCE: when it started, in ms) after which a deploy
# finished here (it waited for that deploy's lock, or came later): the deploy sent a newer release
# than the record this boot read, so the instance keeps what the deploy left.
if [ -n "${EC2_DEPLOY_BOOT_SINCE:-}" ] &&
  [ "$(cat "$state_dir/deployed-at" 2>/dev/null || echo 0)" -ge "$EC2_DEPLOY_BOOT_SINCE" ]; then
  log "a deploy reached this instance while it booted: it keeps the release that deploy left"
  exit 0
fi
# A boot whose record was read before a deploy that already reached this instance wrote its own:
# that deploy's release has a higher record version (RELEASE_VERSION, in the header it sent)
# than the one this boot read, so the instance keeps it (a catch-up that finished before the
# boot started, the record written after the boot read it).
if [ -n "${EC2_DEPLOY_BOOT_SINCE:-}" ] && [[ ${RELEASE_VERSION:-} =~ ^[0-9]+$ ]]; then
  running_version=$(cat "$state_dir/release-version" 2>/dev/null || true)
  if [[ $running_version =~ ^[0-9]+$ ]] && [ "$running_version" -gt "$RELEASE_VERSION" ]; then
    log "this instance runs version $running_version of the record, newer than the version $RELEASE_VERSION this boot read: it keeps it"
    exit 0
  fi
fi

# Registry credentials live in a private directory for this run only.
DOCKER_CONFIG=$(mktemp -d)
export DOCKER_CONFIG
# Every docker command from here on leaves a mark (subshells too): the result line says how many
# a run took (docker_calls=), what a swap costs the daemon. Defined after the tools were checked.
docker() {
  printf . >>"$DOCKER_CONFIG/calls" 2>/dev/null || true
  command docker "$@"
}

retry() {
  local attempt=1 max=$1
  shift
  until "$@"; do
    if [ "$attempt" -ge "$max" ]; then
      return 1
    fi
    sleep $((attempt * 2))
    attempt=$((attempt + 1))
  done
}

