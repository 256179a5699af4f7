"""`python -m bench` (`make bench`): run every benchmark; results go to bench/results/.

`python -m bench NAME [ARGS...]` runs only that one (auth, queue, graphs, artifacts, worker,
provisioner),
passing ARGS to it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import (
    bench_artifacts,
    bench_auth,
    bench_graphs,
    bench_provisioner,
    bench_queue,
    bench_worker,
)

BENCHMARKS: dict[str, Callable[[], None]] = {
    "auth": bench_auth.main,
    "queue": bench_queue.main,
    "graphs": bench_graphs.main,
    "artifacts": bench_artifacts.main,
    "worker": bench_worker.main,
    "provisioner": bench_provisioner.main,
}

if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        name, rest = sys.argv[1], sys.argv[2:]
        if name not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        sys.argv = [f"{sys.argv[0]} {name}", *rest]  # each benchmark parses its own arguments
        BENCHMARKS[name]()
    else:
        for run in BENCHMARKS.values():
            sys.argv = sys.argv[:1]
            run()
