"""The worker interface through the official clients against the running queue: claim
order, long polls woken by new tasks, task credentials, reclaims, reports and retries."""

from __future__ import annotations

import asyncio
import datetime
import random
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import taskcluster
import taskcluster.aio
from taskcluster.exceptions import TaskclusterRestFailure

from shared.config import Settings
from tests.conftest import (
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
    worker_queue,
)

PRIORITIES = ["highest", "very-high", "high", "medium", "low", "very-low", "lowest"]


@pytest.fixture
def queue(queue_service: RunningService) -> taskcluster.Queue:
    return root_queue(queue_service)


def test_claims_follow_priority_then_first_in_first_out(queue: taskcluster.Queue) -> None:
    tq = new_task_queue_id()
    created = []
    order = [p for p in PRIORITIES for _ in range(3)]
    random.Random(7).shuffle(order)
    for priority in order:
        task_id = taskcluster.slugId()
        queue.createTask(task_id, task_definition(tq, priority=priority))
        created.append((priority, task_id))
    expected = [t for p in PRIORITIES for (q, t) in created if q == p]
    claimed = []
    while len(claimed) < len(expected):
        batch = queue.claimWork(tq, {"workerGroup": "wg", "workerId": "w", "tasks": 4})["tasks"]
        assert batch
        claimed += [c["status"]["taskId"] for c in batch]
    assert claimed == expected


def test_claim_carries_the_task_and_run_scoped_credentials(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    tq = new_task_queue_id()
    task_id, other = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, scopes=["secrets:get:x"], tags={"k": "v"}))
    queue.createTask(other, task_definition(tq))
    before = datetime.datetime.now(datetime.UTC)
    claim = claim_one(queue, tq, worker_id="w-cred")
    assert set(claim) == {
        "status",
        "runId",
        "workerGroup",
        "workerId",
        "takenUntil",
        "task",
        "credentials",
    }
    assert claim["task"]["tags"] == {"k": "v"}
    assert claim["status"]["state"] == "running"
    run = claim["status"]["runs"][0]
    assert (run["workerGroup"], run["workerId"]) == ("wg", "w-cred")
    taken_until = datetime.datetime.fromisoformat(claim["takenUntil"])
    assert (
        datetime.timedelta(seconds=1190) < taken_until - before < datetime.timedelta(seconds=1210)
    )
    client_id = claim["credentials"]["clientId"]
    assert client_id.startswith(f"task-client/{task_id}/0/on/wg/w-cred/until/")
    worker = worker_queue(queue_service, claim)
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        worker.reportCompleted(other, "0")  # only this run's scopes
    assert excinfo.value.status_code == 403
    reclaimed = worker.reclaimTask(task_id, "0")
    assert set(reclaimed) == {
        "status",
        "runId",
        "workerGroup",
        "workerId",
        "takenUntil",
        "credentials",
    }
    assert reclaimed["takenUntil"] >= claim["takenUntil"]
    assert reclaimed["credentials"]["accessToken"] != claim["credentials"]["accessToken"]
    fresh = worker_queue(queue_service, reclaimed)
    assert fresh.reportCompleted(task_id, "0")["status"]["state"] == "completed"


def test_claim_task_by_the_same_worker_repeats_and_others_conflict(
    queue: taskcluster.Queue,
) -> None:
    tq = new_task_queue_id()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    first = queue.claimTask(task_id, "0", {"workerGroup": "wg", "workerId": "a"})
    again = queue.claimTask(task_id, "0", {"workerGroup": "wg", "workerId": "a"})
    assert first["takenUntil"] == again["takenUntil"]
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.claimTask(task_id, "0", {"workerGroup": "wg", "workerId": "b"})
    assert excinfo.value.status_code == 409
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.claimTask(task_id, "1", {"workerGroup": "wg", "workerId": "a"})
    assert excinfo.value.status_code == 404
    # claimed through claimTask, so claimWork finds nothing left in the queue
    assert queue.pendingTasks(tq)["pendingTasks"] == 0


