"""Pending runs whose RabbitMQ messages were lost: a publish to a deleted pending queue
declares it again, and an operator's rebuild republishes what MongoDB says is pending."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import taskcluster

from shared import db as dbmod
from shared.broker import Broker
from shared.config import Settings
from shared.pending import PendingQueues, pending_run
from shared.routing import pending_queue
from shared.timeutil import utcnow
from tests.conftest import RunningService
from tests.integration.queue_support import (
    claim_one,
    new_task_queue_id,
    root_queue,
    task_definition,
)

pytestmark = pytest.mark.timeout(90)

WORKER = {"workerGroup": "wg", "workerId": "w1"}


async def _delete_queue(settings: Settings, database: str, tq: str) -> None:
    broker = await Broker.connect(settings.amqp_url, prefix=settings.exchange_prefix)
    try:
        channel = await broker.open_channel()
        await channel.queue_delete(pending_queue(database, tq))
        await channel.close()
    finally:
        await broker.close()


def test_a_task_created_after_its_pending_queue_was_deleted_can_be_claimed(
    queue_service: RunningService, settings: Settings
) -> None:
    queue = root_queue(queue_service)
    tq = new_task_queue_id()
    first = taskcluster.slugId()
    queue.createTask(first, task_definition(tq))  # the queue process declares the queue
    assert claim_one(queue, tq)["status"]["taskId"] == first
    asyncio.run(_delete_queue(settings, queue_service.mongo_db, tq))
    second = taskcluster.slugId()
    queue.createTask(second, task_definition(tq))
    assert queue.pendingTasks(tq)["pendingTasks"] == 1
    assert claim_one(queue, tq)["status"]["taskId"] == second


async def test_a_claimer_asks_a_deleted_pending_queue_and_finds_it_empty_not_broken(
    mongo_db: dbmod.Database, broker: Broker
) -> None:
    """The claim channel remembers the queue it took from; once the queue is deleted, the
    next take declares it again instead of failing the worker's claimWork."""
    pending, tq = PendingQueues(mongo_db, lambda: broker, expires_s=600), new_task_queue_id()
    deadline = utcnow() + timedelta(hours=1)
    await pending.publish(pending_run(tq, "t0", 0, 3, deadline))
    taken = await pending.take(tq)
    assert taken is not None
    await taken.ack()
    channel = await broker.open_channel()
    await channel.queue_delete(pending.name(tq))
    await channel.close()
    assert await pending.take(tq) is None
    await pending.publish(pending_run(tq, "t1", 0, 3, deadline))
    again = await pending.take(tq)
    assert again is not None and again.run.taskId == "t1"
    await again.ack()
