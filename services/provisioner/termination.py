"""shouldWorkerTerminate (reference 1.5): whether a worker should stop now, and why. Pure;
the API gathers the inputs.

Upstream answers from a decision its scanner wrote earlier (and never says true for a
static worker). Flotilla decides at the time of the call from what it knows, so a worker
hears at once that it was removed, that its pool is gone, or that it outlived itself:
- the worker is stopping or stopped (removeWorker, a termination): true;
- it is past its `expires` or its pool's `lifecycle.maxLifetime`: true;
- its pool was deleted (gone or `null-provider`): true;
- the pool holds more live capacity than its `maxCapacity` (lowered by an operator) and
  this worker is among the oldest that make up the excess, as upstream, *and* it holds no
  claimed run: true; a busy worker is never told to go for capacity;
- otherwise false.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from services.provisioner.pools import PoolConfig
from services.provisioner.store import NULL_PROVIDER, REQUESTED, RUNNING, STOPPED, STOPPING

KEEP = "none"


def hard_reason(
    worker: Mapping[str, Any], pool: Mapping[str, Any] | None, now: datetime
) -> str | None:
    """Why the worker must stop whatever it is doing, or None."""
    state = worker["state"]
    if state == STOPPED:
        return "worker removed" if worker.get("stopReason") == "removeWorker" else "worker stopped"
    if state == STOPPING:
        return "worker is stopping"
    if worker["expires"] <= now:
        return "worker expired"
    if pool is None or pool.get("providerId") == NULL_PROVIDER:
        return "worker pool deleted"
    config = PoolConfig.model_validate(pool["config"])
    if worker["created"] + timedelta(seconds=config.lifecycle.maxLifetime) <= now:
        return "worker is past the pool's maxLifetime"
    return None


def over_capacity(
    worker: Mapping[str, Any], pool: Mapping[str, Any], live: Iterable[Mapping[str, Any]]
) -> bool:
    """Whether this worker is part of the pool's capacity beyond `maxCapacity`: the newest
    workers fill the allowance, the oldest are the excess (upstream's order)."""
    maximum = PoolConfig.model_validate(pool["config"]).maxCapacity
    if maximum is None:
        return False  # static pools: capacity is what the machines bring
    newest_first = sorted(
        (w for w in live if w["state"] in (REQUESTED, RUNNING)),
        key=lambda w: (w["created"], w["_id"]),
        reverse=True,
    )
    allowance = maximum
    for other in newest_first:
        if other["_id"] == worker["_id"]:
            return allowance < int(worker.get("capacity", 1))
        allowance -= int(other.get("capacity", 1))
    return False


def decision(hard: str | None, excess: bool, busy: bool) -> dict[str, Any]:
    """The reply: `{terminate, reason}`."""
    if hard is not None:
        return {"terminate": True, "reason": hard}
    if excess and not busy:
        return {"terminate": True, "reason": "over capacity"}
    return {"terminate": False, "reason": "busy" if excess else KEEP}
