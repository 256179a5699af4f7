#!/usr/bin/env bash
# build.sh [SERVICE...]: build Flotilla's container images, one per service, without any
# registry if need be. With no arguments every service is built.
#
#   1. Base image: $BASE_IMAGE (default python:3.11-slim) when it is present or can be
#      pulled; otherwise flotilla/python-base:bookworm, made here from a Debian bookworm
#      rootfs (`debootstrap --variant=minbase` from the host's apt mirror, plus Debian's
#      python3, python3-venv and ca-certificates) and `docker import`ed. The rootfs tarball
#      is kept in .flotilla/images/ so a deleted image is re-imported, not re-bootstrapped.
#   2. Wheels: the runtime dependencies of pyproject.toml at the versions installed in .venv,
#      built on the host (`pip wheel`) into .flotilla/images/wheels/<hash>/; the image
#      installs them with `pip install --no-index`, so `docker build` needs no network.
#   3. deploy/images/Dockerfile, one target per service, tagged flotilla/<service>:latest
#      (FLOTILLA_IMAGE_TAG overrides the tag).
#   4. With no arguments (or `standins`), also the stand-ins for compose's server images
#      (deploy/standin/): flotilla/mongo-standin (our FerretDB build) and
#      flotilla/rabbitmq-standin (Debian's rabbitmq-server), flotilla/ingress-standin
#      (Debian's nginx, for an nginx:stable ingress), on the same base.
source "$(dirname "$0")/../local/common.sh"

SERVICES=(queue dependency-resolver claim-expiry provisioner docker-worker index purge-cache object)
SERVICES+=(web)
BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}"
OFFLINE_BASE="flotilla/python-base:bookworm"
TAG="${FLOTILLA_IMAGE_TAG:-latest}"
CACHE="$FLOTILLA_HOME/images"
VPY="$REPO_ROOT/.venv/bin/python"
mkdir -p "$CACHE"

# The host's Debian mirror: FLOTILLA_DEBIAN_MIRROR, else the first bookworm source of apt.
debian_mirror() {
  if [[ -n ${FLOTILLA_DEBIAN_MIRROR:-} ]]; then echo "$FLOTILLA_DEBIAN_MIRROR"; return; fi
  python3 - <<'PY'
import glob, re
found = None
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
        if "deb" in fields.get("Types", "").split() and "bookworm" in fields.get("Suites", "").split():
            found = found or fields.get("URIs", "").split()[0]
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
        if m:
            found = found or m.group(1)
print(found or "http://deb.debian.org/debian")
PY
}

build_offline_base() {
  if docker image inspect "$OFFLINE_BASE" >/dev/null 2>&1; then
    say "$OFFLINE_BASE present"; return 0
  fi
  local tarball="$CACHE/python-base-bookworm.tar"
  if [[ ! -f $tarball ]]; then
    command -v debootstrap >/dev/null || die "debootstrap is not installed (run: make system)"
    [[ $(id -u) == 0 ]] || die "debootstrap needs root to build $OFFLINE_BASE"
    local mirror root
    mirror=$(debian_mirror)
    root="$CACHE/rootfs.tmp"
    rm -rf "$root"
    say "bootstrapping a Debian bookworm rootfs from $mirror (first time: a few minutes)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$root" "$mirror" >"$LOG_DIR/debootstrap.log" 2>&1 \
      || die "debootstrap failed, see $LOG_DIR/debootstrap.log"
    # Slim it: no package caches, lists, docs, man pages or translations.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
      "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
      "$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
    printf 'deb %s bookworm main\n' "$mirror" >"$root/etc/apt/sources.list"
    tar --numeric-owner -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  say "importing $OFFLINE_BASE from $tarball"
  docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' -c 'LABEL org.flotilla.offline=true' \
    "$tarball" "$OFFLINE_BASE" >/dev/null
  say "built $OFFLINE_BASE offline"
}

# Pick the base: the requested one if present or pullable, else our own.
choose_base() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then echo "$BASE_IMAGE"; return; fi
  if [[ $BASE_IMAGE != "$OFFLINE_BASE" ]] \
    && timeout 120 docker pull -q "$BASE_IMAGE" >>"$LOG_DIR/images-build.log" 2>&1; then
    echo "$BASE_IMAGE"; return
  fi
  say "cannot pull $BASE_IMAGE; using $OFFLINE_BASE" >&2
  build_offline_base >&2
  echo "$OFFLINE_BASE"
}

