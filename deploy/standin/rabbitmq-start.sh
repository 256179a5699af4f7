#!/bin/sh
# The rabbitmq stand-in's entrypoint: the settings the official image takes from its
# environment (RABBITMQ_DEFAULT_USER/PASS), written as rabbitmq.conf, then Debian's
# rabbitmq-server in the foreground as the rabbitmq user. The node is
# rabbit@<hostname>: compose fixes the hostname, so the data in /var/lib/rabbitmq is kept.
set -eu
cat >/etc/rabbitmq/rabbitmq.conf <<CONF
listeners.tcp.default = 5672
loopback_users = none
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
log.console = true
log.console.level = warning
# the healthcheck stops after the protocol header: not worth a warning every 5 s
log.connection.level = error
log.file = false
CONF
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
# Straight to RabbitMQ's own script as the rabbitmq user: Debian's wrapper goes through
# `su`, which does not pass on docker stop's SIGTERM, so the broker was killed instead of
# stopping cleanly. RabbitMQ's script traps SIGTERM and stops the node.
cd /var/lib/rabbitmq
export HOME=/var/lib/rabbitmq
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server