@pytest.mark.parametrize(
    ("reason", "retried_as"),
    [
        ("worker-shutdown", "retry"),
        ("intermittent-task", "task-retry"),
        ("malformed-payload", None),
        ("resource-unavailable", None),
        ("internal-error", None),
    ],
)
def test_report_exception_retries_only_retryable_reasons(
    queue: taskcluster.Queue, queue_service: RunningService, reason: str, retried_as: str | None
) -> None:
    tq = new_task_queue_id()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, retries=1))
    worker = worker_queue(queue_service, claim_one(queue, tq))
    status = worker.reportException(task_id, "0", {"reason": reason})["status"]
    assert status["runs"][0]["reasonResolved"] == reason
    if retried_as:
        assert [r["state"] for r in status["runs"]] == ["exception", "pending"]
        assert status["runs"][1]["reasonCreated"] == retried_as
        assert status["retriesLeft"] == 0
        # the retry joins the queue; its failure with no retries left resolves the task
        retry_worker = worker_queue(queue_service, claim_one(queue, tq))
        final = retry_worker.reportException(task_id, "1", {"reason": reason})["status"]
        assert [r["state"] for r in final["runs"]] == ["exception", "exception"]
    else:
        assert status["state"] == "exception" and len(status["runs"]) == 1
        assert status["retriesLeft"] == 1
    # same reason again: success; another outcome: conflict
    again = worker.reportException(task_id, "0", {"reason": reason})["status"]
    assert again["runs"][0]["reasonResolved"] == reason
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        worker.reportFailed(task_id, "0")
    assert excinfo.value.status_code == 409


