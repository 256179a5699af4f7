"""The floor under a fan-out on this machine: the storage and broker work that making N
dependents pending needs at the least, timed on the raw servers with no service code in
between, so W3's fan-out can be read as a multiple of it.

Per dependent, whatever the design: its task document is read (the decision needs its
state) and written (run 0 pending), and two messages are published persistent and
confirmed: the run into its task queue's pending queue (shared.pending) and the
task-pending event. Each step is timed on N real-shaped documents in a scratch
database (dropped afterwards), in chunks of release.CHUNK as the resolver does; the
steps are summed as if nothing overlapped (the resolver overlaps publishing with the
next chunk, so the sum slightly overstates the floor).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import taskcluster
from pymongo import AsyncMongoClient

from bench.bench_queue import progress, task_definition
from services.dependency_resolver.release import CHUNK
from shared import transitions
from shared.config import load_settings
from shared.models import TaskDefinition
from shared.taskstore import to_document, update_for
from shared.transitions import TaskRecord

PUBLISH_CONCURRENCY = 64


def _dependent(root: str, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """A waiting dependent's document and the update that schedules it (as stored by the
    resolver: the transition's own change plus the countdown)."""
    definition = TaskDefinition.model_validate(
        {**task_definition("floor/fanout"), "dependencies": [root]}
    )
    record = TaskRecord.new(taskcluster.slugId(), definition)
    document = {**to_document(record), "waiting": {root: 1}, "depsLeft": 1}
    outcome = transitions.schedule(record, now)
    update = update_for(record, outcome.record, [], now)
    update.setdefault("$unset", {})[f"waiting.{root}"] = ""
    update["$set"]["depsLeft"] = 0
    return document, update


async def _storage(mongo_url: str, size: int) -> dict[str, float]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    db = client[f"bench_floor_{uuid.uuid4().hex[:10]}"]
    root, now = taskcluster.slugId(), datetime.now(UTC)
    document, update = _dependent(root, now)
    ids = [taskcluster.slugId() for _ in range(size)]
    chunks = [ids[i : i + CHUNK] for i in range(0, size, CHUNK)]
    timings: dict[str, float] = {}
    try:
        for chunk in chunks:
            await db.tasks.insert_many([{**document, "_id": i} for i in chunk])
        started = time.monotonic()
        for chunk in chunks:
            await db.tasks.find({"_id": {"$in": chunk}}).to_list(None)
        timings["read_task_documents_s"] = time.monotonic() - started
        started = time.monotonic()
        for chunk in chunks:
            await db.tasks.update_many({"_id": {"$in": chunk}, "version": 0}, update)
        timings["write_task_documents_s"] = time.monotonic() - started
    finally:
        await client.drop_database(db.name)
        await client.close()
    return timings


async def _publishes(amqp_url: str, size: int) -> float:
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        name = f"bench-floor-{uuid.uuid4().hex[:10]}"
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
        body = json.dumps({"status": {"taskId": "x" * 22}, "pad": "p" * 900}).encode()
        limit = asyncio.Semaphore(PUBLISH_CONCURRENCY)

        async def one(number: int) -> None:
            async with limit:
                message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await exchange.publish(message, routing_key=f"primary.{number}")

        try:
            started = time.monotonic()
            await asyncio.gather(*(one(n) for n in range(size)))
            return time.monotonic() - started
        finally:
            await exchange.delete()
    finally:
        await connection.close()


async def measure(size: int) -> dict[str, Any]:
    settings = load_settings()
    progress(f"fan-out floor: {size:,} dependents on the raw servers")
    timings = await _storage(settings.mongo_url, size)
    # the run into its pending queue, and the task-pending event
    timings["publish_run_and_task_pending_s"] = await _publishes(settings.amqp_url, 2 * size)
    result: dict[str, Any] = {k: round(v, 2) for k, v in timings.items()}
    result["size"] = size
    result["sum_s"] = round(sum(timings.values()), 2)
    return result
