"""A resolution that keeps failing cannot stall the dependency-resolver (issue 18,
finding 9): the messages beside it are acknowledged, it is retried a few times and then
moved to the dead-letter queue, with a log line and a count."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
import taskcluster

from services.dependency_resolver.resolver import MAX_ATTEMPTS, Resolver
from shared import db as dbmod
from shared import resolution_queue
from shared.broker import Broker
from shared.config import Settings
from shared.outbox import Outbox
from shared.service import Runtime
from shared.taskstore import TASKS, TaskStore
from tests.conftest import _drop_database, launch_queue, poll_until, stop_process
from tests.integration.queue_support import new_task_queue_id, root_queue, task_definition


@pytest.fixture
async def runtime(
    settings: Settings, mongo_db: dbmod.Database, broker: Broker
) -> AsyncIterator[Runtime]:
    own = settings.model_copy(update={"mongo_db": mongo_db.name, "resolver_queue_expires_s": 30})
    yield Runtime(own, mongo_db, broker, TaskStore(mongo_db, Outbox(mongo_db, broker)))


async def test_a_poison_resolution_is_dead_lettered_and_the_rest_acknowledged(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    poison, fine = taskcluster.slugId(), [taskcluster.slugId() for _ in range(3)]
    # a task document no code can read: loading it raises, every time
    await runtime.db[TASKS].insert_one({"_id": poison, "definition": "garbage", "runs": 7})
    resolver = Resolver(runtime)
    consuming = asyncio.create_task(resolver.consume())
    try:
        await asyncio.wait_for(resolver.ready.wait(), 30)
        for task_id in [fine[0], poison, *fine[1:]]:
            body = {"status": {"taskId": task_id}, "runId": 0}
            await runtime.broker.publish("task-completed", f"primary.{task_id}", body)
        dead_letters = await resolution_queue.declare_dead_letters(runtime.broker, runtime.settings)

        async def dead_lettered() -> aio_pika.abc.AbstractIncomingMessage | None:
            return await dead_letters.get(no_ack=True, fail=False)

        message = await poll_until(dead_lettered, timeout_s=30, what="the poison dead-lettered")
        assert json.loads(message.body)["status"]["taskId"] == poison

        async def counted() -> bool:  # counted just after the dead letter is confirmed
            return resolver.dead_lettered == 1

        await poll_until(counted, what="the dead letter counted")
        assert resolver.acked >= len(fine)  # the others were not held back by it
    finally:
        consuming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consuming
    logged = [r for r in caplog.records if getattr(r, "taskId", None) == poison]
    assert any(getattr(r, "deadLettered", None) == 1 for r in logged)
    assert any(getattr(r, "attempts", None) == MAX_ATTEMPTS for r in logged)
    assert consuming.cancelled()  # it did not crash on the poison either


async def test_the_sweep_schedules_what_a_crash_left_behind(
    settings: Settings, broker: Broker, tmp_path: Path
) -> None:
    database = f"test_sweep_{uuid.uuid4().hex[:8]}"
    service, process = launch_queue(tmp_path, database=database)
    client = dbmod.connect(settings.mongo_url)
    try:
        db = client[database]
        runtime = Runtime(
            settings.model_copy(update={"mongo_db": database, "resolver_queue_expires_s": 30}),
            db,
            broker,
            TaskStore(db, Outbox(db, broker)),
        )
        queue, tq = root_queue(service), new_task_queue_id()
        required, dependent = taskcluster.slugId(), taskcluster.slugId()
        queue.createTask(required, task_definition(tq))
        queue.createTask(dependent, task_definition(tq, dependencies=[required]))
        resolver = Resolver(runtime)
        assert await resolver.sweep_once() == 0  # nothing is stuck yet
        # a crash after the last edge was satisfied, before the dependent was scheduled
        await db[TASKS].update_one({"_id": dependent}, {"$set": {"depsLeft": 0}})
        assert queue.status(dependent)["status"]["state"] == "unscheduled"
        assert await resolver.sweep_once() == 1
        assert queue.status(dependent)["status"]["state"] == "pending"
        assert await resolver.sweep_once() == 0  # and only once
    finally:
        await client.close()
        stop_process(process)
        _drop_database(settings.mongo_url, database)
