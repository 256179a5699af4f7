#!/usr/bin/env bash
# Install what `make bench` needs besides Flotilla itself: the peer it is compared with
# (Celery 5.x from PyPI, on the same RabbitMQ, with Debian's Redis as its durable result
# backend) and matplotlib for the charts. Safe to run again: it installs only what is missing.
source "$(dirname "$0")/../deploy/local/common.sh"

VENV="$REPO_ROOT/.venv"
STAMP="$VENV/.bench-installed"

# Debian packages, the way deploy/local/install-system.sh installs them. bench_celery starts
# its own redis-server on a free port, so the package's own service is never wanted.
install_packages "the benchmark peer" redis-server
command -v redis-server >/dev/null || die "redis-server is not on PATH after installing it"

# Python: the optional `bench` extra (celery[redis], matplotlib). The stamp skips pip while
# pyproject.toml is unchanged, so repeated `make bench` runs start at once.
[[ -x $VENV/bin/python ]] || die "$VENV is missing (run: make venv)"
if [[ ! -f $STAMP || $REPO_ROOT/pyproject.toml -nt $STAMP ]]; then
  say "installing the bench extra (celery[redis], matplotlib) into .venv"
  if ! (cd "$REPO_ROOT" && "$VENV/bin/python" -m pip install --disable-pip-version-check \
      -e '.[test,bench]') >"$LOG_DIR/pip-bench.log" 2>&1; then
    tail -30 "$LOG_DIR/pip-bench.log"
    die "pip install failed (full log: $LOG_DIR/pip-bench.log)"
  fi
  touch "$STAMP"
fi
"$VENV/bin/python" -c 'import celery, redis, matplotlib' 2>/dev/null \
  || die "celery, redis or matplotlib does not import in $VENV (see $LOG_DIR/pip-bench.log)"
say "benchmark peer present: $(redis-server --version | cut -d' ' -f1-3), celery $("$VENV/bin/python" -c 'import celery; print(celery.__version__)')"