# The runtime dependencies (pyproject.toml) pinned to the versions in .venv, as wheels for
# Python 3.11 on Linux; cached by the hash of that pinned list. Prints the wheel directory.
build_wheels() {
  [[ -x $VPY ]] || die "no virtualenv at .venv (run: make venv)"
  local reqs key dir
  reqs=$("$VPY" - "$REPO_ROOT/pyproject.toml" <<'PY'
import sys, tomllib
from importlib.metadata import distributions
from packaging.requirements import Requirement
wanted = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
installed = {d.metadata["Name"].lower().replace("_", "-"): d.version for d in distributions()}
for spec in wanted:
    req = Requirement(spec)
    version = installed.get(req.name.lower().replace("_", "-"))
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    print(f"{req.name}{extras}=={version}" if version else spec)
PY
  ) || die "cannot read the dependencies of pyproject.toml"
  # Transitive dependencies follow the versions in .venv too (constraints).
  local constraints
  constraints=$("$VPY" -m pip freeze --exclude-editable --disable-pip-version-check | grep '==')
  key=$(printf '%s\n--\n%s\n' "$reqs" "$constraints" | sha256sum | cut -c1-16)
  dir="$CACHE/wheels/$key"
  if [[ ! -f $dir/.complete ]]; then
    say "building wheels for the images (once per dependency set) into $dir" >&2
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    printf '%s\n' "$reqs" >"$dir.tmp/requirements.txt"
    printf '%s\n' "$constraints" >"$dir.tmp/constraints.txt"
    "$VPY" -m pip wheel --disable-pip-version-check -q --wheel-dir "$dir.tmp" \
      -r "$dir.tmp/requirements.txt" -c "$dir.tmp/constraints.txt" \
      >"$LOG_DIR/images-wheels.log" 2>&1 \
      || die "pip wheel failed, see $LOG_DIR/images-wheels.log"
    touch "$dir.tmp/.complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

# The build context CTX: wheels, the code (services, shared, cli, flotilla_worker) and the
# healthcheck.
# Made afresh each time (small); unchanged files hit the builder's cache.
prepare_context() {
  local wheels=$1 ctx=$2
  mkdir -p "$ctx/app" "$ctx/wheels"
  cp -l "$wheels"/*.whl "$ctx/wheels/" 2>/dev/null || cp "$wheels"/*.whl "$ctx/wheels/"
  tar -C "$REPO_ROOT" --exclude=__pycache__ --exclude='*.pyc' -c services shared cli flotilla_worker \
    | tar -C "$ctx/app" -x
  cp "$REPO_ROOT/deploy/images/healthcheck.py" "$ctx/healthcheck.py"
}

# The classic builder when BuildKit's client (buildx) is missing, as with Debian's docker.io.
docker_build() {
  if docker buildx version >/dev/null 2>&1; then
    docker build "$@"
  else
    DOCKER_BUILDKIT=0 docker build "$@"
  fi
}

# Stand-ins for mongo:7, rabbitmq:3-management and nginx:stable (deploy/standin/Dockerfile)
# for hosts that cannot pull them; deploy/compose.standin.yaml swaps them in. The FerretDB
# binary is the one deploy/local/ferretdb.sh builds; rabbitmq-server and nginx come from the
# Debian mirror (the build uses the host's network for apt, as debootstrap does; no registry).
STANDINS=(mongo-standin rabbitmq-standin ingress-standin)
build_standins() {
  local base=$1 ctx target
  "$REPO_ROOT/deploy/local/ferretdb.sh" build
  ctx=$(mktemp -d "$CACHE/standin.XXXXXX")
  cp "$BIN_DIR/flotilla-ferretdb" "$REPO_ROOT/deploy/standin/healthcheck.py" \
    "$REPO_ROOT/deploy/standin/rabbitmq-start.sh" "$ctx/"
  for target in "${STANDINS[@]}"; do
    say "building flotilla/$target:$TAG (base $base)"
    docker_build --network host -f "$REPO_ROOT/deploy/standin/Dockerfile" \
      --build-arg "BASE_IMAGE=$base" --target "$target" -t "flotilla/$target:$TAG" "$ctx" \
      >>"$LOG_DIR/images-build.log" 2>&1 \
      || { rm -rf "$ctx"; die "building flotilla/$target failed, see $LOG_DIR/images-build.log"; }
  done
  rm -rf "$ctx"
}

main() {
  local targets=("$@") base wheels svc
  ((${#targets[@]})) || targets=("${SERVICES[@]}")
  for svc in "${targets[@]}"; do
    [[ " ${SERVICES[*]} " == *" $svc "* ]] || die "unknown service $svc (one of: ${SERVICES[*]})"
  done
  docker info >/dev/null 2>&1 || die "the Docker engine does not answer (run: make infra)"
  : >"$LOG_DIR/images-build.log"
  base=$(choose_base)
  wheels=$(build_wheels)
  CONTEXT_DIR=$(mktemp -d "$CACHE/context.XXXXXX")
  trap 'rm -rf "$CONTEXT_DIR"' EXIT
  prepare_context "$wheels" "$CONTEXT_DIR"
  for svc in "${targets[@]}"; do
    say "building flotilla/$svc:$TAG (base $base)"
    docker_build -f "$REPO_ROOT/deploy/images/Dockerfile" --build-arg "BASE_IMAGE=$base" \
      --target "$svc" -t "flotilla/$svc:$TAG" "$CONTEXT_DIR" >>"$LOG_DIR/images-build.log" 2>&1 \
      || die "building flotilla/$svc failed, see $LOG_DIR/images-build.log"
  done
  say "images: $(printf 'flotilla/%s:'"$TAG"' ' "${targets[@]}")"
  if (($# == 0)); then build_standins "$base"; fi
}

# One build at a time (make images and the image test may overlap): they share the cache.
exec 9>"$CACHE/.lock"
flock 9

case "${1:-}" in
  base) build_offline_base ;;
  wheels) build_wheels ;;
  standins) build_standins "$(choose_base)" ;;
  *) main "$@" ;;
esac
