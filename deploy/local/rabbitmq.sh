#!/usr/bin/env bash
# rabbitmq.sh start|stop: Debian's RabbitMQ, started detached on 127.0.0.1:5672.
# When FLOTILLA_AMQP_URL is set, that broker is used instead and only checked.
source "$(dirname "$0")/common.sh"

amqp_ready() {
  # Port 5672 accepts TCP before the broker finishes booting, so ask RabbitMQ itself.
  rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1
}

start() {
  if [[ -n ${FLOTILLA_AMQP_URL:-} ]]; then
    read -r host port < <(url_host_port "$FLOTILLA_AMQP_URL")
    wait_tcp "$host" "$port" 30 "RabbitMQ at $FLOTILLA_AMQP_URL"
    say "using RabbitMQ at $FLOTILLA_AMQP_URL (FLOTILLA_AMQP_URL is set; not started)"
    return 0
  fi
  command -v rabbitmq-server >/dev/null || die "rabbitmq-server is not installed (run: make system)"
  if amqp_ready; then say "RabbitMQ already running on 127.0.0.1:5672"; return 0; fi
  # `-detached` returns at once and the broker keeps running after this script exits.
  rabbitmq-server -detached >>"$LOG_DIR/rabbitmq.log" 2>&1 || true
  for _ in $(seq 120); do
    amqp_ready && { say "RabbitMQ on 127.0.0.1:5672 (data in /var/lib/rabbitmq)"; return 0; }
    sleep 0.5
  done
  die "RabbitMQ did not start within 60 s; see $LOG_DIR/rabbitmq.log and /var/log/rabbitmq/"
}

stop() {
  [[ -n ${FLOTILLA_AMQP_URL:-} ]] && return 0
  if amqp_ready; then rabbitmqctl -q stop >/dev/null 2>&1 || true; say "stopped RabbitMQ"; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
