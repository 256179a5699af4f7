"""`python -m bench` (`make bench`): the suite (bench/suite.py): workloads W1-W6 next to the
machine's ceiling and Celery; results in bench/results/latest.json and PNG charts.

`python -m bench NAME [ARGS...]` runs one benchmark on its own (auth, queue, graphs,
artifacts, worker, provisioner, celery), passing ARGS to it; `python -m bench suite
[--profile quick|standard|full] [--only w1,w3]` is the suite with options.
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
    bench_web,
    bench_worker,
    suite,
)


def _celery() -> None:
    from bench import bench_celery  # Celery and Redis's client are bench extras

    bench_celery.main()


BENCHMARKS: dict[str, Callable[[], None]] = {
    "suite": suite.main,
    "auth": bench_auth.main,
    "queue": bench_queue.main,
    "graphs": bench_graphs.main,
    "artifacts": bench_artifacts.main,
    "worker": bench_worker.main,
    "provisioner": bench_provisioner.main,
    "celery": _celery,
    "web": bench_web.main,
}

if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        name, rest = sys.argv[1], sys.argv[2:]
        if name not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        sys.argv = [f"{sys.argv[0]} {name}", *rest]  # each benchmark parses its own arguments
        BENCHMARKS[name]()
    else:
        suite.main()
