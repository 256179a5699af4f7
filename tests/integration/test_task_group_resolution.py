"""task-group-resolved is decided by the tasks themselves, not by a count: each task
carries `openInGroup` until its first resolution, cleared in the same write as its
state. So a createTask that crashed after joining the group cannot hold the group back,
a repeated resolution cannot announce it early, and a deployment that counted groups is
upgraded in place."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import taskcluster

from services.dependency_resolver.resolver import Resolver
from shared import db as dbmod
from shared import taskgroups
from shared.broker import Broker
from shared.config import Settings
from shared.outbox import Outbox
from shared.service import Runtime
from shared.taskstore import TASKS, TaskStore
from shared.timeutil import utcnow
from tests.conftest import RunningService, _drop_database, launch_queue, stop_process
from tests.integration.queue_support import (
    claim_one,
    new_task_queue_id,
    root_queue,
    task_definition,
    worker_queue,
)


@pytest.fixture
def own_queue(tmp_path: Path, settings: Settings) -> Iterator[tuple[RunningService, str]]:
    database = f"test_groups_{uuid.uuid4().hex[:8]}"
    service, process = launch_queue(tmp_path, database=database)
    try:
        yield service, database
    finally:
        stop_process(process)
        _drop_database(settings.mongo_url, database)


@pytest.fixture
async def resolver(
    own_queue: tuple[RunningService, str], settings: Settings, broker: Broker
) -> AsyncIterator[Resolver]:
    client = dbmod.connect(settings.mongo_url)
    db = client[own_queue[1]]
    own = settings.model_copy(update={"mongo_db": own_queue[1], "resolver_queue_expires_s": 30})
    yield Resolver(Runtime(own, db, broker, TaskStore(db, Outbox(db, broker))))
    await client.close()


def complete(service: RunningService, queue: taskcluster.Queue, tq: str, task_id: str) -> None:
    claim = claim_one(queue, tq)
    assert claim["status"]["taskId"] == task_id
    worker_queue(service, claim).reportCompleted(task_id, str(claim["runId"]))


def create(queue: taskcluster.Queue, tq: str, group: str, **overrides: Any) -> str:
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, taskGroupId=group, **overrides))
    return task_id


async def test_the_group_is_announced_when_its_last_task_resolves_and_not_before(
    own_queue: tuple[RunningService, str], resolver: Resolver
) -> None:
    service = own_queue[0]
    queue, tq, group = root_queue(service), new_task_queue_id(), taskcluster.slugId()
    first, second, cancelled = (create(queue, tq, group) for _ in range(3))
    assert not await resolver.announce_group(group)
    complete(service, queue, tq, first)
    assert not await resolver.announce_group(group)  # two still open
    # a repeated resolution (here a cancel sent twice) cannot count the group down twice
    queue.cancelTask(cancelled)
    queue.cancelTask(cancelled)
    assert not await resolver.announce_group(group)
    complete(service, queue, tq, second)
    assert await resolver.announce_group(group)
    # a rerun after the group resolved does not make the group wait again (upstream)
    queue.rerunTask(second)
    assert await resolver.announce_group(group)


async def test_a_create_task_that_crashed_after_joining_does_not_hold_the_group_back(
    own_queue: tuple[RunningService, str], resolver: Resolver
) -> None:
    service = own_queue[0]
    queue, tq, group = root_queue(service), new_task_queue_id(), taskcluster.slugId()
    task_id = create(queue, tq, group)
    # a createTask that joined the group, then crashed before storing its task; and a
    # client retrying one that did store it
    definition = queue.task(task_id)
    expires = utcnow().replace(year=utcnow().year + 1)
    await taskgroups.join(resolver.db, group, definition["schedulerId"], expires)
    queue.createTask(task_id, definition)
    complete(service, queue, tq, task_id)
    assert await resolver.announce_group(group)


async def test_a_deployment_that_counted_groups_is_upgraded_in_place(
    own_queue: tuple[RunningService, str], resolver: Resolver
) -> None:
    service = own_queue[0]
    queue, tq, group = root_queue(service), new_task_queue_id(), taskcluster.slugId()
    done, still_open = create(queue, tq, group), create(queue, tq, group)
    complete(service, queue, tq, done)
    db = resolver.db
    # the documents as the previous version left them: a count, and no open marks
    await db[TASKS].update_many({"taskGroupId": group}, {"$unset": {"openInGroup": ""}})
    await db[taskgroups.COLLECTION].update_one({"_id": group}, {"$set": {"unresolved": 1}})
    assert not await resolver.announce_group(group)  # the count still decides
    assert await taskgroups.upgrade(db) == 1
    assert await taskgroups.upgrade(db) == 0  # once
    marked = await db[TASKS].find({"openInGroup": group}, {"_id": 1}).to_list(None)
    assert [d["_id"] for d in marked] == [still_open]
    group_document = await taskgroups.require(db, group)
    assert "unresolved" not in group_document
    assert not await resolver.announce_group(group)
    complete(service, queue, tq, still_open)
    assert await resolver.announce_group(group)
