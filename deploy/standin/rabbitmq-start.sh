#!/bin/sh
# The rabbitmq stand-in's entrypoint: the settings the official image takes from its
# environment (RABBITMQ_DEFAULT_USER/PASS), written as rabbitmq.conf, then Debian's
# rabbitmq-server in the foreground (its wrapper drops to the rabbitmq user). The node is
# rabbit@<hostname>: compose fixes the hostname, so the data in /var/lib/rabbitmq is kept.
set -eu
cat >/etc/rabbitmq/rabbitmq.conf <<CONF
listeners.tcp.default = 5672
loopback_users = none
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
log.console = true
log.console.level = warning
log.file = false
CONF
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
exec /usr/sbin/rabbitmq-server
