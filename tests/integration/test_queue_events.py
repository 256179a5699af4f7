"""Pulse messages as a Taskcluster subscriber sees them: bound with `taskcluster.QueueEvents`
patterns on the real RabbitMQ, and never lost when the queue dies mid-request."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import taskcluster
import taskcluster.aio
from aio_pika.abc import AbstractIncomingMessage

from shared.broker import Binding, Broker
from tests.conftest import RunningService, launch_queue, stop_process
from tests.integration.queue_support import (
    claim_one,
    new_task_queue_id,
    root_queue,
    task_definition,
    worker_queue,
)

PREFIX = "exchange/taskcluster-queue/v1/"


@dataclass
class Received:
    exchange: str
    routing_key: str
    body: dict[str, Any]


class Subscriber:
    """An exclusive queue bound with QueueEvents patterns, collecting what arrives."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[Received] = asyncio.Queue()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        assert message.content_type == "application/json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        self.messages.put_nowait(
            Received(message.exchange or "", message.routing_key or "", json.loads(message.body))
        )

    async def next(self, within_s: float = 5) -> Received:
        return await asyncio.wait_for(self.messages.get(), within_s)

    async def take(self, count: int, within_s: float = 5) -> list[Received]:
        return [await self.next(within_s) for _ in range(count)]


async def subscribe(broker: Broker, bindings: list[dict[str, str]]) -> Subscriber:
    subscriber = Subscriber()
    queue = await broker.bind_queue(
        f"test-{uuid.uuid4().hex[:8]}",
        [Binding(b["exchange"].removeprefix(PREFIX), b["routingKeyPattern"]) for b in bindings],
        durable=False,
        exclusive=True,
    )
    await queue.consume(subscriber.on_message, no_ack=True)
    return subscriber


@pytest.fixture
def events() -> taskcluster.QueueEvents:
    return taskcluster.QueueEvents({"rootUrl": "http://unused.example.com"})


async def test_task_lifecycle_messages_reach_a_queue_events_subscriber(
    broker: Broker, events: taskcluster.QueueEvents, queue_service: RunningService
) -> None:
    queue = root_queue(queue_service)
    tq = new_task_queue_id()
    task_id = taskcluster.slugId()
    route = f"test.{uuid.uuid4().hex[:8]}"
    by_task = await subscribe(
        broker,
        [
            getattr(events, name)({"taskId": task_id})
            for name in ("taskDefined", "taskPending", "taskRunning", "taskCompleted")
        ],
    )
    by_route = await subscribe(
        broker,
        [
            {"exchange": PREFIX + "task-completed", "routingKeyPattern": f"route.{route}"},
            {"exchange": PREFIX + "task-defined", "routingKeyPattern": f"route.{route}"},
        ],
    )
    definition = task_definition(tq, routes=[route], tags={"purpose": "events"})
    queue.createTask(task_id, definition)
    claim = claim_one(queue, tq, worker_id="w-events")
    worker_queue(queue_service, claim).reportCompleted(task_id, "0")

    defined, pending, running, completed = await by_task.take(4)
    prov, wt = tq.split("/")
    assert [m.exchange for m in (defined, pending, running, completed)] == [
        PREFIX + e for e in ("task-defined", "task-pending", "task-running", "task-completed")
    ]
    assert defined.routing_key == f"primary.{task_id}._._._.{prov}.{wt}.-.{task_id}._"
    assert defined.body["status"]["state"] == "unscheduled"
    assert defined.body["status"]["runs"] == []
    assert defined.body["task"] == {"tags": {"purpose": "events"}}
    assert pending.routing_key == f"primary.{task_id}.0._._.{prov}.{wt}.-.{task_id}._"
    assert pending.body["runId"] == 0 and pending.body["status"]["state"] == "pending"
    assert running.routing_key == f"primary.{task_id}.0.wg.w-events.{prov}.{wt}.-.{task_id}._"
    assert running.body["takenUntil"] == claim["takenUntil"]
    assert (running.body["workerGroup"], running.body["workerId"]) == ("wg", "w-events")
    assert completed.body["status"]["state"] == "completed"
    assert set(completed.body) == {"version", "status", "runId", "task", "workerGroup", "workerId"}
    assert all(m.body["version"] == 1 for m in (defined, pending, running, completed))

    # The route copies (CC) arrive once each, even though two bindings match.
    copies = await by_route.take(2)
    assert sorted(m.exchange for m in copies) == [
        PREFIX + "task-completed",
        PREFIX + "task-defined",
    ]
    with pytest.raises(TimeoutError):
        await by_route.next(within_s=0.5)


