"""shouldWorkerTerminate's decision (services/provisioner/termination.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.provisioner.termination import decision, hard_reason, over_capacity

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def worker(name: str, *, state: str = "running", age_h: float = 1, **extra: Any) -> dict[str, Any]:
    return {
        "_id": f"p/wt/g/{name}",
        "state": state,
        "created": NOW - timedelta(hours=age_h),
        "expires": NOW + timedelta(days=1),
        "capacity": 1,
        **extra,
    }


def pool(**config: Any) -> dict[str, Any]:
    return {"_id": "p/wt", "providerId": "docker", "config": config}


def test_a_running_worker_of_a_live_pool_keeps_going() -> None:
    assert hard_reason(worker("a"), pool(maxCapacity=2), NOW) is None
    assert decision(None, False, False) == {"terminate": False, "reason": "none"}


def test_stopping_removed_expired_old_or_orphaned_workers_must_go() -> None:
    assert hard_reason(worker("a", state="stopping"), pool(), NOW) == "worker is stopping"
    removed = worker("a", state="stopped", stopReason="removeWorker")
    assert hard_reason(removed, pool(), NOW) == "worker removed"
    assert hard_reason(worker("a", expires=NOW), pool(), NOW) == "worker expired"
    assert hard_reason(worker("a"), None, NOW) == "worker pool deleted"
    deleted = {**pool(), "providerId": "null-provider"}
    assert hard_reason(worker("a"), deleted, NOW) == "worker pool deleted"
    old = worker("a", age_h=5)
    assert hard_reason(old, pool(lifecycle={"maxLifetime": 4 * 3600}), NOW) is not None
    # a hard reason holds even for a busy worker: it finishes its tasks, then exits
    assert decision("worker removed", False, True)["terminate"] is True


def test_over_capacity_the_oldest_idle_workers_go_first() -> None:
    workers = [worker("old", age_h=3), worker("mid", age_h=2), worker("new", age_h=1)]
    shrunk = pool(maxCapacity=2)
    assert [over_capacity(w, shrunk, workers) for w in workers] == [True, False, False]
    assert not any(over_capacity(w, pool(maxCapacity=3), workers) for w in workers)
    assert not any(over_capacity(w, pool(), workers) for w in workers)  # static: no max
    stopping = [{**workers[2], "state": "stopping"}, *workers[:2]]
    assert not any(over_capacity(w, shrunk, stopping) for w in workers[:2])
    assert decision(None, True, False) == {"terminate": True, "reason": "over capacity"}
    assert decision(None, True, True) == {"terminate": False, "reason": "busy"}
