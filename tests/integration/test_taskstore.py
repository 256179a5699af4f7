"""TaskStore.mutate's optimistic concurrency against the real database: a writer that
loses a race reads again and decides again; one that keeps losing gives up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pymongo
import pytest
import taskcluster

from shared import db as dbmod
from shared import transitions
from shared.broker import Broker
from shared.config import Settings
from shared.outbox import Outbox
from shared.taskstore import MAX_ATTEMPTS, TASKS, ConcurrentModification, TaskStore
from shared.timeutil import utcnow
from shared.transitions import Outcome, TaskRecord
from tests.conftest import RunningService
from tests.integration.queue_support import new_task_queue_id, root_queue, task_definition


@pytest.fixture
async def store(
    settings: Settings, queue_service: RunningService, broker: Broker
) -> AsyncIterator[TaskStore]:
    client = dbmod.connect(settings.mongo_url)
    database = client[queue_service.mongo_db]
    try:
        yield TaskStore(database, Outbox(database, broker))
    finally:
        await client.close()


def pending_task(service: RunningService) -> str:
    task_id = taskcluster.slugId()
    root_queue(service).createTask(task_id, task_definition(new_task_queue_id()))
    return task_id


class RacingDecision:
    """Cancels the task, after another writer changed it first `races` times."""

    def __init__(self, service: RunningService, settings: Settings, races: int) -> None:
        self.tasks = pymongo.MongoClient(settings.mongo_url)[service.mongo_db][TASKS]
        self.races = races
        self.seen: list[int] = []

    def __call__(self, record: TaskRecord) -> Outcome:
        self.seen.append(record.version)
        if len(self.seen) <= self.races:  # someone else writes between our read and write
            self.tasks.update_one({"_id": record.task_id}, {"$inc": {"version": 1}})
        return transitions.cancel(record, utcnow())

    def close(self) -> None:
        self.tasks.database.client.close()


async def test_a_lost_race_is_decided_again_on_fresh_state(
    store: TaskStore, queue_service: RunningService, settings: Settings
) -> None:
    task_id = pending_task(queue_service)
    decide = RacingDecision(queue_service, settings, races=2)
    try:
        outcome = await store.mutate(task_id, decide)
    finally:
        decide.close()
    assert outcome.changed
    assert len(decide.seen) == 3 and decide.seen[0] < decide.seen[1] < decide.seen[2]
    status: Any = root_queue(queue_service).status(task_id)["status"]
    assert status["state"] == "exception"  # the third decision was stored
    assert [r["reasonResolved"] for r in status["runs"]] == ["canceled"]


async def test_a_writer_that_keeps_losing_gives_up_and_stores_nothing(
    store: TaskStore, queue_service: RunningService, settings: Settings
) -> None:
    task_id = pending_task(queue_service)
    decide = RacingDecision(queue_service, settings, races=MAX_ATTEMPTS)
    try:
        with pytest.raises(ConcurrentModification):
            await store.mutate(task_id, decide)
    finally:
        decide.close()
    assert len(decide.seen) == MAX_ATTEMPTS
    assert root_queue(queue_service).status(task_id)["status"]["state"] == "pending"
