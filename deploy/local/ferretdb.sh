#!/usr/bin/env bash
# ferretdb.sh start|stop: the MongoDB-protocol server for local runs and tests.
# Builds deploy/ferretdb (FerretDB embedded, SQLite storage) with Go and serves it on
# 127.0.0.1:27017. When FLOTILLA_MONGO_URL is set, that server is used instead: nothing is
# built or started, it is only checked.
source "$(dirname "$0")/common.sh"

SRC="$REPO_ROOT/deploy/ferretdb"
BIN="$BIN_DIR/flotilla-ferretdb"
LISTEN="${FLOTILLA_FERRETDB_LISTEN:-127.0.0.1:27017}"
DATA="${FLOTILLA_FERRETDB_DATA:-$DATA_DIR/ferretdb}"

build() {
  # Rebuild when the source is newer than the binary; `go build` itself is cached.
  if [[ -x $BIN && $BIN -nt $SRC/main.go && $BIN -nt $SRC/go.sum ]]; then return 0; fi
  say "building FerretDB (first time takes a minute or two)"
  (cd "$SRC" && go build -buildvcs=false -o "$BIN" .) >"$LOG_DIR/ferretdb-build.log" 2>&1 \
    || die "FerretDB build failed, see $LOG_DIR/ferretdb-build.log"
}

start() {
  if [[ -n ${FLOTILLA_MONGO_URL:-} ]]; then
    read -r host port < <(url_host_port "$FLOTILLA_MONGO_URL")
    wait_tcp "$host" "$port" 30 "MongoDB at $FLOTILLA_MONGO_URL"
    say "using MongoDB at $FLOTILLA_MONGO_URL (FLOTILLA_MONGO_URL is set; FerretDB not started)"
    return 0
  fi
  build
  if pid_alive ferretdb; then say "FerretDB already running on $LISTEN"; return 0; fi
  if (exec 3<>"/dev/tcp/${LISTEN%:*}/${LISTEN##*:}") 2>/dev/null; then
    die "something else already listens on $LISTEN; stop it or set FLOTILLA_MONGO_URL to use it"
  fi
  mkdir -p "$DATA"
  nohup "$BIN" -listen "$LISTEN" -data-dir "$DATA" >>"$LOG_DIR/ferretdb.log" 2>&1 &
  echo $! >"$RUN_DIR/ferretdb.pid"
  wait_tcp "${LISTEN%:*}" "${LISTEN##*:}" 60 "FerretDB"
  say "FerretDB on $LISTEN (data in $DATA)"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid ferretdb ;;
  build) build ;;
  *) die "usage: $0 start|stop|build" ;;
esac
