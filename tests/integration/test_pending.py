"""The pending queue on RabbitMQ: order, redelivery after a claimer dies, stale messages,
exact counts, and the upgrade from the database-held queue of earlier versions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from shared import db as dbmod
from shared.broker import Broker
from shared.config import Settings
from shared.pending import PendingQueues, pending_run
from shared.timeutil import utcnow
from tests.conftest import (
    Platform,
    RunningService,
    _drop_database,
    launch_queue,
    poll_until,
    stop_process,
)
from tests.integration.queue_support import (
    claim_one,
    new_task_queue_id,
    root_queue,
    task_definition,
)

WORKER = {"workerGroup": "wg", "workerId": "w1"}


@pytest.fixture
async def queues(
    mongo_db: dbmod.Database, broker: Broker
) -> AsyncIterator[tuple[PendingQueues, str]]:
    yield PendingQueues(mongo_db, lambda: broker, expires_s=600), new_task_queue_id()


async def test_one_get_returns_the_highest_priority_first_in_first_out(
    queues: tuple[PendingQueues, str],
) -> None:
    pending, tq = queues
    deadline = utcnow() + timedelta(hours=1)
    order = [(f"t{i}", p) for i, p in enumerate([1, 7, 3, 7, 1, 3])]
    for task_id, priority in order:
        await pending.publish(pending_run(tq, task_id, 0, priority, deadline))
    taken = []
    while (delivery := await pending.take(tq)) is not None:
        taken.append(delivery.run.taskId)
        await delivery.ack()
    assert taken == ["t1", "t3", "t2", "t5", "t0", "t4"]


async def test_a_message_taken_by_a_claimer_that_dies_is_handed_out_again(
    queues: tuple[PendingQueues, str], settings: Settings
) -> None:
    pending, tq = queues
    await pending.publish(pending_run(tq, "t", 0, 3, utcnow() + timedelta(hours=1)))
    dying = await Broker.connect(settings.amqp_url, prefix=settings.exchange_prefix)
    doomed = PendingQueues(pending.db, lambda: dying, expires_s=600)
    first = await doomed.take(tq)
    assert first is not None and not first.message.redelivered
    assert await pending.take(tq) is None  # held, unacked, by the other claimer
    assert await pending.count(tq) == 0
    await dying.close()  # the claimer dies before acking
    again = await poll_until(lambda: pending.take(tq), what="the message to come back")
    assert again.run.taskId == "t" and again.message.redelivered
    await again.ack()


# --- through the queue ----------------------------------------------------------------------


def _counts(queue: taskcluster.Queue, tq: str, claimed: int | None = None) -> tuple[int, int]:
    """(pending, claimed). Pending is exact at once; claimWork records its claims for the
    claimed count just after answering the worker, so that one may trail by moments."""
    pending = queue.pendingTasks(tq)["pendingTasks"]
    counts = queue.taskQueueCounts(tq)
    assert counts["pendingTasks"] == pending
    if claimed is not None and counts["claimedTasks"] != claimed:
        counts = asyncio.run(
            poll_until(lambda: _claimed(queue, tq, claimed), what=f"{claimed} claimed in {tq}")
        )
    return pending, counts["claimedTasks"]


async def _claimed(queue: taskcluster.Queue, tq: str, wanted: int) -> dict[str, int] | None:
    counts = queue.taskQueueCounts(tq)
    return counts if counts["claimedTasks"] == wanted else None


def test_counts_are_exact_at_once_after_create_claim_work_claim_task_and_cancel(
    queue_service: RunningService,
) -> None:
    queue = root_queue(queue_service)
    tq = new_task_queue_id()
    ids = [taskcluster.slugId() for _ in range(4)]
    for task_id in ids:
        queue.createTask(task_id, task_definition(tq))
    assert _counts(queue, tq, claimed=0) == (4, 0)
    queue.claimTask(ids[0], "0", WORKER)  # leaves its message behind, stale
    assert _counts(queue, tq, claimed=1) == (3, 1)
    queue.cancelTask(ids[1])  # stale too
    assert _counts(queue, tq, claimed=1) == (2, 1)
    # claimWork skips both stale messages and takes the oldest claimable run.
    assert claim_one(queue, tq)["status"]["taskId"] == ids[2]
    assert _counts(queue, tq, claimed=2) == (1, 2)
    assert claim_one(queue, tq)["status"]["taskId"] == ids[3]
    assert _counts(queue, tq, claimed=3) == (0, 3)
    assert queue.claimWork(tq, {**WORKER, "tasks": 4})["tasks"] == []
    assert _counts(queue, tq, claimed=3) == (0, 3)
    queue.createTask(fresh := taskcluster.slugId(), task_definition(tq))
    assert _counts(queue, tq, claimed=3) == (1, 3)  # the corrections were taken off by the skips
    assert claim_one(queue, tq)["status"]["taskId"] == fresh


def test_claim_work_skips_the_stale_message_of_a_task_claimed_by_claim_task(
    queue_service: RunningService,
) -> None:
    queue = root_queue(queue_service)
    tq = new_task_queue_id()
    first, second = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(first, task_definition(tq))
    queue.createTask(second, task_definition(tq))
    queue.claimTask(first, "0", WORKER)
    # The same worker polls: it must not be handed the run it already holds.
    claimed = queue.claimWork(tq, {**WORKER, "tasks": 2})["tasks"]
    assert [c["status"]["taskId"] for c in claimed] == [second]


def test_a_task_past_its_deadline_leaves_the_count_and_is_never_handed_out(
    platform: Platform,
) -> None:
    queue = root_queue(platform.queue)
    tq = new_task_queue_id()
    doomed = taskcluster.slugId()
    queue.createTask(doomed, task_definition(tq, deadline=taskcluster.fromNowJSON("2 seconds")))
    assert _counts(queue, tq, claimed=0) == (1, 0)

    async def resolved() -> bool:
        return queue.status(doomed)["status"]["state"] == "exception"

    asyncio.run(poll_until(resolved, timeout_s=30, what="the deadline resolution"))
    assert _counts(queue, tq, claimed=0) == (0, 0)
    assert queue.claimWork(tq, {**WORKER, "tasks": 1})["tasks"] == []
    assert queue.status(doomed)["status"]["runs"][0]["reasonResolved"] == "deadline-exceeded"


def test_a_priority_change_moves_the_run_and_the_count_stays_exact(
    queue_service: RunningService,
) -> None:
    queue = root_queue(queue_service)
    tq = new_task_queue_id()
    low, other = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(low, task_definition(tq, priority="lowest"))
    queue.createTask(other, task_definition(tq, priority="medium"))
    queue.changeTaskPriority(low, {"newPriority": "highest"})
    assert _counts(queue, tq, claimed=0) == (2, 0)
    claimed = queue.claimWork(tq, {**WORKER, "tasks": 3})["tasks"]
    assert [c["status"]["taskId"] for c in claimed] == [low, other]
    assert _counts(queue, tq, claimed=2) == (0, 2)


def test_a_queue_replica_that_dies_after_storing_a_claim_loses_no_task(
    queue_service: RunningService, tmp_path: Path
) -> None:
    """The replica stores the claim, then dies before acking the message and answering.
    RabbitMQ hands the message out again; the run is no longer pending, so nobody gets it
    a second time, the same worker asking again included (claim expiry retries it)."""
    tq = new_task_queue_id()
    task_id = taskcluster.slugId()
    queue = root_queue(queue_service)
    queue.createTask(task_id, task_definition(tq))
    doomed, process = launch_queue(
        tmp_path,
        database=queue_service.mongo_db,
        token=queue_service.root_access_token,
        extra_env={"FLOTILLA_FAULT_INJECTION": "exit-after-commit"},
    )
    try:
        with pytest.raises(
            (TaskclusterRestFailure, taskcluster.exceptions.TaskclusterConnectionError)
        ):
            root_queue(doomed).claimWork(tq, {**WORKER, "tasks": 1})
        assert process.wait(timeout=30) == 70
    finally:
        stop_process(process)
    assert queue.status(task_id)["status"]["runs"][0]["state"] == "running"
    assert queue.claimWork(tq, {**WORKER, "tasks": 1})["tasks"] == []
    other = queue.claimWork(tq, {"workerGroup": "wg", "workerId": "other", "tasks": 1})
    assert other["tasks"] == []
    # The message went back to the queue when the dead replica's channel closed; the
    # first poll skipped it, so the run is no longer counted either.
    assert _counts(queue, tq, claimed=1) == (0, 1)


# --- upgrading in place -------------------------------------------------------------------


def test_an_upgrade_moves_runs_pending_in_the_database_onto_rabbitmq(
    settings: Settings, tmp_path: Path
) -> None:
    """A database as the previous version left it: runs queued in `pending_entries` (and
    its head/slot/lease collections). The queue moves them at start, once; priorities
    and order hold, a stale entry is dropped, and a second start moves nothing again."""
    database = f"test_upgrade_{uuid.uuid4().hex[:10]}"
    token = "upgrade-token-" + uuid.uuid4().hex
    service, process = launch_queue(tmp_path, database=database, token=token)
    tq = new_task_queue_id()
    queue = root_queue(service)
    ids = [taskcluster.slugId() for _ in range(3)]
    try:
        for task_id, priority in zip(ids, ["low", "high", "low"], strict=True):
            queue.createTask(task_id, task_definition(tq, priority=priority))
        queue.cancelTask(ids[2])
    finally:
        stop_process(process)
    asyncio.run(_as_previous_version(settings, database, tq, ids))
    try:
        service, process = launch_queue(tmp_path, database=database, token=token)
        queue = root_queue(service)
        assert queue.pendingTasks(tq)["pendingTasks"] == 2
        stop_process(process)
        service, process = launch_queue(tmp_path, database=database, token=token)
        queue = root_queue(service)
        assert queue.pendingTasks(tq)["pendingTasks"] == 2  # moved once
        claimed = queue.claimWork(tq, {**WORKER, "tasks": 4})["tasks"]
        assert [c["status"]["taskId"] for c in claimed] == [ids[1], ids[0]]
        assert asyncio.run(_collections(settings, database)).isdisjoint(
            {"pending_entries", "pending_heads", "pending_slots", "pending_leases"}
        )
    finally:
        stop_process(process)
        _drop_database(settings.mongo_url, database)


async def _as_previous_version(settings: Settings, database: str, tq: str, ids: list[str]) -> None:
    """Empty the RabbitMQ queue and write the three runs into the old collections."""
    client = dbmod.connect(settings.mongo_url)
    broker = await Broker.connect(settings.amqp_url, prefix=settings.exchange_prefix)
    try:
        db = client[database]
        queues = PendingQueues(db, lambda: broker, expires_s=600)
        while (delivery := await queues.take(tq)) is not None:
            await delivery.ack()
        await db["pending_corrections"].drop()
        now = utcnow()
        for number, (task_id, priority) in enumerate(zip(ids, [2, 5, 2], strict=True)):
            entry = {
                "taskQueueId": tq,
                "priority": priority,
                "insertedAt": now + timedelta(milliseconds=number),
                "taskId": task_id,
                "runId": 0,
                "deadline": now + timedelta(hours=1),
            }
            key = f"{task_id}/0/{priority}"
            slot = f"{tq}|{priority}|{number:012d}"
            await db["pending_entries"].insert_one({"_id": key, **entry, "slot": slot})
            await db["pending_slots"].insert_one({"_id": slot, "entry": key, **entry})
        await db["pending_heads"].insert_one({"_id": tq, "t2": 2, "t5": 1, "n": 3})
        await db["pending_leases"].insert_one({"_id": "stale", "leasedUntil": now})
    finally:
        await broker.close()
        await client.close()


async def _collections(settings: Settings, database: str) -> set[str]:
    client = dbmod.connect(settings.mongo_url)
    try:
        return set(await client[database].list_collection_names())
    finally:
        await client.close()
