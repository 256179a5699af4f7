"""lifecycle.queueInactivityTimeout (reference 5.4): a registered worker that has not called
the queue for that long is a zombie and is terminated. Pure; the loop gathers the inputs.

"Called the queue" is the queue's own record of the worker: `lastDateActive` in its
worker listing, stamped by claimWork, claimTask and reclaimTask. A worker that never
called the queue counts from when it registered (or, for workers started already
registered, when it was launched), so a worker that hangs before its first claim goes too.

Two allowances keep healthy workers alive:
- `slack_s`: the stamp is coarse. The queue writes it at most once per
  FLOTILLA_WORKER_ACTIVITY_RESOLUTION per worker and replica, and an idle worker sits in a
  claimWork long poll (FLOTILLA_CLAIM_WORK_WAIT) between calls; the loop passes the sum.
- A worker that holds a claimed run is spared (upstream terminates it anyway). The claim
  is proof of recent activity: the queue keeps a run claimed only while the worker
  claims or reclaims it within the claim timeout. So a healthy worker in a long task is
  never killed mid-task, even when queueInactivityTimeout is shorter than its reclaim
  interval; a hung worker loses its claim at `takenUntil` (claim-expiry retries the task)
  and is terminated on the next tick. The price is at most one claim timeout of a hung
  worker's capacity.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.provisioner.pools import Lifecycle
from services.provisioner.store import RUNNING


def last_activity(worker: Mapping[str, Any], queue_last_active: datetime | None) -> datetime:
    """The later of the queue's stamp and the worker's registration (or launch)."""
    since: datetime = worker.get("registeredAt") or worker["created"]
    if queue_last_active is not None and queue_last_active > since:
        return queue_last_active
    return since


def inactivity_reason(
    worker: Mapping[str, Any],
    lifecycle: Lifecycle,
    queue_last_active: datetime | None,
    *,
    holds_claims: bool,
    slack_s: float,
    now: datetime,
) -> str | None:
    """Why this worker must be terminated for queue inactivity, or None."""
    if worker["state"] != RUNNING:
        return None  # not yet registered (registrationTimeout applies) or already going
    silent_s = (now - last_activity(worker, queue_last_active)).total_seconds()
    if silent_s <= lifecycle.queueInactivityTimeout + slack_s:
        return None
    if holds_claims:
        return None
    return (
        f"no queue call for {silent_s:.0f}s "
        f"(queueInactivityTimeout {lifecycle.queueInactivityTimeout}s)"
    )
