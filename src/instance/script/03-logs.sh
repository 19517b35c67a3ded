# MODE=logs: read-only. The last LOG_LINES lines the container printed (stdout and stderr, with
# Docker's timestamps), every value of the release's secret masked as in everything this script
# prints; with LOG_SINCE (docker logs --since: 10m, 2h, an RFC 3339 time) only lines from then on;
# with LOG_GREP (an extended regular expression, grep -E) the last LOG_LINES lines that match it,
# matched after the masking. SSM returns at most 24,000 characters of a script's output: past
# that, the oldest lines are left out (the newest are what one asks logs for). Then, on stderr,
# what it had and showed:
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
  logs_args=(--timestamps)
  [ -z "${LOG_SINCE:-}" ] || logs_args+=(--since "$LOG_SINCE")
  # With a pattern, every line is read (from LOG_SINCE on) and the last matching ones are kept.
  [ -n "${LOG_GREP:-}" ] || logs_args+=(--tail "$LOG_LINES")
  masked() { if [ "${#secret_values[@]}" -eq 0 ]; then cat; else mask_lines; fi; }
  matching() { if [ -n "${LOG_GREP:-}" ]; then grep -E -e "$LOG_GREP" || [ $? = 1 ]; else cat; fi; }
  if ! docker logs ${logs_args[@]+"${logs_args[@]}"} "$CONTAINER_NAME" 2>&1 | masked | matching | tail -n "$LOG_LINES" >"$logs_out"; then
    fail 2 "cannot read the logs: docker logs${LOG_SINCE:+ --since $LOG_SINCE}${LOG_GREP:+ | grep -E $LOG_GREP} failed (its message is above)"
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