def test_reports_are_idempotent_and_refuse_unclaimed_runs(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    tq = new_task_queue_id()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.reportCompleted(task_id, "0")  # still pending
    assert excinfo.value.status_code == 409
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.reportCompleted(task_id, "3")
    assert excinfo.value.status_code == 404
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.reportException(task_id, "0", {"reason": "superseded"})
    assert excinfo.value.body["code"] == "InputValidationError"
    worker = worker_queue(queue_service, claim_one(queue, tq))
    failed = worker.reportFailed(task_id, "0")["status"]
    assert failed["state"] == "failed"
    assert worker.reportFailed(task_id, "0")["status"] == failed
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        worker.reportCompleted(task_id, "0")
    assert excinfo.value.status_code == 409


@pytest.fixture(scope="module")
def push_only(
    tmp_path_factory: pytest.TempPathFactory, settings: Settings
) -> Iterator[RunningService]:
    """A queue whose waiting polls only an event can wake: no safety-net sweep, no periodic
    hang-up check, and a short long poll (a poll nobody woke answers empty)."""
    database = f"test_push_{uuid.uuid4().hex[:8]}"
    service, process = launch_queue(
        tmp_path_factory.mktemp("push-only"),
        database=database,
        extra_env={
            "FLOTILLA_CLAIM_SWEEP_INTERVAL": "0",
            "FLOTILLA_CLAIM_HANGUP_CHECK": "600",
            "FLOTILLA_CLAIM_WORK_WAIT": "8",
        },
    )
    try:
        yield service
    finally:
        stop_process(process)
        _drop_database(settings.mongo_url, database)


async def _polling(queue: taskcluster.aio.Queue, tq: str, worker_id: str) -> None:
    """Until the queue is handling this worker's claimWork (it records the worker first)."""
    provisioner_id, worker_type = tq.split("/")

    async def recorded() -> bool:
        try:
            await queue.getWorker(provisioner_id, worker_type, "wg", worker_id)
        except TaskclusterRestFailure:
            return False
        return True

    await poll_until(recorded, what=f"{worker_id}'s claimWork to arrive")


async def _all_polling(queue: taskcluster.aio.Queue, tq: str, count: int) -> None:
    """Until the queue is handling `count` workers' claimWork calls."""
    provisioner_id, worker_type = tq.split("/")

    async def recorded() -> bool:
        listed = await queue.listWorkers(provisioner_id, worker_type, query={"limit": 1000})
        return len(listed["workers"]) >= count

    await poll_until(recorded, timeout_s=30, what=f"{count} claimWork calls to arrive")


async def test_waiting_claim_work_wakes_when_a_task_arrives(push_only: RunningService) -> None:
    tq = new_task_queue_id()
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(push_only.client_options(), session=session)
        waiting = asyncio.create_task(
            queue.claimWork(tq, {"workerGroup": "wg", "workerId": "waiter", "tasks": 1})
        )
        await _polling(queue, tq, "waiter")
        assert not waiting.done()
        task_id = taskcluster.slugId()
        await queue.createTask(task_id, task_definition(tq))
        claims = (await waiting)["tasks"]
    # Only the task-pending event could wake it here (no sweep): otherwise it answers empty.
    assert [c["status"]["taskId"] for c in claims] == [task_id]


async def test_one_task_among_many_waiters_goes_to_exactly_one(
    queue_service: RunningService,
) -> None:
    tq = new_task_queue_id()
    options = queue_service.client_options()
    waiters = 100
    connector = aiohttp.TCPConnector(limit=waiters + 20)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = taskcluster.aio.Queue(options, session=session)
        calls = [
            asyncio.create_task(
                queue.claimWork(tq, {"workerGroup": "wg", "workerId": f"w{i}", "tasks": 1})
            )
            for i in range(waiters)
        ]
        await _all_polling(queue, tq, waiters)
        first = taskcluster.slugId()
        await queue.createTask(first, task_definition(tq))
        done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        assert [c["status"]["taskId"] for c in done.pop().result()["tasks"]] == [first]
        # Everyone else is still waiting; more tasks release them one each.
        rest = [taskcluster.slugId() for _ in range(waiters - 1)]
        for task_id in rest:
            await queue.createTask(task_id, task_definition(tq))
        results = await asyncio.wait_for(asyncio.gather(*calls), 15)
    claimed = [c["status"]["taskId"] for r in results for c in r["tasks"]]
    assert sorted(claimed) == sorted([first, *rest])


async def test_claim_work_returns_empty_after_the_long_poll(
    queue_service: RunningService,
) -> None:
    # The 20 s poll is upstream's; this one test waits it out.
    tq = new_task_queue_id()
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(queue_service.client_options(), session=session)
        started = time.monotonic()
        result = await queue.claimWork(tq, {"workerGroup": "wg", "workerId": "idle"})
        elapsed = time.monotonic() - started
    assert result == {"tasks": []}
    assert 19 < elapsed < 25


async def test_a_poll_whose_client_hung_up_passes_its_wake_up_on(
    push_only: RunningService,
) -> None:
    tq = new_task_queue_id()
    options = push_only.client_options()
    body = {"workerGroup": "wg", "workerId": "gone", "tasks": 1}
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(options, session=session)
        async with taskcluster.aio.createSession() as gone_session:
            gone = taskcluster.aio.Queue(options, session=gone_session)
            abandoned = asyncio.create_task(gone.claimWork(tq, body))
            await _polling(queue, tq, "gone")
            abandoned.cancel()  # the worker gives up; its connection closes with the session
        live = asyncio.create_task(queue.claimWork(tq, {**body, "workerId": "live"}))
        await _polling(queue, tq, "live")
        task_id = taskcluster.slugId()
        await queue.createTask(task_id, task_definition(tq))
        claims = (await live)["tasks"]
    # The hung-up poll was first in line and is only noticed when woken (no periodic
    # check here): it must hand the wake-up on, or the live poll answers empty.
    assert [c["status"]["taskId"] for c in claims] == [task_id]
    status = root_queue(push_only).status(task_id)["status"]
    assert (status["state"], status["runs"][0]["workerId"]) == ("running", "live")


async def test_shutdown_does_not_wait_for_long_polls(tmp_path: Path, settings: Settings) -> None:
    database = f"test_shutdown_{uuid.uuid4().hex[:8]}"
    service, process = launch_queue(tmp_path, database=database)
    try:
        async with taskcluster.aio.createSession() as session:
            queue = taskcluster.aio.Queue(service.client_options(), session=session)
            tq = new_task_queue_id()
            polls = [
                asyncio.create_task(
                    queue.claimWork(tq, {"workerGroup": "wg", "workerId": f"w{i}", "tasks": 1})
                )
                for i in range(3)
            ]
            await _all_polling(queue, tq, 3)
            polls[0].cancel()  # one client already hung up
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            answered = await asyncio.gather(*polls[1:], return_exceptions=True)
            exit_code = await asyncio.to_thread(process.wait, 15)
            stopped_after = time.monotonic() - started
        assert answered == [{"tasks": []}, {"tasks": []}]  # waiting workers get an answer
        assert exit_code == 0
        assert stopped_after < 5  # not the 20 s poll
    finally:
        stop_process(process)
        _drop_database(settings.mongo_url, database)
