"""Task groups through the official client: listing, the fixed schedulerId, sealing,
cancelling and reprioritising a whole group, and the group messages."""

from __future__ import annotations

import uuid

import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from shared.broker import Broker
from tests.conftest import RunningService
from tests.integration.queue_support import (
    claim_one,
    client_with_scopes,
    new_task_queue_id,
    root_queue,
    task_definition,
)
from tests.integration.test_queue_events import PREFIX, subscribe


@pytest.fixture
def queue(queue_service: RunningService) -> taskcluster.Queue:
    return root_queue(queue_service)


def make_group(
    queue: taskcluster.Queue, size: int, **overrides: object
) -> tuple[str, str, list[str]]:
    group, tq = taskcluster.slugId(), new_task_queue_id()
    ids = sorted(taskcluster.slugId() for _ in range(size))
    for task_id in ids:
        queue.createTask(task_id, task_definition(tq, taskGroupId=group, **overrides))
    return group, tq, ids


def code(excinfo: pytest.ExceptionInfo[TaskclusterRestFailure]) -> tuple[int, str]:
    return excinfo.value.status_code, excinfo.value.body["code"]


def test_list_task_group_pages_every_task_in_task_id_order(queue: taskcluster.Queue) -> None:
    group, _tq, ids = make_group(queue, 5, schedulerId="sched-a")
    seen, token = [], None
    while True:
        query = {"limit": 2, **({"continuationToken": token} if token else {})}
        page = queue.listTaskGroup(group, query=query)
        assert page["taskGroupId"] == group and page["schedulerId"] == "sched-a"
        assert "sealed" not in page
        seen += [entry["status"]["taskId"] for entry in page["tasks"]]
        assert all(entry["task"]["taskGroupId"] == group for entry in page["tasks"])
        token = page.get("continuationToken")
        if not token:
            break
    assert seen == ids
    info = queue.getTaskGroup(group)
    assert set(info) == {"taskGroupId", "schedulerId", "expires"}
    # a group outlives its latest task by an hour
    latest = max(queue.task(t)["expires"] for t in ids)
    assert info["expires"] > latest
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.getTaskGroup(taskcluster.slugId())
    assert code(excinfo) == (404, "ResourceNotFound")


def test_scheduler_id_is_fixed_per_group(queue: taskcluster.Queue) -> None:
    group, tq, _ids = make_group(queue, 1, schedulerId="one")
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(
            taskcluster.slugId(), task_definition(tq, taskGroupId=group, schedulerId="two")
        )
    assert code(excinfo) == (409, "RequestConflict")


async def test_sealing_is_idempotent_announced_and_closes_the_group(
    queue: taskcluster.Queue, broker: Broker
) -> None:
    group, tq, _ids = make_group(queue, 2)
    subscriber = await subscribe(
        broker,
        [{"exchange": PREFIX + "task-group-sealed", "routingKeyPattern": f"primary.{group}.#"}],
    )
    first = queue.sealTaskGroup(group)
    assert first["taskGroupId"] == group and "sealed" in first
    again = queue.sealTaskGroup(group)
    assert again["sealed"] == first["sealed"]  # the first seal time is kept
    message = await subscriber.next()
    assert message.routing_key == f"primary.{group}.-._"
    assert message.body["sealed"] == first["sealed"]
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.createTask(taskcluster.slugId(), task_definition(tq, taskGroupId=group))
    assert code(excinfo) == (409, "RequestConflict")


def test_cancel_task_group_needs_a_seal_and_cancels_what_is_unresolved(
    queue: taskcluster.Queue,
) -> None:
    group, tq, ids = make_group(queue, 4)
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        queue.cancelTaskGroup(group)
    assert code(excinfo) == (409, "RequestConflict")
    claim = claim_one(queue, tq)
    done = claim["status"]["taskId"]
    queue.reportCompleted(done, "0")
    queue.sealTaskGroup(group)
    result = queue.cancelTaskGroup(group)
    assert result["taskGroupId"] == group
    assert result["taskGroupSize"] == 4
    assert sorted(result["taskIds"]) == sorted(set(ids) - {done})
    assert result["cancelledCount"] == 3
    states = {t: queue.status(t)["status"]["state"] for t in ids}
    assert states.pop(done) == "completed"
    assert set(states.values()) == {"exception"}


def test_change_task_group_priority_reaches_every_unresolved_task(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    group, tq, ids = make_group(queue, 3, schedulerId="prio")
    done = claim_one(queue, tq)["status"]["taskId"]
    queue.reportCompleted(done, "0")
    scoped = client_with_scopes(queue_service, [f"queue:change-task-group-priority:prio/{group}"])
    result = scoped.changeTaskGroupPriority(group, {"newPriority": "high"})
    assert result["newPriority"] == "high" and result["schedulerId"] == "prio"
    assert result["tasksAffected"] == 2
    assert sorted(result["taskIds"]) == sorted(set(ids) - {done})
    assert {queue.task(t)["priority"] for t in result["taskIds"]} == {"high"}
    assert queue.task(done)["priority"] == "lowest"
    other = client_with_scopes(queue_service, [f"queue:change-task-group-priority:x/{group}"])
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        other.changeTaskGroupPriority(group, {"newPriority": "low"})
    assert code(excinfo) == (403, "InsufficientScopes")


def test_group_endpoints_check_scopes_against_the_group_scheduler(
    queue: taskcluster.Queue, queue_service: RunningService
) -> None:
    group, _tq, _ids = make_group(queue, 1, schedulerId=f"s{uuid.uuid4().hex[:6]}")
    nobody = client_with_scopes(queue_service, [])
    for call in (nobody.sealTaskGroup, nobody.cancelTaskGroup):
        with pytest.raises(TaskclusterRestFailure) as excinfo:
            call(group)
        assert code(excinfo) == (403, "InsufficientScopes")
    # reading a group is the default anonymous role's, as upstream's public deployments
    assert nobody.listTaskGroup(group)["taskGroupId"] == group
