#!/usr/bin/env bash
# Install the Debian packages Flotilla runs on: RabbitMQ, the Docker engine and a static
# busybox (for the offline test image). Go must already be on the machine (it builds FerretDB).
source "$(dirname "$0")/common.sh"

# debootstrap and docker-compose: the offline base image and the compose-file check
# (deploy/images, tests/integration/test_images.py).
packages=(rabbitmq-server docker.io busybox-static iproute2 ca-certificates patch curl
  debootstrap docker-compose)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || die "need root to install ${missing[*]} (run as root or install them yourself)"
  command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$LOG_DIR/apt-update.log" 2>&1 || die "apt-get update failed, see $LOG_DIR/apt-update.log"
  # The rabbitmq-server package tries to start the broker through init scripts that do not
  # exist here; policy-rc.d stops that so we start it ourselves, detached, later.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$LOG_DIR/apt-install.log" 2>&1; then
    rm -f /usr/sbin/policy-rc.d
    die "apt-get install failed, see $LOG_DIR/apt-install.log"
  fi
  rm -f /usr/sbin/policy-rc.d
fi
command -v go >/dev/null || die "Go is needed to build FerretDB and is not on PATH"
say "system packages present"
