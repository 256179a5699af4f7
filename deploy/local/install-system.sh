#!/usr/bin/env bash
# Install the Debian packages Flotilla runs on: RabbitMQ, the Docker engine and a static
# busybox (for the offline test image). Go must already be on the machine (it builds FerretDB).
source "$(dirname "$0")/common.sh"

# debootstrap and docker-compose: the offline base image and the compose-file check
# (deploy/images, tests/integration/test_images.py). nginx: the ingress (deploy/ingress).
install_packages Flotilla rabbitmq-server docker.io busybox-static iproute2 ca-certificates \
  patch curl debootstrap docker-compose nginx
# Debian's Chromium: the web console's browser tests drive it headless through Playwright
# (pointed at /usr/bin/chromium; Playwright never downloads a browser here).
install_packages "the web console's browser tests" chromium
command -v go >/dev/null || die "Go is needed to build FerretDB and is not on PATH"
say "system packages present"