async def test_cancel_and_retry_messages(
    broker: Broker, events: taskcluster.QueueEvents, queue_service: RunningService
) -> None:
    queue = root_queue(queue_service)
    tq = new_task_queue_id()
    cancelled, retried = taskcluster.slugId(), taskcluster.slugId()
    subscriber = await subscribe(
        broker,
        [events.taskException({"taskId": t}) for t in (cancelled, retried)]
        + [events.taskPending({"taskId": retried})],
    )
    queue.createTask(cancelled, task_definition(tq, dependencies=[cancelled]))
    queue.cancelTask(cancelled)
    exception = await subscriber.next()
    prov, wt = tq.split("/")
    # no worker held it: worker slots are `_` and the body has no worker fields
    assert exception.routing_key == f"primary.{cancelled}.0._._.{prov}.{wt}.-.{cancelled}._"
    assert "workerGroup" not in exception.body
    assert exception.body["status"]["runs"][0]["reasonResolved"] == "canceled"

    queue.createTask(retried, task_definition(tq))
    assert (await subscriber.next()).body["runId"] == 0
    worker = worker_queue(queue_service, claim_one(queue, tq))
    worker.reportException(retried, "0", {"reason": "worker-shutdown"})
    exception, pending = await subscriber.take(2)
    assert exception.exchange.endswith("task-exception")
    assert exception.body["workerId"] == "w1"
    assert pending.body["runId"] == 1
    # both carry the same snapshot, which already includes the retry run
    assert exception.body["status"] == pending.body["status"]
    assert [r["state"] for r in pending.body["status"]["runs"]] == ["exception", "pending"]


@pytest.fixture
async def crash_database(settings: Any) -> AsyncIterator[str]:
    name = f"test_crash_{uuid.uuid4().hex[:8]}"
    yield name
    from tests.conftest import _drop_database

    _drop_database(settings.mongo_url, name)


async def test_events_survive_a_crash_between_write_and_publish(
    broker: Broker,
    events: taskcluster.QueueEvents,
    tmp_path: Path,
    crash_database: str,
) -> None:
    faulty, process = launch_queue(
        tmp_path,
        database=crash_database,
        extra_env={"FLOTILLA_FAULT_INJECTION": "exit-after-commit"},
    )
    task_id = taskcluster.slugId()
    tq = new_task_queue_id()
    subscriber = await subscribe(
        broker, [events.taskDefined({"taskId": task_id}), events.taskPending({"taskId": task_id})]
    )
    try:
        with pytest.raises(taskcluster.exceptions.TaskclusterConnectionError):
            root_queue(faulty).createTask(task_id, task_definition(tq))
        assert await asyncio.to_thread(process.wait, 10) == 70
    finally:
        stop_process(process)
    with pytest.raises(TimeoutError):
        await subscriber.next(within_s=0.5)  # the process died before publishing

    restarted, process = launch_queue(
        tmp_path, database=crash_database, token=faulty.root_access_token
    )
    try:
        defined, pending = await subscriber.take(2, within_s=15)  # the relay delivers them
        assert defined.exchange.endswith("task-defined")
        assert pending.exchange.endswith("task-pending")
        status = root_queue(restarted).status(task_id)["status"]
        assert status["state"] == "pending"
        claim = claim_one(root_queue(restarted), tq)  # and the pending entry was made too
        assert claim["status"]["taskId"] == task_id
    finally:
        stop_process(process)
