"""The broker publishes persistent, confirmed JSON that Taskcluster-style subscribers receive."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import taskcluster
from aio_pika.abc import AbstractIncomingMessage

from shared.broker import Binding, Broker
from shared.ids import slugid
from shared.routing import cc_routes, task_routing_key

EVENTS = taskcluster.QueueEvents({"rootUrl": "http://127.0.0.1:8080"})


def event_of(binding: dict[str, str], broker: Broker) -> str:
    return binding["exchange"].removeprefix(broker.prefix)


def sample_key(task_id: str, group_id: str) -> str:
    return task_routing_key(
        task_id=task_id,
        run_id=0,
        worker_group="wg",
        worker_id="w1",
        provisioner_id="prov",
        worker_type="wt",
        scheduler_id="-",
        task_group_id=group_id,
    )


async def collect(
    queue: aio_pika.abc.AbstractQueue, seconds: float
) -> list[AbstractIncomingMessage]:
    """Everything delivered within `seconds` (long enough to see a duplicate if there is one)."""
    received: list[AbstractIncomingMessage] = []

    async def on_message(message: AbstractIncomingMessage) -> None:
        received.append(message)
        await message.ack()

    tag = await queue.consume(on_message)
    await asyncio.sleep(seconds)
    await queue.cancel(tag)
    return received


async def test_subscriber_with_queue_events_pattern_receives_once(broker: Broker) -> None:
    task_id, group_id = slugid(), slugid()
    by_task = EVENTS.taskCompleted({"taskId": task_id})
    by_group = EVENTS.taskCompleted({"taskGroupId": group_id})
    by_route = EVENTS.taskCompleted(f"route.notify.{task_id}.#")
    queue = await broker.bind_queue(
        f"test-{uuid.uuid4().hex}",
        [
            Binding(event_of(b, broker), b["routingKeyPattern"])
            for b in (by_task, by_group, by_route)
        ],
        durable=False,
        exclusive=True,
    )
    body = {"version": 1, "status": {"taskId": task_id}, "runId": 0}
    await broker.publish(
        "task-completed",
        sample_key(task_id, group_id),
        body,
        cc=cc_routes([f"notify.{task_id}.done"]),
    )
    received = await collect(queue, 0.5)
    # Three bindings match (primary key twice, CC once): RabbitMQ still delivers one copy.
    assert len(received) == 1
    message = received[0]
    assert json.loads(message.body) == body
    assert message.routing_key == sample_key(task_id, group_id)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert message.headers["CC"] == [f"route.notify.{task_id}.done"]


async def test_route_only_binding_receives_through_cc(broker: Broker) -> None:
    task_id = slugid()
    binding = EVENTS.taskDefined(f"route.index.{task_id}.#")
    queue = await broker.bind_queue(
        f"test-{uuid.uuid4().hex}",
        [Binding(event_of(binding, broker), binding["routingKeyPattern"])],
        durable=False,
        exclusive=True,
    )
    await broker.publish(
        "task-defined",
        sample_key(task_id, slugid()),
        {"version": 1},
        cc=cc_routes([f"index.{task_id}.latest"]),
    )
    await broker.publish("task-defined", sample_key(slugid(), slugid()), {"version": 1})
    assert len(await collect(queue, 0.5)) == 1


async def test_subscriber_for_another_task_gets_nothing(broker: Broker) -> None:
    binding = EVENTS.taskFailed({"taskId": slugid()})
    queue = await broker.bind_queue(
        f"test-{uuid.uuid4().hex}",
        [Binding(event_of(binding, broker), binding["routingKeyPattern"])],
        durable=False,
        exclusive=True,
    )
    await broker.publish("task-failed", sample_key(slugid(), slugid()), {"version": 1})
    assert await collect(queue, 0.3) == []


async def test_durable_queue_keeps_messages_for_a_late_consumer(broker: Broker) -> None:
    # A shared durable queue (how the dependency-resolver consumes) keeps what was published
    # while no consumer was attached.
    name = f"test-durable-{uuid.uuid4().hex}"
    task_id = slugid()
    binding = Binding("task-exception", f"primary.{task_id}.#")
    queue = await broker.bind_queue(name, [binding], durable=True)
    try:
        for run in range(3):
            await broker.publish("task-exception", sample_key(task_id, slugid()), {"run": run})
        received = await collect(queue, 0.5)
        assert sorted(json.loads(m.body)["run"] for m in received) == [0, 1, 2]
    finally:
        await queue.delete(if_unused=False, if_empty=False)
