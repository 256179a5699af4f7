"""Task status and runs (reference §2), shaped exactly like upstream's `task-status` schema.

Unset optional run fields are omitted from every dump (never null) and `state` is derived
from the last run, so a stored status can never disagree with its own runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, computed_field, model_validator
from pydantic.functional_validators import ModelWrapValidatorHandler

from shared.models.common import (
    Identifier,
    Priority,
    ProjectId,
    ProvisionerId,
    RunId,
    Slugid,
    TaskQueueId,
    Timestamp,
    WireModel,
    WorkerType,
)
from shared.models.task import TaskDefinition

__all__ = [
    "MAX_RETRIES_LEFT",
    "ExceptionReason",
    "ReasonCreated",
    "ReasonResolved",
    "Run",
    "RunState",
    "TaskState",
    "TaskStatus",
    "status_for",
]

MAX_RETRIES_LEFT = 999


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    EXCEPTION = "exception"


class TaskState(StrEnum):
    UNSCHEDULED = "unscheduled"  # no runs yet
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    EXCEPTION = "exception"


class ReasonCreated(StrEnum):
    SCHEDULED = "scheduled"
    RETRY = "retry"  # after claim-expired or worker-shutdown
    TASK_RETRY = "task-retry"  # after intermittent-task
    RERUN = "rerun"
    EXCEPTION = "exception"  # synthetic run 0 of a task cancelled or expired with no runs


class ReasonResolved(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    DEADLINE_EXCEEDED = "deadline-exceeded"
    CANCELED = "canceled"
    SUPERSEDED = "superseded"  # never produced now; stays valid so old data still loads
    CLAIM_EXPIRED = "claim-expired"
    WORKER_SHUTDOWN = "worker-shutdown"
    MALFORMED_PAYLOAD = "malformed-payload"
    RESOURCE_UNAVAILABLE = "resource-unavailable"
    INTERNAL_ERROR = "internal-error"
    INTERMITTENT_TASK = "intermittent-task"


class ExceptionReason(StrEnum):
    """The reasons reportException accepts (`superseded` is not one of them)."""

    WORKER_SHUTDOWN = "worker-shutdown"
    MALFORMED_PAYLOAD = "malformed-payload"
    RESOURCE_UNAVAILABLE = "resource-unavailable"
    INTERNAL_ERROR = "internal-error"
    INTERMITTENT_TASK = "intermittent-task"


# Plain strings in dumps (MongoDB documents, JSON) while the members still compare equal.
_STATUS_CONFIG = ConfigDict(extra="forbid", use_enum_values=True)


class Run(WireModel):
    model_config = _STATUS_CONFIG

    runId: RunId
    state: RunState
    reasonCreated: ReasonCreated
    reasonResolved: ReasonResolved | None = None
    workerGroup: Identifier | None = None
    workerId: Identifier | None = None
    takenUntil: Timestamp | None = None
    scheduled: Timestamp
    started: Timestamp | None = None
    resolved: Timestamp | None = None

    def to_output(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


_OPEN_STATES = (RunState.PENDING, RunState.RUNNING)


class TaskStatus(WireModel):
    model_config = _STATUS_CONFIG

    taskId: Slugid
    provisionerId: ProvisionerId
    workerType: WorkerType
    taskQueueId: TaskQueueId
    schedulerId: Identifier
    projectId: ProjectId
    taskGroupId: Slugid
    priority: Priority
    deadline: Timestamp
    expires: Timestamp
    retriesLeft: Annotated[int, Field(strict=True, ge=0, le=MAX_RETRIES_LEFT)]
    runs: list[Run] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def state(self) -> TaskState:
        return TaskState(self.runs[-1].state) if self.runs else TaskState.UNSCHEDULED

    @model_validator(mode="wrap")
    @classmethod
    def _derived_state(cls, data: Any, handler: ModelWrapValidatorHandler[TaskStatus]) -> Any:
        # `state` is in every upstream status but is derived here: accept it on input only
        # when it agrees with the runs, so a round trip through JSON is lossless.
        claimed = None
        if isinstance(data, dict) and "state" in data:
            data = dict(data)
            claimed = data.pop("state")
        status = handler(data)
        if claimed is not None and claimed != status.state:
            raise ValueError(
                f"state {claimed!r} disagrees with the last run (expected {status.state.value!r})"
            )
        return status

    @model_validator(mode="after")
    def _runs_consistent(self) -> TaskStatus:
        for index, run in enumerate(self.runs):
            if run.runId != index:
                raise ValueError(f"runs[{index}] has runId {run.runId}; runIds equal positions")
            if run.state in _OPEN_STATES and index != len(self.runs) - 1:
                raise ValueError(f"runs[{index}] is {run.state} but only the last run may be")
        return self

    def to_output(self) -> dict[str, Any]:
        """The status object of responses and Pulse messages, `runs` last as upstream."""
        output = self.model_dump(mode="json")
        output["runs"] = output.pop("runs")
        return output


class TaskStatusResponse(WireModel):
    """Upstream's `task-status-response.json`: what every status-changing call answers."""

    status: TaskStatus


def status_for(
    task_id: str,
    task: TaskDefinition,
    runs: Sequence[Run] = (),
    retries_left: int | None = None,
) -> TaskStatus:
    """The status of `task` with the given runs; retriesLeft starts at `task.retries`."""
    task = task.with_task_group_id(task_id)
    return TaskStatus(
        taskId=task_id,
        provisionerId=task.provisionerId,
        workerType=task.workerType,
        taskQueueId=task.taskQueueId,
        schedulerId=task.schedulerId,
        projectId=task.projectId,
        taskGroupId=task.taskGroupId,
        priority=task.priority,
        deadline=task.deadline,
        expires=task.expires,
        retriesLeft=task.retries if retries_left is None else retries_left,
        runs=list(runs),
    )
