"""Keeping a claim, and noticing when it is lost.

**Reclaim** (upstream's rule, reference §2.2): at `(takenUntil - now) / divisor` call
`reclaimTask` with the run's current credentials and swap in the fresh ones it returns.
A 409 means the run is no longer ours (cancelled, deadline, resolved elsewhere): stop,
report nothing. Any other error: stop with `internal-error`.

**Cancellation within a second** (beyond upstream, which learns of a cancel only at the
next reclaim, ~10 min later): each running task reads `queue.status(taskId)` once per
`status_probe_interval_s` (1 s). When the run is not `running` any more, or another worker
holds it, the work is stopped and nothing is reported. Why a status probe rather than an
event subscription:
- the worker speaks only the queue's HTTP API (no AMQP credentials or bindings to manage,
  nothing to re-establish after a broker restart, no missed message after a reconnect:
  each probe reads the durable state, so a lost probe only delays by a second);
- `status` is one indexed read and costs one small request per running task per second;
- it sees every way a run can end without us (cancelTask, claim expiry, deadline).
The probe uses the worker's own credentials: `status` needs `queue:status:<taskId>`, which
a claim's temporary credentials (limited to the task's scopes) may lack. A failed probe is
ignored (the next one, or the reclaim, catches up); the first failure is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from taskcluster.exceptions import TaskclusterRestFailure

from flotilla_worker.results import Ending
from flotilla_worker.timeutil import parse_ts, utcnow

log = logging.getLogger(__name__)

MIN_RECLAIM_DELAY_S = 1.0

OnLost = Callable[[Ending, str], None]
QueueFactory = Callable[[dict[str, str]], Any]  # credentials → taskcluster.aio.Queue


class RunClaim:
    """One claimed run: its task, and a queue client with the latest credentials."""

    def __init__(self, claim: dict[str, Any], queue_for: QueueFactory) -> None:
        self.task_id: str = claim["status"]["taskId"]
        self.run_id: int = int(claim["runId"])
        self.task: dict[str, Any] = claim["task"]
        self.worker_group: str = claim["workerGroup"]
        self.worker_id: str = claim["workerId"]
        self._queue_for = queue_for
        self.taken_until: str = claim["takenUntil"]
        self.credentials: dict[str, str] = claim["credentials"]
        self.queue = queue_for(claim["credentials"])

    @property
    def ids(self) -> dict[str, Any]:
        return {"taskId": self.task_id, "runId": self.run_id}

    def renew(self, reclaimed: dict[str, Any]) -> None:
        self.taken_until = reclaimed["takenUntil"]
        self.credentials = reclaimed["credentials"]
        self.queue = self._queue_for(reclaimed["credentials"])


def reclaim_delay_s(taken_until: datetime, now: datetime, divisor: float) -> float:
    return max((taken_until - now).total_seconds() / divisor, MIN_RECLAIM_DELAY_S)


def run_is_ours(status: dict[str, Any], run_id: int, worker_group: str, worker_id: str) -> bool:
    runs = status.get("runs", [])
    if run_id >= len(runs):
        return False
    run = runs[run_id]
    return (
        run.get("state") == "running"
        and run.get("workerGroup") == worker_group
        and run.get("workerId") == worker_id
    )


async def reclaim_loop(claim: RunClaim, divisor: float, on_lost: OnLost) -> None:
    while True:
        taken_until = parse_ts(claim.taken_until)
        await asyncio.sleep(reclaim_delay_s(taken_until, utcnow(), divisor))
        try:
            reclaimed = await claim.queue.reclaimTask(claim.task_id, str(claim.run_id))
        except TaskclusterRestFailure as exc:
            if exc.status_code == 409:
                on_lost(Ending.CANCELLED, "reclaimTask answered 409")
            else:
                on_lost(Ending.INTERNAL_ERROR, f"reclaimTask failed: {exc}")
            return
        except Exception as exc:  # the client already retried transient errors
            on_lost(Ending.INTERNAL_ERROR, f"reclaimTask failed: {exc!r}")
            return
        claim.renew(reclaimed)
        log.info("reclaimed", extra={**claim.ids, "takenUntil": claim.taken_until})


async def probe_loop(claim: RunClaim, queue: Any, interval_s: float, on_lost: OnLost) -> None:
    """Read the run's state every `interval_s` with `queue` (the worker's own client)."""
    failures = 0
    while True:
        await asyncio.sleep(interval_s)
        try:
            status = (await queue.status(claim.task_id))["status"]
        except Exception as exc:
            failures += 1
            level = logging.WARNING if failures == 1 else logging.DEBUG
            log.log(level, "status probe failed", extra={**claim.ids, "error": str(exc)[:300]})
            continue
        if not run_is_ours(status, claim.run_id, claim.worker_group, claim.worker_id):
            on_lost(Ending.CANCELLED, f"the run is no longer running here ({status['state']})")
            return
