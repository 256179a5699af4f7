# Helpers for the deploy/local scripts. Sourced, never run.
# Everything a local run keeps lives under $FLOTILLA_HOME (default: <repo>/.flotilla).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FLOTILLA_HOME="${FLOTILLA_HOME:-$REPO_ROOT/.flotilla}"
LOG_DIR="$FLOTILLA_HOME/logs"
RUN_DIR="$FLOTILLA_HOME/run"
DATA_DIR="$FLOTILLA_HOME/data"
BIN_DIR="$FLOTILLA_HOME/bin"
mkdir -p "$LOG_DIR" "$RUN_DIR" "$DATA_DIR" "$BIN_DIR"

say() { printf '\033[1m[flotilla]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[flotilla] error:\033[0m %s\n' "$*" >&2; exit 1; }

# wait_tcp HOST PORT SECONDS WHAT: succeed once something accepts TCP connections there.
wait_tcp() {
  local host=$1 port=$2 seconds=$3 what=$4 waited=0
  until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
    if (( waited >= seconds * 10 )); then
      die "$what did not accept connections on $host:$port within ${seconds}s"
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

# pid_alive NAME: the process recorded in $RUN_DIR/NAME.pid is running.
pid_alive() {
  local file="$RUN_DIR/$1.pid"
  [[ -f $file ]] && kill -0 "$(cat "$file")" 2>/dev/null
}

# stop_pid NAME: TERM the recorded process, wait up to 15 s, then KILL it.
stop_pid() {
  local name=$1 file="$RUN_DIR/$1.pid" pid
  if ! pid_alive "$name"; then rm -f "$file"; return 0; fi
  pid=$(cat "$file")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$file"
  say "stopped $name"
}

# url_host_port URL: print "host port" of a mongodb:// or amqp:// URL (first host only).
url_host_port() {
  python3 - "$1" <<'PY'
import sys
from urllib.parse import urlsplit
url = urlsplit(sys.argv[1])
netloc = url.netloc.rsplit("@", 1)[-1].split(",")[0]
host, _, port = netloc.partition(":")
default = {"mongodb": 27017, "amqp": 5672, "amqps": 5671}.get(url.scheme, 0)
print(host or "127.0.0.1", port or default)
PY
}
