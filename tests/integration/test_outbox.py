"""The outbox against the real servers: effects are delivered at least once, never again
after they were cleared, survive a broker outage, and the relay works off more than one
batch of what crashes left behind."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import aio_pika
import pytest
from aio_pika.abc import AbstractQueue

from shared import db as dbmod
from shared import outbox as outbox_module
from shared.broker import Binding, Broker
from shared.config import Settings
from shared.events import Message
from shared.outbox import Outbox, effect_document
from shared.taskstore import TASKS, outbox_key
from shared.timeutil import utcnow


@pytest.fixture
async def subscriber(broker: Broker) -> AsyncIterator[tuple[AbstractQueue, str]]:
    """A private queue bound to task-defined messages of one routing-key prefix."""
    marker = f"outbox-{uuid.uuid4().hex[:10]}"
    queue = await broker.bind_queue(
        "", [Binding("task-defined", f"primary.{marker}.#")], durable=False, exclusive=True
    )
    yield queue, marker


def _message(marker: str, number: int) -> Message:
    return Message("task-defined", f"primary.{marker}.{number}", {"n": number}, ())


async def _received(queue: AbstractQueue) -> list[int]:
    bodies = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        bodies.append(json.loads(message.body)["n"])
    return bodies


async def _task_with_outbox(db: dbmod.Database, task_id: str, documents: list[dict]) -> dict:
    outbox = {outbox_key(1, i): d for i, d in enumerate(documents)}
    await db[TASKS].insert_one(
        {
            "_id": task_id,
            "version": 1,
            "outbox": outbox,
            "outboxDue": utcnow() - timedelta(minutes=1),
        }
    )
    return outbox


async def _eventually(queue: AbstractQueue, count: int) -> list[int]:
    from tests.conftest import poll_until

    seen: list[int] = []

    async def enough() -> list[int] | None:
        seen.extend(await _received(queue))
        return seen if len(seen) >= count else None

    return await poll_until(enough, what=f"{count} messages")


async def test_cleared_effects_are_never_delivered_again(
    mongo_db: dbmod.Database, broker: Broker, subscriber: tuple[AbstractQueue, str]
) -> None:
    queue, marker = subscriber
    outbox = Outbox(mongo_db, broker)
    entries = await _task_with_outbox(mongo_db, "t1", [effect_document(_message(marker, 1))])
    assert await outbox.deliver("t1", 1, entries)
    assert await _eventually(queue, 1) == [1]
    stored = await mongo_db[TASKS].find_one({"_id": "t1"})
    assert not stored.get("outbox") and "outboxDue" not in stored
    # Another replica's relay, a moment later: nothing is due, nothing goes out again.
    other = Outbox(mongo_db, broker)
    assert await other.relay_once(grace_s=0) == 0
    assert await _received(queue) == []


async def test_a_writer_that_read_delivered_entries_as_leftovers_does_not_repeat_them(
    mongo_db: dbmod.Database, broker: Broker, subscriber: tuple[AbstractQueue, str]
) -> None:
    """The recent-deliveries memory: a report that read its task before the claim's
    background delivery cleared task-running must not publish task-running again."""
    queue, marker = subscriber
    outbox = Outbox(mongo_db, broker)
    entries = await _task_with_outbox(mongo_db, "t2", [effect_document(_message(marker, 1))])
    assert await outbox.deliver("t2", 1, entries)
    # The next writer stored version 2 with its own effect, and read ours as a leftover.
    mine = {outbox_key(2, 0): effect_document(_message(marker, 2))}
    await mongo_db[TASKS].update_one({"_id": "t2"}, {"$set": {"version": 2}})
    assert await outbox.deliver("t2", 2, {**entries, **mine})
    assert await _eventually(queue, 2) == [1, 2]
    assert await _received(queue) == []


async def test_effects_wait_out_a_broker_outage_and_the_relay_delivers_them(
    mongo_db: dbmod.Database,
    settings: Settings,
    broker: Broker,
    subscriber: tuple[AbstractQueue, str],
) -> None:
    queue, marker = subscriber
    gone = await Broker.connect(settings.amqp_url, prefix=settings.exchange_prefix)
    await gone.close()  # every publish through it now fails, as during an outage
    entries = await _task_with_outbox(mongo_db, "t3", [effect_document(_message(marker, 3))])
    assert not await Outbox(mongo_db, gone).deliver("t3", 1, entries)
    stored = await mongo_db[TASKS].find_one({"_id": "t3"})
    assert stored["outbox"] and "outboxDue" in stored  # left for the relay
    assert await Outbox(mongo_db, broker).relay_once(grace_s=0) == 1
    assert await _eventually(queue, 1) == [3]


async def test_the_relay_works_off_more_than_one_batch(
    mongo_db: dbmod.Database,
    broker: Broker,
    subscriber: tuple[AbstractQueue, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue, marker = subscriber
    monkeypatch.setattr(outbox_module, "RELAY_BATCH", 4)
    for number in range(10):
        await _task_with_outbox(mongo_db, f"b{number}", [effect_document(_message(marker, number))])
    relay = Outbox(mongo_db, broker)
    passes = []
    while delivered := await relay.relay_once(grace_s=0):
        passes.append(delivered)
    assert passes == [4, 4, 2]
    assert sorted(await _eventually(queue, 10)) == list(range(10))


async def test_a_pending_run_is_published_persistent_with_its_priority(
    mongo_db: dbmod.Database, broker: Broker
) -> None:
    outbox = Outbox(mongo_db, broker, pending_expires_s=600)
    tq = f"prov-{uuid.uuid4().hex[:8]}/wt"
    document = {
        "kind": "enqueue",
        "taskQueueId": tq,
        "priority": 6,
        "insertedAt": utcnow(),
        "taskId": "p1",
        "runId": 0,
        "deadline": utcnow() + timedelta(hours=1),
    }
    await outbox.perform([document])
    delivery = await outbox.pending.take(tq)
    assert delivery is not None
    assert (delivery.run.taskId, delivery.run.priority) == ("p1", 6)
    assert delivery.message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert delivery.message.priority == 6
    await delivery.ack()
