"""W4, claim-expiry and deadline precision while many claims are held at once.

N tasks are claimed and left to lapse (claims of CLAIM_TIMEOUT_S, as the platform's queue
is configured); during the same window M other tasks reach their deadline: half pending
(never claimed), half running (claimed by a worker that keeps reclaiming, so only the
deadline can end them). Lateness is read from each task's status afterwards:
- expiry: run 0 resolved − its takenUntil (the retry run is scheduled in the same write);
- deadline: the open run's `resolved` − the task's deadline.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import taskcluster
import taskcluster.aio

from bench.bench_graphs import CLAIM_TIMEOUT_S, create_all
from bench.bench_queue import (
    QueueService,
    new_task_queue_id,
    progress,
    session_for,
    summary_ms,
    task_definition,
)

DEADLINE_LEAD_S = 6  # after the deadline tasks exist: time to claim the lapsing ones


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _claim(queue: taskcluster.aio.Queue, tq: str, count: int) -> list[dict[str, Any]]:
    held: list[dict[str, Any]] = []
    while len(held) < count:
        wanted = min(32, count - len(held))
        body = {"workerGroup": "w4", "workerId": f"x{len(held) // 32}", "tasks": wanted}
        held += (await queue.claimWork(tq, body))["tasks"]
    return held


async def _statuses(queue: taskcluster.aio.Queue, ids: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), 1000):
        answer = await queue.statuses({"taskIds": ids[start : start + 1000]})
        found += [entry["status"] for entry in answer["statuses"]]
    return found


async def _keep_reclaiming(
    queue: taskcluster.aio.Queue, claims: list[dict[str, Any]], until: float
) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        await asyncio.sleep(CLAIM_TIMEOUT_S / 3)
        for claim in claims:
            try:
                await queue.reclaimTask(claim["status"]["taskId"], str(claim["runId"]))
            except taskcluster.exceptions.TaskclusterRestFailure:
                pass  # the deadline resolved it: that is what is being measured


async def run(service: QueueService, claims: int, deadlines: int) -> dict[str, Any]:
    async with session_for(64) as session:
        queue = service.client(session)
        expiring_tq, pending_tq, running_tq = (new_task_queue_id(k) for k in ("exp", "dlp", "dlr"))
        expiring_ids = [taskcluster.slugId() for _ in range(claims)]
        progress(f"W4: creating {claims} tasks whose claims will lapse")
        await create_all(queue, [(t, task_definition(expiring_tq)) for t in expiring_ids], 32)
        # Deadlines fall while the lapsing claims are being taken and expired.
        lead_s = DEADLINE_LEAD_S + deadlines / 50
        deadline = datetime.now(UTC) + timedelta(seconds=lead_s)
        half = deadlines // 2
        pending_ids = [taskcluster.slugId() for _ in range(half)]
        running_ids = [taskcluster.slugId() for _ in range(deadlines - half)]
        progress(f"W4: creating {deadlines} tasks with a deadline in {lead_s:.0f} s")
        with_deadline = {**task_definition(pending_tq), "deadline": _iso(deadline)}
        await create_all(
            queue,
            [(t, {**with_deadline, "taskQueueId": pending_tq}) for t in pending_ids]
            + [(t, {**with_deadline, "taskQueueId": running_tq}) for t in running_ids],
            concurrency=32,
        )
        running = await _claim(queue, running_tq, len(running_ids))
        loop = asyncio.get_running_loop()
        reclaimer = asyncio.create_task(_keep_reclaiming(queue, running, loop.time() + 120))
        try:
            held = await _claim(queue, expiring_tq, claims)
            wait_s = max(
                CLAIM_TIMEOUT_S + 3,
                (deadline - datetime.now(UTC)).total_seconds() + 3,
            )
            progress(f"W4: {len(held)} claims held; waiting {wait_s:.0f} s")
            await asyncio.sleep(wait_s)
        finally:
            reclaimer.cancel()
            await asyncio.gather(reclaimer, return_exceptions=True)
        taken_until = {c["status"]["taskId"]: _ts(c["takenUntil"]) for c in held}
        expiry_late: list[float] = []
        for status in await _statuses(queue, list(taken_until)):
            first = status["runs"][0]
            if first.get("reasonResolved") == "claim-expired":
                late = _ts(first["resolved"]) - taken_until[status["taskId"]]
                expiry_late.append(late.total_seconds())
        deadline_late: dict[str, list[float]] = {"pending": [], "running": []}
        for kind, ids in (("pending", pending_ids), ("running", running_ids)):
            for status in await _statuses(queue, ids):
                last = status["runs"][-1] if status["runs"] else None
                if last and last.get("reasonResolved") == "deadline-exceeded":
                    late = _ts(last["resolved"]) - _ts(status["deadline"])
                    deadline_late[kind].append(late.total_seconds())
    return {
        "claims_held": len(held),
        "claim_timeout_s": CLAIM_TIMEOUT_S,
        "expired": len(expiry_late),
        "expiry_late": summary_ms(expiry_late),
        "deadline_tasks": deadlines,
        "deadline_resolved": sum(len(v) for v in deadline_late.values()),
        "deadline_late": summary_ms(deadline_late["pending"] + deadline_late["running"]),
        "deadline_late_pending": summary_ms(deadline_late["pending"]),
        "deadline_late_running": summary_ms(deadline_late["running"]),
    }
