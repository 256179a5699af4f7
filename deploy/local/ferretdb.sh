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

PATCHED="$FLOTILLA_HOME/build/ferretdb-patched"
PATCHES=("$SRC"/*.patch)
# Patches to FerretDB's SQLite driver (modernc.org/sqlite), applied the same way.
DRIVER_PATCHES=("$SRC"/modernc-sqlite/*.patch)

# FerretDB 1.24's SQLite backend pushes only a filter of exactly {_id: <value>} down to
# SQL, and spells the column differently from the unique index it builds on _id, so even
# that scans the whole table (measured: ~2-4 ms per 1,000 documents for a find by _id).
# deploy/ferretdb/sqlite-id-pushdown.patch spells _id as the index does and pushes an _id
# equality or `$in` down whatever else the filter holds (FerretDB filters every fetched
# document again in Go, so this only narrows what is fetched). Every lookup, conditional
# update and delete by _id becomes an index search. The patch is applied to a copy of
# the module, used through a `replace` in a scratch go.mod (`-modfile`), so the repo's
# go.mod and the module cache stay pristine; `patch` fails loudly if upstream changes.
# deploy/ferretdb/update-many-one-transaction.patch writes all the documents one update
# command changes in one SQLite transaction instead of one each (an update_many of 500
# task documents spent about half its time committing).
# deploy/ferretdb/sqlite-index-pushdown.patch (applied after the _id one) also pushes an
# equality on a string field that begins an index, `_id` string ranges and a sort on _id
# down to SQLite, so listTaskGroup reads its group through the index, not every task.
# deploy/ferretdb/no-resource-tracking.patch and modernc-sqlite/statement-cache.patch
# cut FerretDB's CPU per command (deploy/ferretdb/README.md has the measurements).
patch_module() {
  local module=$1 name=$2 source patch_file
  shift 2
  source=$(cd "$SRC" && go mod download -json "$module" \
    | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -d $source ]] || die "cannot locate the $module module source"
  cp -r "$source" "$PATCHED/$name" && chmod -R u+w "$PATCHED/$name"
  for patch_file in "$@"; do
    patch -d "$PATCHED/$name" -p1 --forward --quiet <"$patch_file"
  done
  (cd "$SRC" && go mod edit -modfile "$PATCHED/go.mod" -replace "$module=$PATCHED/$name")
}

patch_modules() {
  rm -rf "$PATCHED" && mkdir -p "$PATCHED"
  cp "$SRC/go.mod" "$SRC/go.sum" "$PATCHED/"
  patch_module github.com/FerretDB/FerretDB module "${PATCHES[@]}"
  patch_module modernc.org/sqlite sqlite-driver "${DRIVER_PATCHES[@]}"
}

build() {
  # Rebuild when the source, the patch or this script is newer than the binary.
  local newest
  newest=$(ls -t "$SRC"/*.go "$SRC/go.sum" "${PATCHES[@]}" "${DRIVER_PATCHES[@]}" \
    "${BASH_SOURCE[0]}" | head -1)
  if [[ -x $BIN && $BIN -nt $newest ]]; then return 0; fi
  say "building FerretDB (first time takes a minute or two)"
  (patch_modules && cd "$SRC" && go build -buildvcs=false -modfile "$PATCHED/go.mod" \
    -o "$BIN" .) >"$LOG_DIR/ferretdb-build.log" 2>&1 \
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
  # FLOTILLA_FERRETDB_ARGS adds flags, e.g. "-pprof 127.0.0.1:6060" for profiling.
  # shellcheck disable=SC2086
  nohup "$BIN" -listen "$LISTEN" -data-dir "$DATA" ${FLOTILLA_FERRETDB_ARGS:-} >>"$LOG_DIR/ferretdb.log" 2>&1 &
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
