"""Task graphs and lapsed time through the official client, with the real
dependency-resolver and claim-expiry processes running beside the queue."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import taskcluster

from shared.broker import Broker
from shared.config import Settings
from tests.conftest import (
    Platform,
    RunningService,
    _drop_database,
    assert_alive,
    launch_queue,
    launch_service,
    stop_process,
)
from tests.integration.queue_support import (
    claim_one,
    new_task_queue_id,
    root_queue,
    task_definition,
    worker_queue,
)
from tests.integration.test_queue_events import PREFIX, subscribe


def wait_for(probe: Callable[[], Any], *, within_s: float = 10, what: str = "it") -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.02)
    pytest.fail(f"timed out after {within_s}s waiting for {what}")


def state(queue: taskcluster.Queue, task_id: str) -> str:
    return queue.status(task_id)["status"]["state"]


def complete(queue: taskcluster.Queue, service: RunningService, tq: str, task_id: str) -> None:
    """Claim (the only pending task of `tq` must be `task_id`) and complete it."""
    claim = claim_one(queue, tq)
    assert claim["status"]["taskId"] == task_id
    worker_queue(service, claim).reportCompleted(task_id, str(claim["runId"]))


def resolver_caught_up(queue: taskcluster.Queue, service: RunningService) -> None:
    """Wait until the resolver has handled every resolution published so far: one more
    resolution, with a dependent of its own, goes through the same FIFO queue behind
    them, so once its dependent is pending the earlier ones were handled too (instead
    of sleeping and hoping "nothing happened" means the resolver looked)."""
    tq = new_task_queue_id()
    sentinel, dependent = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(sentinel, task_definition(tq))
    queue.createTask(dependent, task_definition(tq, dependencies=[sentinel]))
    complete(queue, service, tq, sentinel)
    wait_for(lambda: state(queue, dependent) == "pending", what="the resolver to catch up")


@pytest.fixture
def queue(platform: Platform) -> taskcluster.Queue:
    return root_queue(platform.queue)


def test_a_chain_runs_in_order(queue: taskcluster.Queue, platform: Platform) -> None:
    tq = new_task_queue_id()
    a, b, c = (taskcluster.slugId() for _ in range(3))
    queue.createTask(a, task_definition(tq))
    queue.createTask(b, task_definition(tq, dependencies=[a]))
    queue.createTask(c, task_definition(tq, dependencies=[b]))
    for task_id, after in ((a, b), (b, c)):
        assert state(queue, after) == "unscheduled"
        complete(queue, platform.queue, tq, task_id)
        wait_for(lambda after=after: state(queue, after) == "pending", what=f"{after} pending")
    complete(queue, platform.queue, tq, c)
    assert state(queue, c) == "completed"


def test_a_diamond_waits_for_both_sides(queue: taskcluster.Queue, platform: Platform) -> None:
    tq = new_task_queue_id()
    top, left, right, bottom = (taskcluster.slugId() for _ in range(4))
    queue.createTask(top, task_definition(tq))
    queue.createTask(left, task_definition(tq, dependencies=[top]))
    queue.createTask(right, task_definition(tq, dependencies=[top]))
    queue.createTask(bottom, task_definition(tq, dependencies=[left, right]))
    complete(queue, platform.queue, tq, top)
    wait_for(lambda: state(queue, left) == state(queue, right) == "pending", what="both sides")
    first = claim_one(queue, tq)
    worker_queue(platform.queue, first).reportCompleted(first["status"]["taskId"], "0")
    resolver_caught_up(queue, platform.queue)
    assert state(queue, bottom) == "unscheduled"  # one side is not enough
    second = claim_one(queue, tq)
    worker_queue(platform.queue, second).reportCompleted(second["status"]["taskId"], "0")
    wait_for(lambda: state(queue, bottom) == "pending", what="bottom pending")


def test_a_failed_dependency_satisfies_only_all_resolved(
    queue: taskcluster.Queue, platform: Platform
) -> None:
    tq, other = new_task_queue_id(), new_task_queue_id()
    failing = taskcluster.slugId()
    queue.createTask(failing, task_definition(tq))
    strict, lenient = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(strict, task_definition(other, dependencies=[failing]))
    queue.createTask(
        lenient, task_definition(other, dependencies=[failing], requires="all-resolved")
    )
    claim = claim_one(queue, tq)
    worker_queue(platform.queue, claim).reportFailed(failing, "0")
    wait_for(lambda: state(queue, lenient) == "pending", what="all-resolved dependent")
    assert state(queue, strict) == "unscheduled"  # waits for its own deadline


def test_cancelling_a_dependency_resolves_it_for_all_resolved_dependents(
    queue: taskcluster.Queue,
) -> None:
    tq = new_task_queue_id()
    required, dependent = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(required, task_definition(tq, dependencies=[required]))  # never runs
    queue.createTask(
        dependent, task_definition(tq, dependencies=[required], requires="all-resolved")
    )
    queue.cancelTask(required)
    wait_for(lambda: state(queue, dependent) == "pending", what="dependent pending")


def test_a_retried_run_is_not_a_resolution(queue: taskcluster.Queue, platform: Platform) -> None:
    tq, other = new_task_queue_id(), new_task_queue_id()
    required, dependent = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(required, task_definition(tq))
    queue.createTask(
        dependent, task_definition(other, dependencies=[required], requires="all-resolved")
    )
    claim = claim_one(queue, tq)
    worker_queue(platform.queue, claim).reportException(
        required, "0", {"reason": "worker-shutdown"}
    )
    resolver_caught_up(queue, platform.queue)
    assert state(queue, dependent) == "unscheduled"
    complete(queue, platform.queue, tq, required)
    wait_for(lambda: state(queue, dependent) == "pending", what="dependent pending")


def test_fan_out_and_fan_in(queue: taskcluster.Queue, platform: Platform) -> None:
    tq, middle_tq, sink_tq = new_task_queue_id(), new_task_queue_id(), new_task_queue_id()
    root, sink = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(root, task_definition(tq))
    middle = [taskcluster.slugId() for _ in range(30)]
    for task_id in middle:
        queue.createTask(task_id, task_definition(middle_tq, dependencies=[root]))
    queue.createTask(sink, task_definition(sink_tq, dependencies=middle))
    complete(queue, platform.queue, tq, root)
    wait_for(lambda: queue.pendingTasks(middle_tq)["pendingTasks"] == len(middle), what="fan-out")
    done = 0
    while done < len(middle):
        claims = queue.claimWork(middle_tq, {"workerGroup": "wg", "workerId": "w", "tasks": 8})
        for claim in claims["tasks"]:
            queue.reportCompleted(claim["status"]["taskId"], "0")
            done += 1
        if done < len(middle):
            assert state(queue, sink) == "unscheduled"
    wait_for(lambda: state(queue, sink) == "pending", what="fan-in")


def test_a_wide_fan_in_counts_in_shards(queue: taskcluster.Queue, platform: Platform) -> None:
    # 150 dependencies: counted in wait shards of at most ~64. A third complete before
    # the sink exists (createTask counts them), the rest after (the resolver does).
    tq, sink_tq = new_task_queue_id(), new_task_queue_id()
    ids = [taskcluster.slugId() for _ in range(150)]
    for task_id in ids:
        queue.createTask(task_id, task_definition(tq))
    drain_completing(queue, tq, 50)
    sink = taskcluster.slugId()
    queue.createTask(sink, task_definition(sink_tq, dependencies=ids))
    assert state(queue, sink) == "unscheduled"
    listed = queue.listDependentTasks(ids[-1])["tasks"]
    assert [task["status"]["taskId"] for task in listed] == [sink]
    drain_completing(queue, tq, 99)
    resolver_caught_up(queue, platform.queue)
    assert state(queue, sink) == "unscheduled", "one dependency is still running"
    drain_completing(queue, tq, 1)
    wait_for(lambda: state(queue, sink) == "pending", what="the wide fan-in's sink")
    # The sink's long dependency list is stored apart from its hot document; every
    # answer that shows the definition still shows all of it, in the order given.
    assert queue.task(sink)["dependencies"] == ids
    assert queue.tasks({"taskIds": [sink]})["tasks"][0]["task"]["dependencies"] == ids
    assert listed[0]["task"]["dependencies"] == ids
    group = queue.listTaskGroup(sink)["tasks"]
    assert [t["task"]["dependencies"] for t in group] == [ids]
    assert queue.listPendingTasks(sink_tq)["tasks"][0]["task"]["dependencies"] == ids
    repeated = task_definition(sink_tq, dependencies=ids)
    repeated.update({k: v for k, v in queue.task(sink).items() if k in ("created", "deadline")})
    assert queue.createTask(sink, repeated)["status"]["taskId"] == sink
    with pytest.raises(taskcluster.TaskclusterRestFailure) as conflict:
        queue.createTask(sink, {**repeated, "dependencies": ids[:-1]})
    assert conflict.value.status_code == 409
    claim = claim_one(queue, sink_tq)
    assert claim["task"]["dependencies"] == ids


def drain_completing(queue: taskcluster.Queue, tq: str, count: int) -> None:
    done = 0
    while done < count:
        body = {"workerGroup": "wg", "workerId": "w", "tasks": min(32, count - done)}
        for claim in queue.claimWork(tq, body)["tasks"]:
            queue.reportCompleted(claim["status"]["taskId"], "0")
            done += 1


async def test_task_group_resolved_is_announced(
    queue: taskcluster.Queue, platform: Platform, broker: Broker
) -> None:
    tq = new_task_queue_id()
    group = taskcluster.slugId()
    subscriber = await subscribe(
        broker,
        [{"exchange": PREFIX + "task-group-resolved", "routingKeyPattern": f"primary.{group}.#"}],
    )
    first, second = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(first, task_definition(tq, taskGroupId=group))
    queue.createTask(second, task_definition(tq, taskGroupId=group, dependencies=[first]))
    complete(queue, platform.queue, tq, first)
    wait_for(lambda: state(queue, second) == "pending", what="second pending")
    complete(queue, platform.queue, tq, second)
    message = await subscriber.next(within_s=10)
    assert message.body["taskGroupId"] == group
    assert message.routing_key == f"primary.{group}.-._"


# --- time running out: a platform of its own with 2-second claims ----------------------


@pytest.fixture(scope="module")
def short_claims(
    tmp_path_factory: pytest.TempPathFactory, settings: Settings
) -> Iterator[Platform]:
    directory = tmp_path_factory.mktemp("short-claims")
    database = f"test_expiry_{uuid.uuid4().hex[:8]}"
    env = {"FLOTILLA_CLAIM_TIMEOUT": "2"}
    service, queue_process = launch_queue(directory, database=database, extra_env=env)
    processes = {"queue": queue_process}
    try:
        for name in ("dependency_resolver", "claim_expiry"):
            processes[name] = launch_service(name, directory, database=database, extra_env=env)
        yield Platform(service, processes)
    finally:
        for process in processes.values():
            stop_process(process)
        _drop_database(settings.mongo_url, database)


def log_events(process: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """The JSON log events a launched service wrote so far (its stdout is its log file)."""
    path = Path(os.readlink(f"/proc/{process.pid}/fd/1"))
    lines = path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _ms_after(later: str, earlier: str) -> float:
    delta = datetime.datetime.fromisoformat(later) - datetime.datetime.fromisoformat(earlier)
    return delta.total_seconds() * 1000


def test_an_expired_claim_is_retried_promptly(short_claims: Platform) -> None:
    queue = root_queue(short_claims.queue)
    tq = new_task_queue_id()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, retries=1))
    claim = claim_one(queue, tq)
    status = wait_for(
        lambda: (s := queue.status(task_id)["status"])["runs"][0]["state"] == "exception" and s,
        within_s=6,
        what="claim expiry",
    )
    first, retry = status["runs"]
    assert first["reasonResolved"] == "claim-expired"
    assert retry["reasonCreated"] == "retry" and retry["state"] == "pending"
    assert status["retriesLeft"] == 0
    # order, not speed (bench/w4_precision measures how late): never before it lapsed
    assert _ms_after(first["resolved"], claim["takenUntil"]) >= 0
    # claim-expiry logs the step, with the run it resolved (just after storing it)
    wait_for(
        lambda: any(
            event.get("message") == "task resolved"
            and (event.get("taskId"), event.get("runId"), event.get("reason"))
            == (task_id, 0, "claim-expired")
            for event in log_events(short_claims.processes["claim_expiry"])
        ),
        what="claim-expiry's task-resolved event",
    )
    # the worker that lost its claim is told so
    with pytest.raises(taskcluster.exceptions.TaskclusterRestFailure) as excinfo:
        worker_queue(short_claims.queue, claim).reportCompleted(task_id, "0")
    assert excinfo.value.status_code == 409


def test_a_dependency_completed_before_any_resolver_ran_still_counts(
    tmp_path: Path, settings: Settings
) -> None:
    # A new deployment whose resolver has not started yet: the queue has declared the
    # resolver's queue, so the completion waits there instead of being dropped.
    database = f"test_early_{uuid.uuid4().hex[:8]}"
    service, queue_process = launch_queue(tmp_path, database=database)
    resolver = None
    try:
        queue = root_queue(service)
        tq, later_tq = new_task_queue_id(), new_task_queue_id()
        first, second = taskcluster.slugId(), taskcluster.slugId()
        queue.createTask(first, task_definition(tq))
        queue.createTask(second, task_definition(later_tq, dependencies=[first]))
        complete(queue, service, tq, first)
        time.sleep(0.5)
        assert state(queue, second) == "unscheduled"
        resolver = launch_service("dependency_resolver", tmp_path, database=database)
        wait_for(lambda: state(queue, second) == "pending", what="the dependent scheduled")
    finally:
        for process in (resolver, queue_process):
            if process is not None:
                stop_process(process)
        _drop_database(settings.mongo_url, database)


def test_a_burst_of_lapsed_claims_larger_than_a_batch_is_expired_promptly(
    short_claims: Platform,
) -> None:
    # More claims lapse together than claim-expiry reads in one batch (100): the rest
    # must follow at once, not wait for the next task-running event or the 30 s timer.
    queue = root_queue(short_claims.queue)
    tq = new_task_queue_id()
    ids = [taskcluster.slugId() for _ in range(256)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: queue.createTask(t, task_definition(tq, retries=0)), ids))
        body = {"workerGroup": "wg", "workerId": "w", "tasks": 32}
        # Claimed together, so they lapse together: more than a batch at once.
        held = [
            c for r in pool.map(lambda _: queue.claimWork(tq, body), range(8)) for c in r["tasks"]
        ]
    assert len(held) == len(ids)
    taken_until = {claim["status"]["taskId"]: claim["takenUntil"] for claim in held}

    def all_expired() -> list[dict[str, Any]] | None:
        statuses = [s["status"] for s in queue.statuses({"taskIds": ids})["statuses"]]
        return statuses if all(s["state"] == "exception" for s in statuses) else None

    statuses = wait_for(all_expired, within_s=20, what="every lapsed claim expired")
    assert {s["runs"][0]["reasonResolved"] for s in statuses} == {"claim-expired"}
    # order, not speed (bench/w4_precision measures how late): none before its claim lapsed
    assert all(_ms_after(s["runs"][0]["resolved"], taken_until[s["taskId"]]) >= 0 for s in statuses)


def test_without_retries_an_expired_claim_resolves_the_task_for_dependents(
    short_claims: Platform,
) -> None:
    queue = root_queue(short_claims.queue)
    tq, other = new_task_queue_id(), new_task_queue_id()
    task_id, dependent = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, retries=0))
    queue.createTask(
        dependent, task_definition(other, dependencies=[task_id], requires="all-resolved")
    )
    claim_one(queue, tq)
    wait_for(lambda: state(queue, task_id) == "exception", within_s=6, what="expiry")
    assert len(queue.status(task_id)["status"]["runs"]) == 1
    wait_for(lambda: state(queue, dependent) == "pending", what="dependent pending")


def test_a_reclaim_beats_the_expiry(short_claims: Platform) -> None:
    queue = root_queue(short_claims.queue)
    tq = new_task_queue_id()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    claim = claim_one(queue, tq)
    worker = worker_queue(short_claims.queue, claim)
    for _ in range(3):  # keep reclaiming past several of the original expiry times
        time.sleep(1.0)
        claim = worker.reclaimTask(task_id, "0")
        worker = worker_queue(short_claims.queue, claim)
    status = worker.reportCompleted(task_id, "0")["status"]
    assert [r["state"] for r in status["runs"]] == ["completed"]
    # a dead claim-expiry would have expired nothing: the test proves only while it runs
    assert_alive(short_claims.processes["claim_expiry"], "claim-expiry")


def test_deadlines_resolve_unscheduled_pending_and_running_tasks(
    short_claims: Platform, broker: Broker
) -> None:
    queue = root_queue(short_claims.queue)
    tq = new_task_queue_id()
    unscheduled, pending_, running = (taskcluster.slugId() for _ in range(3))
    deadline = taskcluster.fromNowJSON("3 seconds")
    queue.createTask(running, task_definition(tq, deadline=deadline))
    claim = claim_one(queue, tq)
    worker = worker_queue(short_claims.queue, claim)
    queue.createTask(pending_, task_definition(tq, deadline=deadline))
    queue.createTask(
        unscheduled, task_definition(tq, deadline=deadline, dependencies=[unscheduled])
    )
    worker.reclaimTask(running, "0")  # keep the claim alive past the deadline
    for task_id in (unscheduled, pending_, running):
        status = wait_for(
            lambda t=task_id: (s := queue.status(t)["status"])["state"] == "exception" and s,
            within_s=8,
            what=f"deadline of {task_id}",
        )
        run = status["runs"][-1]
        assert run["reasonResolved"] == "deadline-exceeded"
        assert _ms_after(run["resolved"], status["deadline"]) >= 0  # never before it
    assert queue.status(unscheduled)["status"]["runs"][0]["reasonCreated"] == "exception"
    assert queue.pendingTasks(tq)["pendingTasks"] == 0


def test_services_stop_cleanly(short_claims: Platform, tmp_path: Path) -> None:
    for name in ("dependency_resolver", "claim_expiry"):
        # launch_service returns once the service logged that its loops run
        process = launch_service(name, tmp_path, database=short_claims.queue.mongo_db)
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_a_loop_that_keeps_failing_exits_70(settings: Settings, tmp_path: Path) -> None:
    import pymongo

    database = f"test_poison_{uuid.uuid4().hex[:8]}"
    with pymongo.MongoClient(settings.mongo_url) as client:
        # a deadline cursor no code can read: every pass of the deadline reaper fails
        client[database]["deadlines"].insert_one({"_id": "cursor", "next": "garbage"})
    process = None
    try:
        process = launch_service(
            "claim_expiry",
            tmp_path,
            database=database,
            extra_env={"FLOTILLA_LOOP_FAILURES": "3", "FLOTILLA_LOOP_FAILING": "0"},
        )
        assert process.wait(timeout=60) == 70
        events = [json.loads(line) for line in _log_of(tmp_path, "claim_expiry")]
        failed = [e for e in events if e.get("loop") == "deadline reaper" and e.get("ok") is False]
        assert len(failed) == 3
        assert any(e["level"] == "critical" and e.get("loop") == "deadline reaper" for e in events)
    finally:
        if process is not None and process.poll() is None:
            stop_process(process)
        _drop_database(settings.mongo_url, database)


def _log_of(directory: Path, module: str) -> list[str]:
    (path,) = directory.glob(f"{module}-*.log")
    return [line for line in path.read_text().splitlines() if line.startswith("{")]
