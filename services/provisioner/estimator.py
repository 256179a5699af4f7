"""How much capacity a worker pool should launch now: a pure function, no I/O.

Inputs are capacities (a worker of capacity 4 runs 4 tasks at once), not worker counts:

- `pending`, `claimed`: the queue's `taskQueueCounts` for the pool.
- `running`: capacity of workers that are up (registered / process started).
- `requested`: capacity launched but not yet up (booting instances, spot requests).
- `stopping`: capacity being shut down (still costs money, takes no new work).
- `min_capacity`, `max_capacity`, `scaling_ratio` (capacity per uncovered pending task,
  0-1, worker-manager's meaning), `capacity_per_worker`.
- `drain_rate_per_s` (tasks resolved per second in the pool lately) and `boot_s` (how
  long a new worker takes to arrive): the closed-loop guard below.

The estimate, step by step:

    idle       = max(0, running - claimed)           only running workers can be idle
    uncovered  = max(0, pending - idle - requested)  booting workers cover pending work
    drained    = drain_rate_per_s * boot_s           what the current workers finish
                                                     before a new worker could arrive
    needed     = uncovered - drained, then x scaling_ratio, rounded up
    total      = running + requested + stopping
    target     = clamp(total + needed, min_capacity, max_capacity)
    launch     = max(0, target - total), in whole workers, never past max_capacity

Upstream's estimator (reference 5.1) subtracts requested capacity twice: it counts it as
idle capacity (existing includes requested) and subtracts it again at the end, so with
20 pending, 10 requested and nothing running it launches 0 instead of 10. Here requested
capacity appears once on each side: it covers pending work, and it counts toward the
total that min/max bound.

Closed-loop guard (beyond; upstream issue 8783: bursts launch workers that arrive after
the queue drained, then idle until they shut down). Two parts:
1. Requested-but-not-yet-up capacity covers pending work (above), so repeated ticks
   during a burst never stack launches for the same tasks.
2. Pending work the pool is already draining does not ask for new workers: with the
   observed drain rate r and a boot time b, about r x b of the pending tasks will be
   gone before a new worker can claim anything, so only the remainder counts. The rate
   is measured (resolutions per second over a recent window), so the loop is closed on
   what the pool actually achieves: a pool that finishes 5 tasks/s with 30 s boots
   needs no new worker for a backlog of 100 short tasks, while a pool whose tasks take
   an hour (rate ~0) scales for every one. A cold pool (rate 0) scales at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolLoad:
    pending: int
    claimed: int
    running: int  # capacities, not worker counts
    requested: int
    stopping: int
    min_capacity: int
    max_capacity: int
    scaling_ratio: float = 1.0
    capacity_per_worker: int = 1
    drain_rate_per_s: float = 0.0
    boot_s: float = 0.0


@dataclass(frozen=True)
class Estimate:
    workers: int  # workers to launch now
    capacity: int  # = workers x capacity_per_worker
    uncovered: int  # pending tasks no running-idle or booting capacity covers
    expected_drained: float  # pending tasks the pool finishes before a new worker arrives
    target: int  # the capacity the pool should have
    total: int  # running + requested + stopping


def estimate(load: PoolLoad) -> Estimate:
    per_worker = max(1, load.capacity_per_worker)
    idle = max(0, load.running - load.claimed)
    uncovered = max(0, load.pending - idle - load.requested)
    drained = max(0.0, load.drain_rate_per_s) * max(0.0, load.boot_s)
    needed = math.ceil(max(0.0, uncovered - drained) * max(0.0, load.scaling_ratio) - 1e-9)
    total = load.running + load.requested + load.stopping
    target = min(load.max_capacity, max(load.min_capacity, total + needed))
    missing = max(0, target - total)
    room = max(0, load.max_capacity - total)
    # Whole workers: round up to cover what is missing, but never past max_capacity.
    workers = min(math.ceil(missing / per_worker), room // per_worker)
    return Estimate(
        workers=workers,
        capacity=workers * per_worker,
        uncovered=uncovered,
        expected_drained=drained,
        target=target,
        total=total,
    )
