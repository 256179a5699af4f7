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
  # Every durable queue needs file handles when the broker recovers it at start; with the
  # usual 1,024 a broker holding more queues than that (tests leave throw-away pending
  # queues behind until they expire) stalls in recovery for good.
  # Debian's wrapper switches user with `su`, whose PAM limits put it back at 1,024, so as
  # root the broker is started as its user with setpriv, which keeps our raised limit.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  # `-detached` returns at once and the broker keeps running after this script exits.
  if [[ $(id -u) == 0 ]] && command -v setpriv >/dev/null && [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
    (cd /var/lib/rabbitmq && HOME=/var/lib/rabbitmq setpriv --reuid=rabbitmq --regid=rabbitmq \
      --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server -detached) >>"$LOG_DIR/rabbitmq.log" 2>&1 || true
  else
    rabbitmq-server -detached >>"$LOG_DIR/rabbitmq.log" 2>&1 || true
  fi
  for _ in $(seq 600); do
    amqp_ready && { say "RabbitMQ on 127.0.0.1:5672 (data in /var/lib/rabbitmq)"; return 0; }
    sleep 0.5
  done
  die "RabbitMQ did not start within 300 s; see $LOG_DIR/rabbitmq.log and /var/log/rabbitmq/"
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
