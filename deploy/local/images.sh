#!/usr/bin/env bash
# images.sh: build the container images tests and local runs need, without any registry.
# flotilla/busybox:latest is a rootfs holding Debian's static busybox with every applet
# linked, imported with `docker import`.
source "$(dirname "$0")/common.sh"

IMAGE=flotilla/busybox:latest
BUSYBOX=/bin/busybox

if docker image inspect "$IMAGE" >/dev/null 2>&1; then say "$IMAGE present"; exit 0; fi
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found (install busybox-static: make system)"
file_out=$(LC_ALL=C "$BUSYBOX" 2>&1 | head -1 || true)
[[ $file_out == BusyBox* ]] || die "$BUSYBOX does not look like busybox"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev}
chmod 1777 "$root/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
tar -C "$root" -c . | docker import \
  -c 'ENV PATH=/bin' -c 'CMD ["sh"]' -c 'LABEL org.flotilla.offline=true' - "$IMAGE" >/dev/null
say "built $IMAGE offline from $BUSYBOX"
