#!/usr/bin/env bash
# write-env.sh: write $FLOTILLA_HOME/env, which `source .flotilla/env` turns into a working
# shell for the official taskcluster client and Flotilla's CLI, and which the services started
# by services.sh read. Every FLOTILLA_* variable set now is carried into it.
# The root access token and the at-rest secret key are generated once and then kept.
source "$(dirname "$0")/common.sh"

SECRETS="$FLOTILLA_HOME/secrets"
if [[ ! -f $SECRETS ]]; then
  umask 077
  python3 - >"$SECRETS" <<'PY'
import base64, uuid
def slug() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
print(f"root_access_token={slug()}{slug()}")
print(f"secret_key={slug()}{slug()}")
PY
fi
root_token=$(sed -n 's/^root_access_token=//p' "$SECRETS")
secret_key=$(sed -n 's/^secret_key=//p' "$SECRETS")

port="${FLOTILLA_QUEUE_PORT:-8180}"
# The root URL is the ingress (deploy/local/ingress.sh), one URL for every API; the
# services' own ports stay internal.
root_url="${FLOTILLA_ROOT_URL:-http://127.0.0.1:8080}"

declare -A vars=(
  [FLOTILLA_ROOT_URL]="$root_url"
  [FLOTILLA_QUEUE_PORT]="$port"
  [FLOTILLA_PROVISIONER_PORT]="${FLOTILLA_PROVISIONER_PORT:-8181}"
  [FLOTILLA_MONGO_URL]="${FLOTILLA_MONGO_URL:-mongodb://127.0.0.1:27017/}"
  [FLOTILLA_AMQP_URL]="${FLOTILLA_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
  [FLOTILLA_ROOT_ACCESS_TOKEN]="${FLOTILLA_ROOT_ACCESS_TOKEN:-$root_token}"
  [FLOTILLA_SECRET_KEY]="${FLOTILLA_SECRET_KEY:-$secret_key}"
  # The queue calls the object service on its own port (object artifacts).
  [FLOTILLA_OBJECT_URL]="${FLOTILLA_OBJECT_URL:-http://127.0.0.1:${FLOTILLA_OBJECT_PORT:-8184}}"
)
# Carry every other FLOTILLA_* variable of this environment through unchanged.
while IFS='=' read -r name _; do
  [[ $name == FLOTILLA_* && -z ${vars[$name]+set} ]] && vars[$name]="${!name}"
done < <(env)

tmp=$(mktemp "$FLOTILLA_HOME/env.XXXXXX")
{
  echo "# Written by 'make up' ($(date -u +%FT%TZ)). Use: source .flotilla/env"
  printf 'export TASKCLUSTER_ROOT_URL=%q\n' "${vars[FLOTILLA_ROOT_URL]}"
  printf 'export TASKCLUSTER_CLIENT_ID=%q\n' "static/flotilla/root"
  printf 'export TASKCLUSTER_ACCESS_TOKEN=%q\n' "${vars[FLOTILLA_ROOT_ACCESS_TOKEN]}"
  # `flotilla` (the project's console script) lives in the virtualenv: first on PATH.
  printf 'export PATH=%q:"$PATH"\n' "$REPO_ROOT/.venv/bin"
  for name in $(printf '%s\n' "${!vars[@]}" | sort); do
    printf 'export %s=%q\n' "$name" "${vars[$name]}"
  done
} >"$tmp"
chmod 600 "$tmp"
mv "$tmp" "$FLOTILLA_HOME/env"
say "wrote $FLOTILLA_HOME/env"
