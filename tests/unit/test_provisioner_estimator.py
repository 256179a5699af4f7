"""The scaling estimate (services.provisioner.estimator) on a table of cases."""

from __future__ import annotations

import pytest

from services.provisioner.estimator import PoolLoad, estimate

BASE = {
    "pending": 0,
    "claimed": 0,
    "running": 0,
    "requested": 0,
    "stopping": 0,
    "min_capacity": 0,
    "max_capacity": 10,
}

# (case, load overrides, workers to launch)
CASES = [
    ("nothing to do", {}, 0),
    ("one per pending task", {"pending": 3}, 3),
    ("capped by max", {"pending": 20, "max_capacity": 4}, 4),
    ("min kept with no work", {"min_capacity": 2}, 2),
    ("min already met", {"min_capacity": 2, "running": 2}, 0),
    ("idle running capacity covers pending", {"pending": 3, "running": 5, "claimed": 2}, 0),
    ("busy running capacity does not", {"pending": 3, "running": 5, "claimed": 5}, 3),
    # upstream's double count: pending 20, requested 10 -> upstream launches 0
    ("requested counted once", {"pending": 20, "requested": 10, "max_capacity": 30}, 10),
    ("requested covers the burst", {"pending": 4, "requested": 4}, 0),
    ("requested counts toward max", {"pending": 20, "requested": 4, "max_capacity": 4}, 0),
    ("stopping counts toward max", {"pending": 5, "stopping": 3, "max_capacity": 4}, 1),
    ("scaling ratio halves", {"pending": 10, "scaling_ratio": 0.5}, 5),
    ("scaling ratio rounds up", {"pending": 3, "scaling_ratio": 0.5}, 2),
    ("zero ratio keeps only min", {"pending": 10, "scaling_ratio": 0.0, "min_capacity": 1}, 1),
    ("capacity per worker rounds up", {"pending": 5, "capacity_per_worker": 4}, 2),
    (
        "never past max in whole workers",
        {"pending": 9, "capacity_per_worker": 4, "max_capacity": 10},
        2,
    ),
    # closed-loop guard: the pool drains 5 tasks/s, a new worker needs 3 s to arrive
    (
        "drained before a new worker arrives",
        {"pending": 10, "running": 4, "claimed": 4, "drain_rate_per_s": 5, "boot_s": 3},
        0,
    ),
    (
        "only the remainder asks for workers",
        {"pending": 20, "running": 4, "claimed": 4, "drain_rate_per_s": 5, "boot_s": 3},
        5,
    ),
    ("cold pool scales at once", {"pending": 20, "drain_rate_per_s": 0, "boot_s": 60}, 10),
    ("guard never drops below min", {"min_capacity": 3, "drain_rate_per_s": 9, "boot_s": 9}, 3),
    ("over max already", {"pending": 50, "running": 12, "claimed": 12}, 0),
]


@pytest.mark.parametrize(
    ("overrides", "workers"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_estimate(overrides: dict[str, float], workers: int) -> None:
    result = estimate(PoolLoad(**{**BASE, **overrides}))  # type: ignore[arg-type]
    assert result.workers == workers
    assert result.capacity == workers * int(overrides.get("capacity_per_worker", 1))


def test_upstream_example_is_fixed() -> None:
    result = estimate(PoolLoad(**{**BASE, "pending": 20, "requested": 10, "max_capacity": 100}))
    assert (result.uncovered, result.target, result.total, result.workers) == (10, 20, 10, 10)


def test_never_exceeds_max_capacity() -> None:
    for pending in range(0, 40, 3):
        for running in range(0, 12):
            for per_worker in (1, 2, 3):
                load = PoolLoad(
                    **{
                        **BASE,
                        "pending": pending,
                        "running": running,
                        "claimed": running,
                        "capacity_per_worker": per_worker,
                    }
                )
                result = estimate(load)
                assert result.workers >= 0
                assert running + result.capacity <= max(running, 10)
