"""claim-expiry's sweeps, called pass by pass on a deployment of their own (no
claim-expiry process runs there, so what changes is their doing): the deadline backstop
resolves open tasks well past their deadline, and task expiry deletes tasks past
`expires`."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from services.claim_expiry.reapers import Expirer
from shared import artifact_bytes
from shared import db as dbmod
from shared.broker import Broker
from shared.config import Settings
from shared.outbox import Outbox
from shared.service import Runtime
from shared.taskstore import TaskStore
from shared.timeutil import utcnow
from tests.conftest import RunningService, _drop_database, launch_queue, stop_process
from tests.integration.queue_support import new_task_queue_id, root_queue, task_definition


@pytest.fixture
async def own(
    settings: Settings, broker: Broker, tmp_path: Path
) -> AsyncIterator[tuple[RunningService, Expirer]]:
    database = f"test_expiry_{uuid.uuid4().hex[:8]}"
    service, process = launch_queue(tmp_path, database=database)
    client = dbmod.connect(settings.mongo_url)
    try:
        db = client[database]
        config = settings.model_copy(update={"mongo_db": database})
        runtime = Runtime(config, db, broker, TaskStore(db, Outbox(db, broker)))
        yield service, Expirer(runtime, artifact_bytes.open_store(config, db))
    finally:
        await client.close()
        stop_process(process)
        _drop_database(settings.mongo_url, database)


def soon(seconds: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def passed(moment: str) -> None:
    """Wait (on the clock, the condition itself) until `moment` is in the past."""
    target = datetime.datetime.fromisoformat(moment.replace("Z", "+00:00"))
    await asyncio.sleep(max(0.0, (target - utcnow()).total_seconds()) + 0.01)
    assert utcnow() > target


async def test_the_deadline_backstop_resolves_open_tasks_past_their_deadline(
    own: tuple[RunningService, Expirer],
) -> None:
    service, expirer = own
    queue, tq = root_queue(service), new_task_queue_id()
    task_id, deadline = taskcluster.slugId(), soon(2)
    queue.createTask(task_id, task_definition(tq, deadline=deadline))
    await passed(deadline)
    await expirer.overdue(utcnow())  # not yet "well past": left to the deadline reaper
    assert queue.status(task_id)["status"]["state"] == "pending"
    await expirer.overdue(utcnow() + datetime.timedelta(minutes=2))
    status: Any = queue.status(task_id)["status"]
    assert status["state"] == "exception"
    assert status["runs"][-1]["reasonResolved"] == "deadline-exceeded"


async def test_tasks_past_expires_are_deleted(own: tuple[RunningService, Expirer]) -> None:
    service, expirer = own
    queue, tq = root_queue(service), new_task_queue_id()
    gone, kept = taskcluster.slugId(), taskcluster.slugId()
    deadline = soon(1.5)
    queue.createTask(gone, task_definition(tq, deadline=deadline, expires=soon(2)))
    queue.createTask(kept, task_definition(tq))
    await passed(soon(2.1))
    assert await expirer.expire(utcnow()) == 1
    with pytest.raises(TaskclusterRestFailure) as missing:
        queue.task(gone)
    assert missing.value.status_code == 404
    assert queue.task(kept)["taskQueueId"] == tq
    assert await expirer.expire(utcnow()) == 0  # safe to repeat
