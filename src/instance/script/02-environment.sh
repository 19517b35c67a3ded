# The secret's JSON object becomes KEY=VALUE lines. Errors name keys, never values.
secret_to_env() {
  if command -v jq >/dev/null 2>&1; then
    jq -r '
      if type != "object" then error("the secret is not a JSON object") else . end
      | to_entries[]
      | if (.key | test("^[A-Za-z_][A-Za-z0-9_]*$") | not) then error("key \(.key) is not a valid variable name")
        elif (.value | type) == "object" or (.value | type) == "array" then error("the value of \(.key) is not a string, number or boolean")
        elif (.value | tostring | test("[\n\r\u0000]")) then error("the value of \(.key) has a line break, which an env file cannot carry")
        else "\(.key)=\(.value | if type == "string" then . else tostring end)" end'
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c '
import json, re, sys
data = json.load(sys.stdin)
if not isinstance(data, dict):
    sys.exit("the secret is not a JSON object")
for key, value in data.items():
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        sys.exit(f"key {key} is not a valid variable name")
    if isinstance(value, (dict, list)):
        sys.exit(f"the value of {key} is not a string, number or boolean")
    text = value if isinstance(value, str) else json.dumps(value)
    if any(c in text for c in "\n\r\0"):
        sys.exit(f"the value of {key} has a line break, which an env file cannot carry")
    print(f"{key}={text}")
'
  else
    echo "neither jq nor python3 is installed to read the secret" >&2
    return 1
  fi
}

# Writes the container's environment to file $1: ENV_VARS, then the keys of the secret SECRET_ID
# (fetched here; its values are remembered only to mask them).
write_env() {
  local file=$1 kv secret_json secret_env
  : >"$file"
  for kv in ${ENV_VARS[@]+"${ENV_VARS[@]}"}; do
    printf '%s\n' "$kv" >>"$file"
  done
  [ -n "$SECRET_ID" ] || return 0
  if [ "${SECRET_ID#ssm:}" != "$SECRET_ID" ]; then
    # A Parameter Store parameter (SecureString: decrypted with the instance role's KMS access).
    secret_json=$(aws ssm get-parameter --region "$region" --name "${SECRET_ID#ssm:}" --with-decryption \
      --query Parameter.Value --output text) ||
      fail 13 "cannot read parameter ${SECRET_ID#ssm:} (does the instance role allow ssm:GetParameter on it, and kms:Decrypt on its key?)"
  else
    secret_json=$(aws secretsmanager get-secret-value --region "$region" --secret-id "$SECRET_ID" \
      --query SecretString --output text) ||
      fail 13 "cannot read secret $SECRET_ID (does the instance role allow secretsmanager:GetSecretValue on it?)"
  fi
  secret_env=$(printf '%s' "$secret_json" | secret_to_env) || fail 13 "secret $SECRET_ID cannot become environment variables (see above)"
  while IFS= read -r kv; do
    [ -n "$kv" ] || continue
    secret_values+=("${kv#*=}")
    printf '%s\n' "$kv" >>"$file"
  done <<<"$secret_env"
}

# What the container runs with, so an identical redeploy can be recognised. The run options count
# only when given, so a container made before they existed keeps its identity.
run_options() {
  local item
  for item in ${COMMAND[@]+"${COMMAND[@]}"}; do printf 'command:%s\n' "$item"; done
  for item in ${VOLUMES[@]+"${VOLUMES[@]}"}; do printf 'volume:%s\n' "$item"; done
  [ -z "$MEMORY" ] || printf 'memory:%s\n' "$MEMORY"
  [ -z "$CPUS" ] || printf 'cpus:%s\n' "$CPUS"
  [ -z "$LOG_DRIVER" ] || printf 'log-driver:%s\n' "$LOG_DRIVER"
  for item in ${LOG_OPTS[@]+"${LOG_OPTS[@]}"}; do printf 'log-opt:%s\n' "$item"; done
  for item in ${LABELS[@]+"${LABELS[@]}"}; do printf 'label:%s\n' "$item"; done
  [ -z "$RUN_USER" ] || printf 'user:%s\n' "$RUN_USER"
}
# The identity of what a container of this release runs with the environment file $1 (its
# ec2-deploy.config label).
config_id_for() {
  (printf '%s\n' "$IMAGE" ${PORTS[@]+"${PORTS[@]}"} && if [ -n "$PROXY" ]; then
    printf 'proxy:%s->%s\n' "$PROXY_PORT" "$APP_PORT"
  fi && run_options && cat "$1") | sha256sum | cut -d' ' -f1
}

