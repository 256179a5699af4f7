"""The queue's Pulse messages (reference §8): bodies, routing keys and CC routes. Pure.

A `Message` is what the outbox stores and the broker publishes; building one never needs
I/O, so every transition can say exactly which messages it implies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.models import Run, TaskDefinition, TaskStatus
from shared.routing import cc_routes, task_group_routing_key, task_routing_key
from shared.timeutil import format_ts


@dataclass(frozen=True)
class Message:
    event: str  # exchange suffix, e.g. "task-pending"
    routing_key: str
    body: dict[str, Any]
    cc: tuple[str, ...] = field(default=())


def ts(value: datetime) -> str:
    return format_ts(value)


def _task_key(status: TaskStatus, run: Run | None = None, *, with_worker: bool = True) -> str:
    return task_routing_key(
        task_id=status.taskId,
        run_id=run.runId if run is not None else None,
        worker_group=run.workerGroup if run is not None and with_worker else None,
        worker_id=run.workerId if run is not None and with_worker else None,
        provisioner_id=status.provisionerId,
        worker_type=status.workerType,
        scheduler_id=status.schedulerId,
        task_group_id=status.taskGroupId,
    )


def _task_message(
    event: str,
    status: TaskStatus,
    task: TaskDefinition,
    run: Run | None,
    body: dict[str, Any],
    *,
    with_worker: bool = True,
) -> Message:
    full = {"version": 1, "status": status.to_output(), **body}
    return Message(
        event, _task_key(status, run, with_worker=with_worker), full, tuple(cc_routes(task.routes))
    )


def _tags(task: TaskDefinition) -> dict[str, Any]:
    return {"tags": dict(task.tags)}


def task_defined(status: TaskStatus, task: TaskDefinition) -> Message:
    return _task_message("task-defined", status, task, None, {"task": _tags(task)})


def task_pending(status: TaskStatus, run_id: int, task: TaskDefinition) -> Message:
    run = status.runs[run_id]
    return _task_message(
        "task-pending", status, task, run, {"runId": run_id, "task": _tags(task)}, with_worker=False
    )


def task_running(status: TaskStatus, run: Run, task: TaskDefinition) -> Message:
    assert run.takenUntil is not None
    body = {
        "runId": run.runId,
        "workerGroup": run.workerGroup,
        "workerId": run.workerId,
        "takenUntil": ts(run.takenUntil),
        "task": _tags(task),
    }
    return _task_message("task-running", status, task, run, body)


def task_resolved(status: TaskStatus, run: Run, task: TaskDefinition) -> Message:
    """task-completed or task-failed, by the run's state."""
    body = {
        "runId": run.runId,
        "task": _tags(task),
        "workerGroup": run.workerGroup,
        "workerId": run.workerId,
    }
    return _task_message(f"task-{run.state}", status, task, run, body)


def task_exception(
    status: TaskStatus, run: Run, task: TaskDefinition, *, with_worker: bool
) -> Message:
    body: dict[str, Any] = {"runId": run.runId, "task": _tags(task)}
    worker = with_worker and run.workerGroup is not None
    if worker:
        body["workerGroup"] = run.workerGroup
        body["workerId"] = run.workerId
    return _task_message("task-exception", status, task, run, body, with_worker=worker)


def artifact_created(
    status: TaskStatus, run: Run, task: TaskDefinition, artifact: dict[str, Any]
) -> Message:
    body = {
        "runId": run.runId,
        "workerGroup": run.workerGroup,
        "workerId": run.workerId,
        "artifact": artifact,
    }
    return _task_message("artifact-created", status, task, run, body)


def task_priority_changed(status: TaskStatus, task: TaskDefinition, old: str, new: str) -> Message:
    body = {"oldPriority": old, "newPriority": new}
    return _task_message("task-priority-changed", status, task, None, body)


def _group_message(
    event: str, task_group_id: str, scheduler_id: str, body: dict[str, Any]
) -> Message:
    key = task_group_routing_key(task_group_id=task_group_id, scheduler_id=scheduler_id)
    return Message(
        event,
        key,
        {"version": 1, "taskGroupId": task_group_id, "schedulerId": scheduler_id, **body},
    )


def task_group_info(group: dict[str, Any]) -> dict[str, Any]:
    """`{expires, sealed?}` of a stored group, in wire form."""
    info: dict[str, Any] = {"expires": ts(group["expires"])}
    if group.get("sealed") is not None:
        info["sealed"] = ts(group["sealed"])
    return info


def task_group_sealed(group: dict[str, Any]) -> Message:
    return _group_message(
        "task-group-sealed", group["_id"], group["schedulerId"], task_group_info(group)
    )


def task_group_resolved(group: dict[str, Any]) -> Message:
    return _group_message(
        "task-group-resolved", group["_id"], group["schedulerId"], task_group_info(group)
    )


def task_group_priority_changed(
    task_group_id: str, scheduler_id: str, new_priority: str, tasks_affected: int
) -> Message:
    body = {"newPriority": new_priority, "tasksAffected": tasks_affected}
    return _group_message("task-group-priority-changed", task_group_id, scheduler_id, body)
