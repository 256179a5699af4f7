"""Pulse message builders (reference §8): bodies, routing keys and CC routes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import events
from shared.models import Run, TaskDefinition, status_for

NOW = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
TAKEN_UNTIL = NOW + timedelta(minutes=20)
TASK_ID = "TTR4beUaR6yOkGBO7Pdd5A"
GROUP_ID = "TsRmPap7S6O4Oat12x628g"


def definition(**overrides: Any) -> TaskDefinition:
    body: dict[str, Any] = {
        "taskQueueId": "my-prov/my-wt",
        "schedulerId": "tc-ci",
        "taskGroupId": GROUP_ID,
        "routes": ["index.a.b.c", "tc-treeherder.v2.x"],
        "created": "2025-01-02T03:04:05.678Z",
        "deadline": "2025-01-03T03:04:05.678Z",
        "payload": {},
        "metadata": {"name": "n", "description": "d", "owner": "o", "source": "https://x"},
        "tags": {"a": "1", "b": "2"},
    }
    body.update(overrides)
    return TaskDefinition.model_validate(body)


TASK = definition()
CC = ("route.index.a.b.c", "route.tc-treeherder.v2.x")


def pending_run(run_id: int = 0) -> Run:
    return Run(runId=run_id, state="pending", reasonCreated="scheduled", scheduled=NOW)


def running_run(run_id: int = 0) -> Run:
    return Run(
        runId=run_id,
        state="running",
        reasonCreated="scheduled",
        workerGroup="wg-1",
        workerId="worker-7",
        takenUntil=TAKEN_UNTIL,
        scheduled=NOW,
        started=NOW,
    )


def finished_run(state: str, reason: str, *, claimed: bool = True) -> Run:
    worker: dict[str, Any] = (
        {"workerGroup": "wg-1", "workerId": "worker-7", "takenUntil": TAKEN_UNTIL, "started": NOW}
        if claimed
        else {}
    )
    return Run(
        runId=0,
        state=state,
        reasonCreated="scheduled",
        reasonResolved=reason,
        scheduled=NOW,
        resolved=NOW,
        **worker,
    )


def status(*runs: Run, task: TaskDefinition = TASK) -> Any:
    return status_for(TASK_ID, task, runs)


PREFIX = f"primary.{TASK_ID}"
SUFFIX = f"my-prov.my-wt.tc-ci.{GROUP_ID}._"


def test_ts_is_upstream_form() -> None:
    assert events.ts(NOW) == "2025-01-02T03:04:05.678Z"
    assert events.ts(datetime(2025, 1, 2, tzinfo=UTC)) == "2025-01-02T00:00:00.000Z"


def test_task_defined() -> None:
    message = events.task_defined(status(), TASK)
    assert message.event == "task-defined"
    assert message.routing_key == f"{PREFIX}._._._.{SUFFIX}"
    assert message.cc == CC
    assert message.body == {
        "version": 1,
        "status": {
            "taskId": TASK_ID,
            "provisionerId": "my-prov",
            "workerType": "my-wt",
            "taskQueueId": "my-prov/my-wt",
            "schedulerId": "tc-ci",
            "projectId": "none",
            "taskGroupId": GROUP_ID,
            "priority": "lowest",
            "deadline": "2025-01-03T03:04:05.678Z",
            "expires": "2026-01-03T03:04:05.678Z",
            "retriesLeft": 5,
            "state": "unscheduled",
            "runs": [],
        },
        "task": {"tags": {"a": "1", "b": "2"}},
    }


def test_task_pending() -> None:
    snapshot = status(finished_run("exception", "worker-shutdown"), pending_run(1))
    message = events.task_pending(snapshot, 1, TASK)
    assert message.event == "task-pending"
    assert message.routing_key == f"{PREFIX}.1._._.{SUFFIX}"
    assert message.cc == CC
    assert message.body == {
        "version": 1,
        "status": snapshot.to_output(),
        "runId": 1,
        "task": {"tags": {"a": "1", "b": "2"}},
    }
    assert message.body["status"]["state"] == "pending"


def test_task_running() -> None:
    run = running_run()
    message = events.task_running(status(run), run, TASK)
    assert message.event == "task-running"
    assert message.routing_key == f"{PREFIX}.0.wg-1.worker-7.{SUFFIX}"
    assert message.cc == CC
    assert message.body == {
        "version": 1,
        "status": status(run).to_output(),
        "runId": 0,
        "workerGroup": "wg-1",
        "workerId": "worker-7",
        "takenUntil": "2025-01-02T03:24:05.678Z",
        "task": {"tags": {"a": "1", "b": "2"}},
    }
    assert message.body["status"]["runs"][0] == {
        "runId": 0,
        "state": "running",
        "reasonCreated": "scheduled",
        "workerGroup": "wg-1",
        "workerId": "worker-7",
        "takenUntil": "2025-01-02T03:24:05.678Z",
        "scheduled": "2025-01-02T03:04:05.678Z",
        "started": "2025-01-02T03:04:05.678Z",
    }


@pytest.mark.parametrize("state", ["completed", "failed"])
def test_task_completed_and_failed(state: str) -> None:
    run = finished_run(state, state)
    message = events.task_resolved(status(run), run, TASK)
    assert message.event == f"task-{state}"
    assert message.routing_key == f"{PREFIX}.0.wg-1.worker-7.{SUFFIX}"
    assert message.cc == CC
    assert message.body == {
        "version": 1,
        "status": status(run).to_output(),
        "runId": 0,
        "task": {"tags": {"a": "1", "b": "2"}},
        "workerGroup": "wg-1",
        "workerId": "worker-7",
    }
    assert message.body["status"]["state"] == state


def test_task_exception_with_worker() -> None:
    run = finished_run("exception", "malformed-payload")
    message = events.task_exception(status(run), run, TASK, with_worker=True)
    assert message.event == "task-exception"
    assert message.routing_key == f"{PREFIX}.0.wg-1.worker-7.{SUFFIX}"
    assert message.body == {
        "version": 1,
        "status": status(run).to_output(),
        "runId": 0,
        "task": {"tags": {"a": "1", "b": "2"}},
        "workerGroup": "wg-1",
        "workerId": "worker-7",
    }


def test_task_exception_without_worker_leaves_slots_empty() -> None:
    # The deadline resolver: the run had a worker, but the message does not name it.
    run = finished_run("exception", "deadline-exceeded")
    message = events.task_exception(status(run), run, TASK, with_worker=False)
    assert message.routing_key == f"{PREFIX}.0._._.{SUFFIX}"
    assert message.body == {
        "version": 1,
        "status": status(run).to_output(),
        "runId": 0,
        "task": {"tags": {"a": "1", "b": "2"}},
    }
    # ... while the status still shows who held the run.
    assert message.body["status"]["runs"][0]["workerGroup"] == "wg-1"


def test_task_exception_of_a_never_claimed_run_has_no_worker_even_if_asked() -> None:
    run = finished_run("exception", "canceled", claimed=False)
    message = events.task_exception(status(run), run, TASK, with_worker=True)
    assert message.routing_key == f"{PREFIX}.0._._.{SUFFIX}"
    assert "workerGroup" not in message.body and "workerId" not in message.body
    assert message.body["status"]["runs"][0] == {
        "runId": 0,
        "state": "exception",
        "reasonCreated": "scheduled",
        "reasonResolved": "canceled",
        "scheduled": "2025-01-02T03:04:05.678Z",
        "resolved": "2025-01-02T03:04:05.678Z",
    }


def test_task_priority_changed_has_no_run_in_its_key() -> None:
    run = running_run()
    snapshot = status(run, task=definition(priority="high"))
    message = events.task_priority_changed(snapshot, TASK, "lowest", "high")
    assert message.event == "task-priority-changed"
    assert message.routing_key == f"{PREFIX}._._._.{SUFFIX}"
    assert message.cc == CC
    assert message.body == {
        "version": 1,
        "status": snapshot.to_output(),
        "oldPriority": "lowest",
        "newPriority": "high",
    }


def test_a_task_without_routes_has_no_cc() -> None:
    task = definition(routes=[])
    assert events.task_defined(status(task=task), task).cc == ()
    run = running_run()
    assert events.task_running(status(run, task=task), run, task).cc == ()


def test_routes_with_dots_only_appear_in_cc() -> None:
    task = definition(routes=["index.x.y.z"])
    message = events.task_pending(status(pending_run(), task=task), 0, task)
    assert message.cc == ("route.index.x.y.z",)
    assert "index" not in message.routing_key


def test_cc_follows_the_task_given_to_the_builder() -> None:
    # One CC key per route, in route order.
    task = definition(routes=["b", "a", "c.d"])
    message = events.task_defined(status(task=task), task)
    assert message.cc == ("route.b", "route.a", "route.c.d")


def test_default_ids_appear_in_the_routing_key() -> None:
    task = definition(schedulerId="-", taskGroupId=None)
    snapshot = status(task=task)  # the group defaults to the taskId
    message = events.task_defined(snapshot, task)
    assert message.routing_key == f"{PREFIX}._._._.my-prov.my-wt.-.{TASK_ID}._"


def test_tags_are_copied_not_shared() -> None:
    message = events.task_defined(status(), TASK)
    message.body["task"]["tags"]["c"] = "3"
    assert TASK.tags == {"a": "1", "b": "2"}


def test_messages_are_frozen() -> None:
    message = events.task_defined(status(), TASK)
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.routing_key = "x"  # type: ignore[misc]


# --- task-group messages ----------------------------------------------------------------

GROUP = {"_id": GROUP_ID, "schedulerId": "tc-ci", "expires": NOW + timedelta(days=365)}


@pytest.mark.parametrize(
    ("builder", "event"),
    [
        (events.task_group_resolved, "task-group-resolved"),
        (events.task_group_sealed, "task-group-sealed"),
    ],
)
def test_group_messages(builder: Any, event: str) -> None:
    message = builder(GROUP)
    assert message.event == event
    assert message.routing_key == f"primary.{GROUP_ID}.tc-ci._"
    assert message.cc == ()
    assert message.body == {
        "version": 1,
        "taskGroupId": GROUP_ID,
        "schedulerId": "tc-ci",
        "expires": "2026-01-02T03:04:05.678Z",
    }


def test_group_messages_carry_sealed_when_set() -> None:
    message = events.task_group_sealed({**GROUP, "sealed": NOW})
    assert message.body["sealed"] == "2025-01-02T03:04:05.678Z"
    assert events.task_group_info({**GROUP, "sealed": None}) == {
        "expires": "2026-01-02T03:04:05.678Z"
    }


def test_group_priority_changed() -> None:
    message = events.task_group_priority_changed(GROUP_ID, "-", "very-high", 17)
    assert message.event == "task-group-priority-changed"
    assert message.routing_key == f"primary.{GROUP_ID}.-._"
    assert message.cc == ()
    assert message.body == {
        "version": 1,
        "taskGroupId": GROUP_ID,
        "schedulerId": "-",
        "newPriority": "very-high",
        "tasksAffected": 17,
    }
