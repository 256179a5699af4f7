#!/usr/bin/env bash
# services.sh start|stop|status: run Flotilla's services as background processes with the
# settings in $FLOTILLA_HOME/env. Only services whose code exists are started.
source "$(dirname "$0")/common.sh"

SERVICES=(queue dependency_resolver claim_expiry provisioner docker_worker index purge_cache object)
# The web console (FLOTILLA_WEB_PORT, default 8185; the ingress routes `/` to it).
SERVICES+=(web)
# The process engine (services/process_worker) for the task queue flotilla/process.
SERVICES+=(process_worker)
PYTHON="$REPO_ROOT/.venv/bin/python"

present() { [[ -f $REPO_ROOT/services/$1/__main__.py ]]; }

# Command-line arguments per service (settings not in $FLOTILLA_HOME/env). The worker
# takes the root URL and root credentials from the TASKCLUSTER_* variables of the env file.
args_for() {
  case $1 in
    docker_worker)
      echo --task-queue-id=flotilla/local --worker-group=local --worker-id=local-1 \
        --cache-root="$FLOTILLA_HOME/worker/caches" --work-root="$FLOTILLA_HOME/worker/work" \
        --capacity="${FLOTILLA_WORKER_CAPACITY:-2}"
      ;;
    process_worker)  # tasks as native processes (generic-worker payloads)
      echo --task-queue-id=flotilla/process --worker-group=local --worker-id=process-1 \
        --cache-root="$FLOTILLA_HOME/process-worker/caches" \
        --work-root="$FLOTILLA_HOME/process-worker/work" --capacity=2
      ;;
  esac
}

start() {
  [[ -f $FLOTILLA_HOME/env ]] || die "$FLOTILLA_HOME/env is missing (run: make up)"
  [[ -x $PYTHON ]] || die "no virtualenv at .venv (run: make venv)"
  local started=0
  for svc in "${SERVICES[@]}"; do
    present "$svc" || continue
    if pid_alive "$svc"; then say "$svc already running"; started=1; continue; fi
    (
      set -a; source "$FLOTILLA_HOME/env"; set +a
      cd "$REPO_ROOT"
      # shellcheck disable=SC2046 # the arguments are words without spaces
      nohup "$PYTHON" -m "services.$svc" $(args_for "$svc") >>"$LOG_DIR/$svc.log" 2>&1 &
      echo $! >"$RUN_DIR/$svc.pid"
    )
    say "started $svc (log: $LOG_DIR/$svc.log)"
    started=1
  done
  if present queue; then
    (set -a; source "$FLOTILLA_HOME/env"; set +a
     wait_tcp 127.0.0.1 "$FLOTILLA_QUEUE_PORT" 30 "the queue service")
  fi
  ((started)) || say "no services to start yet"
}

stop() {
  # Reverse order: workers and the provisioner still reach the queue while they shut down
  # (a stopped worker reports its running tasks as worker-shutdown).
  local i
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do stop_pid "${SERVICES[i]}"; done
}

status() {
  printf '%-22s %-8s %s\n' SERVICE STATE PID
  for svc in "${SERVICES[@]}"; do
    present "$svc" || continue
    if pid_alive "$svc"; then
      printf '%-22s %-8s %s\n' "$svc" running "$(cat "$RUN_DIR/$svc.pid")"
    else
      printf '%-22s %-8s %s\n' "$svc" stopped -
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
