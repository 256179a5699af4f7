#!/usr/bin/env bash
# docker.sh start|stop: the local Docker engine. Starts Debian's dockerd in the background
# when `docker info` fails, and stops only a dockerd that this script started.
source "$(dirname "$0")/common.sh"

start() {
  if docker info >/dev/null 2>&1; then say "Docker engine already running"; return 0; fi
  command -v dockerd >/dev/null || die "dockerd is not installed (run: make system)"
  nohup dockerd >>"$LOG_DIR/dockerd.log" 2>&1 &
  echo $! >"$RUN_DIR/dockerd.pid"
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && { say "Docker engine running"; return 0; }
    pid_alive dockerd || die "dockerd exited at start-up; see $LOG_DIR/dockerd.log"
    sleep 0.5
  done
  die "Docker engine did not answer within 60 s; see $LOG_DIR/dockerd.log"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid dockerd ;;
  *) die "usage: $0 start|stop" ;;
esac
