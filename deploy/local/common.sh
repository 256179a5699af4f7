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

# Install the Debian packages named ($1: what for, the rest: packages) that are missing.
# Package scripts must not start services (RabbitMQ, Redis): we start our own, detached,
# so policy-rc.d refuses them for the duration.
install_packages() {
  local why=$1 pkg
  shift
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "need root to install ${missing[*]} (run as root or install them yourself)"
  command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
  say "installing Debian packages for $why: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$LOG_DIR/apt-update.log" 2>&1 || die "apt-get update failed, see $LOG_DIR/apt-update.log"
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$LOG_DIR/apt-install.log" 2>&1; then
    rm -f /usr/sbin/policy-rc.d
    die "apt-get install failed, see $LOG_DIR/apt-install.log"
  fi
  rm -f /usr/sbin/policy-rc.d
}
