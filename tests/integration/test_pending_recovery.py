"""Pending runs whose RabbitMQ messages were lost: a publish to a deleted pending queue
declares it again, and an operator's rebuild (`flotilla pending rebuild`) republishes
what MongoDB says is pending and leaves pendingTasks exact, races included."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import taskcluster

from shared import db as dbmod
from shared.broker import Broker
from shared.config import Settings
from shared.pending import (
    PendingQueues,
    PendingRun,
    Snapshot,
    pending_run,
    republish_order,
    settled_correction,
)
from shared.routing import pending_queue
from shared.timeutil import utcnow
from tests.conftest import (
    PENDING_QUEUE_EXPIRES,
    RunningService,
    _drop_database,
    launch_queue,
    stop_process,
)
from tests.integration.queue_support import (
    claim_one,
    new_task_queue_id,
    root_queue,
    task_definition,
)

pytestmark = pytest.mark.timeout(90)

WORKER = {"workerGroup": "wg", "workerId": "w1"}
REPOSITORY = Path(__file__).resolve().parents[2]


# --- a publish to a deleted queue ---------------------------------------------------------


async def _on_queue(settings: Settings, database: str, tq: str, action: str) -> None:
    """Delete or purge a task queue's pending queue behind Flotilla's back."""
    broker = await Broker.connect(settings.amqp_url, prefix=settings.exchange_prefix)
    try:
        channel = await broker.open_channel()
        if action == "delete":
            await channel.queue_delete(pending_queue(database, tq))
        else:
            queue = await channel.declare_queue(pending_queue(database, tq), passive=True)
            await queue.purge()
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
    asyncio.run(_on_queue(settings, queue_service.mongo_db, tq, "delete"))
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


async def test_two_publishes_of_one_run_to_a_deleted_queue_both_arrive(
    mongo_db: dbmod.Database, broker: Broker
) -> None:
    """A run published twice at once (a rebuild beside the outbox, say) on one channel:
    each returned message must fail its own publish, or one would count as confirmed."""
    pending, tq = PendingQueues(mongo_db, lambda: broker, expires_s=600), new_task_queue_id()
    run = pending_run(tq, "t", 0, 3, utcnow() + timedelta(hours=1))
    await pending.publish(run)
    channel = await broker.open_channel()
    await channel.queue_delete(pending.name(tq))
    await channel.close()
    await asyncio.gather(pending.publish(run), pending.publish(run))
    assert await pending.ready(tq) == 2


# --- rebuilding: the decisions --------------------------------------------------------------


def _document(task_id: str, priority: int, since_s: int, states: list[str]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "_id": task_id,
        "priority": priority,
        "deadline": datetime(2030, 1, 1).astimezone(),
        "runs": [{"runId": n, "state": state} for n, state in enumerate(states)],
    }
    if states and states[-1] == "pending":
        document["pendingSince"] = datetime(2029, 1, 1).astimezone() + timedelta(seconds=since_s)
    return document


def test_a_rebuild_republishes_pending_runs_best_first_in_the_order_they_became_pending() -> None:
    documents = [
        _document("w-second-low", 2, 5, ["pending"]),
        _document("b-high", 6, 9, ["failed", "pending"]),  # a retry: run 1
        _document("x-first-low", 2, 1, ["pending"]),
        _document("a-high", 6, 9, ["pending"]),  # same priority and time: by taskId
        _document("running", 7, 0, ["running"]),
        _document("resolved", 7, 0, ["pending", "completed"]),
        _document("never-run", 7, 0, []),
    ]
    runs = republish_order("p/w", documents)
    assert [(r.taskId, r.runId, r.priority) for r in runs] == [
        ("a-high", 0, 6),
        ("b-high", 1, 6),
        ("x-first-low", 0, 2),
        ("w-second-low", 0, 2),
    ]
    assert all(r.taskQueueId == "p/w" for r in runs)


STEADY = Snapshot(
    ready=5, stale=0, pending=3, expired=0, outbox_busy=False, ready_again=5, stale_again=0
)


@pytest.mark.parametrize(
    ("change", "wanted"),
    [
        ({}, 2),  # two ready messages no pending run will take: counted stale
        ({"ready": 3, "ready_again": 3}, 0),
        ({"ready": 4}, None),  # a message arrived or left while looking
        ({"stale_again": 1}, None),  # a made_stale or a skip landed while looking
        ({"outbox_busy": True}, None),  # a publish may still be on its way
        ({"ready": 2, "ready_again": 2}, None),  # a run without a message: a claim in flight
        ({"ready": 2, "ready_again": 2, "expired": 1}, -1),  # a skipped run past its deadline
    ],
)
def test_the_correction_a_rebuild_settles_on(change: dict[str, Any], wanted: int | None) -> None:
    assert settled_correction(replace(STEADY, **change)) == wanted


# --- rebuilding through the CLI -------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_queue(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """A queue whose claimWork gives up after one second, so that "nothing to claim" is
    quick to show, on a database of its own."""
    database = f"test_rebuild_{uuid.uuid4().hex[:10]}"
    service, process = launch_queue(
        tmp_path_factory.mktemp("rebuild"),
        database=database,
        extra_env={"FLOTILLA_CLAIM_WORK_WAIT": "1"},
    )
    try:
        yield service
    finally:
        stop_process(process)
        _drop_database(settings.mongo_url, database)


def flotilla(
    service: RunningService, settings: Settings, *args: str
) -> subprocess.CompletedProcess[str]:
    """The command line as an operator runs it, pointed at the service's database. Run as
    `python -m cli` from this checkout: the venv's console script may be another's."""
    env = {
        **os.environ,
        "FLOTILLA_MONGO_URL": settings.mongo_url,
        "FLOTILLA_MONGO_DB": service.mongo_db,
        "FLOTILLA_AMQP_URL": settings.amqp_url,
        "FLOTILLA_PENDING_QUEUE_EXPIRES": PENDING_QUEUE_EXPIRES,
        "FLOTILLA_ENV_FILE": "",  # never the developer's own .flotilla/env
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPOSITORY,
    )


def table_row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        cells = [cell.strip() for cell in re.split("[│┃]", line)[1:-1]]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row for {first_cell} in:\n{text}")


def _claim_all(queue: taskcluster.Queue, tq: str) -> list[str]:
    return [c["status"]["taskId"] for c in queue.claimWork(tq, {**WORKER, "tasks": 20})["tasks"]]


def test_runs_whose_messages_were_lost_are_claimable_once_after_a_rebuild_from_the_cli(
    quick_queue: RunningService, settings: Settings
) -> None:
    queue = root_queue(quick_queue)
    tq = new_task_queue_id()
    priorities = {
        "low": "low",
        "high": "high",
        "medium": "medium",
        "claimed": "highest",  # claimTask leaves a stale message, counted in the correction
        "cancelled": "highest",  # so does cancelTask
    }
    ids = {name: taskcluster.slugId() for name in priorities}
    for name, task_id in ids.items():
        queue.createTask(task_id, task_definition(tq, priority=priorities[name]))
    queue.claimTask(ids["claimed"], "0", WORKER)
    queue.cancelTask(ids["cancelled"])
    assert queue.pendingTasks(tq)["pendingTasks"] == 3

    asyncio.run(_on_queue(settings, quick_queue.mongo_db, tq, "purge"))  # the messages are lost
    assert queue.claimWork(tq, {**WORKER, "tasks": 5})["tasks"] == []
    assert queue.pendingTasks(tq)["pendingTasks"] == 0

    result = flotilla(quick_queue, settings, "pending", "rebuild", tq)
    assert result.returncode == 0, result.stderr
    header = table_row(result.stdout, "task queue")
    assert header == ["task queue", "republished", "depth before", "depth after", "pendingTasks"]
    assert table_row(result.stdout, tq) == [tq, "3", "0", "3", "3"]

    assert queue.pendingTasks(tq)["pendingTasks"] == 3
    assert _claim_all(queue, tq) == [ids["high"], ids["medium"], ids["low"]]
    assert _claim_all(queue, tq) == []
    assert queue.pendingTasks(tq)["pendingTasks"] == 0
    queue.createTask(taskcluster.slugId(), task_definition(tq))
    assert queue.pendingTasks(tq)["pendingTasks"] == 1  # no correction left over


# --- rebuilding while the queue is in use ---------------------------------------------------


class RacedRebuild(PendingQueues):
    """A rebuild with something happening at its worst moment: between its purge (and the
    correction's reset) and its read of MongoDB."""

    def __init__(self, *args: Any, race: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.race = race

    async def _pending_runs(self, task_queue_id: str) -> list[PendingRun]:
        await self.race()
        return await super()._pending_runs(task_queue_id)


@pytest.fixture
async def service_db(
    quick_queue: RunningService, settings: Settings
) -> AsyncIterator[dbmod.Database]:
    client = dbmod.connect(settings.mongo_url)
    try:
        yield client[quick_queue.mongo_db]
    finally:
        await client.close()


@pytest.mark.parametrize("race", ["a task created", "a task claimed by claimTask"])
async def test_a_rebuild_leaves_the_count_exact_when_the_queue_moves_during_it(
    race: str, quick_queue: RunningService, service_db: dbmod.Database, broker: Broker
) -> None:
    """A task created during the rebuild is read as pending and has its own message too
    (published after the purge); a claimTask during it counts a stale message the purge
    already took. Either way the count comes out exact and every run is claimed once."""
    queue = root_queue(quick_queue)
    tq = new_task_queue_id()
    first, second, third = (taskcluster.slugId() for _ in range(3))
    queue.createTask(first, task_definition(tq))
    queue.createTask(second, task_definition(tq))

    async def racing() -> None:
        if race == "a task created":
            await asyncio.to_thread(queue.createTask, third, task_definition(tq))
        else:
            await asyncio.to_thread(queue.claimTask, second, "0", WORKER)

    rebuilt = await RacedRebuild(
        service_db, lambda: broker, expires_s=float(PENDING_QUEUE_EXPIRES), race=racing
    ).rebuild(tq, settle_pause_s=0.05)
    wanted = [first, second, third] if race == "a task created" else [first]
    # The purge took the first two messages; the created task has its own and ours.
    assert rebuilt.depth_after == (4 if race == "a task created" else 1)
    assert rebuilt.exact
    assert rebuilt.pending == len(wanted)
    assert queue.pendingTasks(tq)["pendingTasks"] == len(wanted)
    claimed = await asyncio.to_thread(_claim_all, queue, tq)
    assert sorted(claimed) == sorted(wanted)
    assert await asyncio.to_thread(_claim_all, queue, tq) == []
    assert queue.pendingTasks(tq)["pendingTasks"] == 0
    await asyncio.to_thread(queue.createTask, taskcluster.slugId(), task_definition(tq))
    assert queue.pendingTasks(tq)["pendingTasks"] == 1


async def test_a_rebuild_says_so_when_the_queue_never_holds_still(
    mongo_db: dbmod.Database, broker: Broker
) -> None:
    """A task of the queue whose outbox effects stay undelivered: the count cannot be
    trusted, and the rebuild reports it unsettled instead of exact (its runs are out)."""
    tq = new_task_queue_id()
    now = utcnow()
    await mongo_db["tasks"].insert_many(
        [
            {**_document("waiting", 3, 0, ["pending"]), "taskQueueId": tq},
            {**_document("stuck", 3, 0, ["running"]), "taskQueueId": tq, "outboxDue": now},
        ]
    )
    pending = PendingQueues(mongo_db, lambda: broker, expires_s=600)
    rebuilt = await pending.rebuild(tq, settle_rounds=3, settle_pause_s=0.01)
    assert (rebuilt.republished, rebuilt.depth_after, rebuilt.exact) == (1, 1, False)
    taken = await pending.take(tq)
    assert taken is not None and taken.run.taskId == "waiting"
    await taken.ack()
