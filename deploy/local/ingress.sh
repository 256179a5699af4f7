#!/usr/bin/env bash
# ingress.sh start|stop|status|reload: the one root URL (nginx from Debian, not the system
# nginx service) in front of the services that services.sh runs. Its config is rendered
# from deploy/ingress/nginx.conf.template into $FLOTILLA_HOME/ingress/ at every start, with
# one upstream per service whose code exists, at its FLOTILLA_<NAME>_PORT.
#
# Replicas: list every address of a service in FLOTILLA_INGRESS_<NAME>_SERVERS (NAME as
# below, upper case, dashes as underscores), e.g.
#   FLOTILLA_INGRESS_QUEUE_SERVERS="127.0.0.1:8180 127.0.0.1:8190"
# then `deploy/local/ingress.sh reload`.
source "$(dirname "$0")/common.sh"

INGRESS_DIR="$FLOTILLA_HOME/ingress"
CONF="$INGRESS_DIR/nginx.conf"
PID_FILE="$INGRESS_DIR/ingress.pid"

# ingress name, service directory, port variable, default port (the team's port plan)
UPSTREAMS=(
  "queue queue FLOTILLA_QUEUE_PORT 8180"
  "worker-manager provisioner FLOTILLA_PROVISIONER_PORT 8181"
  "index index FLOTILLA_INDEX_PORT 8182"
  "purge-cache purge_cache FLOTILLA_PURGE_CACHE_PORT 8183"
  "object object FLOTILLA_OBJECT_PORT 8184"
  "web web FLOTILLA_WEB_PORT 8185"
)

load_env() {
  if [[ -f $FLOTILLA_HOME/env ]]; then set -a; source "$FLOTILLA_HOME/env"; set +a; fi
}

listen_address() {
  # The root URL's host and port; the ingress listens there.
  python3 - "${FLOTILLA_ROOT_URL:-http://127.0.0.1:8080}" "${FLOTILLA_INGRESS_LISTEN:-}" <<'PY'
import sys
from urllib.parse import urlsplit
if sys.argv[2]:
    print(sys.argv[2]); raise SystemExit
url = urlsplit(sys.argv[1])
port = url.port or (443 if url.scheme == "https" else 80)
host = url.hostname or "127.0.0.1"
# A public name: listen on every interface; a loopback address: only there.
print(f"{host}:{port}" if host in ("127.0.0.1", "localhost") else str(port))
PY
}

render() {
  command -v nginx >/dev/null || die "nginx is not installed (run: make system)"
  local args=() entry name dir var default servers_var servers
  for entry in "${UPSTREAMS[@]}"; do
    read -r name dir var default <<<"$entry"
    servers_var="FLOTILLA_INGRESS_$(tr 'a-z-' 'A-Z_' <<<"$name")_SERVERS"
    servers="${!servers_var:-}"
    if [[ -z $servers ]]; then
      [[ -f $REPO_ROOT/services/$dir/__main__.py ]] || continue
      servers="127.0.0.1:${!var:-$default}"
    fi
    for server in $servers; do args+=(--upstream "$name=$server"); done
  done
  mkdir -p "$INGRESS_DIR"
  python3 "$REPO_ROOT/deploy/ingress/render.py" --listen "$(listen_address)" "${args[@]}" \
    --runtime-dir "$INGRESS_DIR" --log-dir "$LOG_DIR" -o "$CONF"
  nginx -t -q -p "$INGRESS_DIR" -c "$CONF" -e "$LOG_DIR/ingress.log" \
    || die "the rendered ingress config is invalid ($CONF, log: $LOG_DIR/ingress.log)"
}

running() { [[ -f $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

start() {
  load_env
  render
  if running; then
    nginx -s reload -p "$INGRESS_DIR" -c "$CONF" -e "$LOG_DIR/ingress.log"
    say "ingress already running: config reloaded"
    return
  fi
  nginx -p "$INGRESS_DIR" -c "$CONF" -e "$LOG_DIR/ingress.log" \
    || die "nginx did not start (log: $LOG_DIR/ingress.log)"
  local address
  address=$(listen_address)
  [[ $address == *:* ]] || address="127.0.0.1:$address"
  wait_tcp "${address%:*}" "${address##*:}" 15 "the ingress"
  say "started ingress on ${FLOTILLA_ROOT_URL:-http://127.0.0.1:8080} (log: $LOG_DIR/ingress.log)"
}

stop() {
  running || { rm -f "$PID_FILE"; return 0; }
  local pid
  pid=$(cat "$PID_FILE")
  kill -QUIT "$pid" 2>/dev/null || true  # graceful: open long polls finish
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -TERM "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  say "stopped ingress"
}

status() {
  if running; then
    printf '%-22s %-8s %s\n' ingress running "$(cat "$PID_FILE")"
  else
    printf '%-22s %-8s %s\n' ingress stopped -
  fi
}

case "${1:-}" in
  start) start ;;
  reload) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status|reload" ;;
esac
