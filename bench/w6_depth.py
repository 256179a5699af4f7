"""W6, cost against queue depth: createTask and claimWork latency with 1k, 100k and 1M tasks
pending, all in the probed task queue, or spread over 1,000 other task queues.

Creating a million tasks through the API takes hours at this box's createTask rate, so
the backlog is *seeded through the storage layer*: the task documents createTask would
leave (run 0 pending, lowest priority, events considered delivered) are bulk-inserted,
and their runs published to RabbitMQ with `shared.pending.PendingQueues`, the code the dependency
resolver's fan-out uses. The probes then go through the HTTP API as usual:
- one queue: a task of priority `highest` is created in the seeded queue and claimWork is
  sent when createTask returns (with a backlog no worker can be waiting); the correct
  answer is the probe, not one of the backlog;
- spread: the backlog is in 1,000 other task queues; one worker waits in claimWork on a
  fresh queue, and a task is created there (bench_queue's LatencyRun).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import taskcluster
from pymongo import AsyncMongoClient

from bench.bench_queue import (
    ImmediateRun,
    LatencyRun,
    QueueService,
    measure_waiting,
    new_task_queue_id,
    pending_count,
    progress,
    session_for,
    task_definition,
    with_workers,
)
from shared import transitions
from shared.broker import Broker
from shared.config import load_settings
from shared.models import TaskDefinition
from shared.pending import PendingQueues, pending_run
from shared.taskstore import TASKS, to_document
from shared.transitions import Enqueue, TaskRecord

SEED_BATCH = 5000


def _template(task_queue_id: str, now: datetime) -> tuple[dict[str, Any], Enqueue]:
    """One pending task as createTask stores it; every seeded task is a copy with its own id
    (one task group, so the definitions are byte for byte the same)."""
    definition = TaskDefinition.model_validate(
        {**task_definition(task_queue_id, "lowest"), "taskGroupId": taskcluster.slugId()}
    )
    outcome = transitions.defined(
        TaskRecord.new(taskcluster.slugId(), definition), schedule=True, now=now
    )
    enqueue = next(e for e in outcome.effects if isinstance(e, Enqueue))
    return to_document(outcome.record), enqueue


async def seed(database: str, task_queue_ids: list[str], count: int, label: str) -> dict[str, Any]:
    """Add `count` pending tasks, shared evenly by `task_queue_ids`. Queue by queue, in
    batches: the task documents in one insert, their runs published concurrently."""
    settings = load_settings()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    db = client[database]
    broker = await Broker.connect(settings.amqp_url, prefix=settings.exchange_prefix)
    queues = PendingQueues(db, lambda: broker)
    now = datetime.now(UTC)
    started = time.monotonic()
    next_report = started + 10
    done = 0
    timings = {"tasks_s": 0.0, "pending_s": 0.0}
    try:
        for position, task_queue_id in enumerate(task_queue_ids):
            document, enqueue = _template(task_queue_id, now)
            share = count // len(task_queue_ids) + (position < count % len(task_queue_ids))
            for start in range(0, share, SEED_BATCH):
                ids = [taskcluster.slugId() for _ in range(min(SEED_BATCH, share - start))]
                runs = [
                    pending_run(
                        enqueue.task_queue_id, task_id, 0, enqueue.priority, enqueue.deadline
                    )
                    for task_id in ids
                ]
                t0 = time.monotonic()
                await db[TASKS].insert_many([{**document, "_id": i} for i in ids], ordered=False)
                t1 = time.monotonic()
                await asyncio.gather(*(queues.publish(run) for run in runs))
                timings["tasks_s"] += t1 - t0
                timings["pending_s"] += time.monotonic() - t1
                done += len(ids)
                if time.monotonic() > next_report:
                    next_report = time.monotonic() + 10
                    progress(f"{label}: seeded {done:,}/{count:,}")
    finally:
        await broker.close()
        await client.close()
    seconds = time.monotonic() - started
    return {
        "seeded": done,
        "seconds": round(seconds, 1),
        "per_s": round(done / seconds) if seconds else None,
        **{k: round(v, 1) for k, v in timings.items()},
    }


async def probe_one_queue(service: QueueService, tq: str, samples: int) -> dict[str, Any]:
    async with session_for(8) as session:
        queue = service.client(session)
        counted = await pending_count(service, queue, tq)
        run = ImmediateRun(service, queue, tq)
        for _ in range(2):
            await run.inject(record=False)
        for _ in range(samples):
            await run.inject()
        return {"pending_in_queue": counted, **run.summary()}


async def probe_spread(service: QueueService, samples: int, label: str) -> dict[str, Any]:
    async with session_for(8) as session:
        run = LatencyRun(service, service.client(session), new_task_queue_id("probe"))

        async def measure() -> None:
            await measure_waiting(run, samples, label, warmup=2)

        await with_workers(run, 1, measure, prefix="w6")
        return run.summary()


async def run(
    service: QueueService, levels: list[int], samples: int, spread_queues: int
) -> dict[str, Any]:
    """Two backlogs in the service's database, grown level by level: one task queue
    holding `level` tasks and `spread_queues` queues holding `level` between them."""
    one = new_task_queue_id("deep")
    spread = [new_task_queue_id(f"spread{i}") for i in range(spread_queues)]
    results: dict[str, Any] = {"levels": [], "samples": samples, "spread_queues": spread_queues}
    reached = 0
    for level in levels:
        step: dict[str, Any] = {"depth": level}
        if level > reached:
            step["seed_one_queue"] = await seed(
                service.database, [one], level - reached, f"W6 one queue → {level:,}"
            )
            step["seed_spread"] = await seed(
                service.database, spread, level - reached, f"W6 spread → {level:,}"
            )
            reached = level
        progress(f"W6 depth {level:,}: probing")
        step["one_queue"] = await probe_one_queue(service, one, samples)
        step["spread"] = await probe_spread(service, samples, f"W6 spread {level:,}")
        for part in ("one_queue", "spread"):
            step[part].pop("raw_ms", None)
        results["levels"].append(step)
    return results
