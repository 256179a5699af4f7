"""`python -m bench` (`make bench`): run every benchmark; results go to bench/results/."""

from __future__ import annotations

from bench import bench_auth

BENCHMARKS = [bench_auth.main]

if __name__ == "__main__":
    for run in BENCHMARKS:
        run()
