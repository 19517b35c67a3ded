# MODE=logs: read-only. The last LOG_LINES lines the container printed (stdout and stderr, with
# Docker's timestamps), every value of the release's secret masked as in everything this script
# prints. SSM returns at most 24,000 characters of a script's output: past that, the oldest lines
# are left out (the newest are what one asks logs for). Then, on stderr, what it had and showed:
#   ec2-deploy-logs lines=N bytes=B shown_lines=N shown_bytes=B
if [ "$MODE" = logs ]; then
  [[ ${LOG_LINES:-} =~ ^[1-9][0-9]*$ ]] || fail 2 "MODE=logs needs LOG_LINES, a positive number"
  exists "$CONTAINER_NAME" || fail 22 "there is no container $CONTAINER_NAME on this instance"
  logs_env=$(mktemp)
  logs_out=$(mktemp)
  logs_shown=$(mktemp)
  trap 'rm -f "$logs_env" "$logs_out" "$logs_shown"' EXIT
  # For its values alone: each of them is masked below.
  write_env "$logs_env"
  if [ "${#secret_values[@]}" -eq 0 ]; then
    docker logs --timestamps --tail "$LOG_LINES" "$CONTAINER_NAME" >"$logs_out" 2>&1
  else
    docker logs --timestamps --tail "$LOG_LINES" "$CONTAINER_NAME" 2>&1 | mask_lines >"$logs_out"
  fi
  # Bytes, not characters: 23,000 bytes are at most 23,000 characters, with room for the rest.
  if [ "$(wc -c <"$logs_out")" -gt 23000 ]; then
    tail -c 23000 "$logs_out" | tail -n +2 >"$logs_shown"
  else
    cp "$logs_out" "$logs_shown"
  fi
  cat "$logs_shown"
  printf 'ec2-deploy-logs lines=%s bytes=%s shown_lines=%s shown_bytes=%s\n' "$(wc -l <"$logs_out")" \
    "$(wc -c <"$logs_out")" "$(wc -l <"$logs_shown")" "$(wc -c <"$logs_shown")" >&2
  exit 0
fi
