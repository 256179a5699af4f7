"""The task definition: createTask's input and the `task` output (reference §1, §3.3).

Field names are the wire names (camelCase) so dumps, stored documents and responses share
one shape and no alias can let a snake_case key slip past `extra="forbid"`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator
from pydantic.functional_validators import ModelWrapValidatorHandler
from pydantic_core import PydanticCustomError

from shared.models.common import (
    TASK_QUEUE_ID_PATTERN,
    Identifier,
    Priority,
    ProjectId,
    ProvisionerId,
    Scope,
    Slugid,
    TaskQueueId,
    Timestamp,
    WireModel,
    WorkerType,
    parse_timestamp,
)
from shared.models.errors import INPUT_ERROR_TYPE, TaskInputError
from shared.timeutil import to_utc, truncate_ms

__all__ = [
    "CREATED_DRIFT",
    "DEFAULT_MAX_DEADLINE_DAYS",
    "MAX_TASK_DEPENDENCIES",
    "METADATA_SOURCE_PATTERN",
    "TaskDefinition",
    "TaskMetadata",
    "check_dates",
    "check_dependency_limit",
    "default_expires",
    "json_equal",
    "same_definition",
]

METADATA_SOURCE_PATTERN = r"^(https?://|ssh://|git@)"
MAX_TASK_DEPENDENCIES = 10000
MAX_ROUTES = 64
DEFAULT_MAX_DEADLINE_DAYS = 5
CREATED_DRIFT = timedelta(minutes=15)  # allowed clock skew for `created` and the deadline cap

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ABSENT = object()
_TASK_QUEUE_ID_RE = re.compile(TASK_QUEUE_ID_PATTERN)

Route = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=249)]
TagValue = Annotated[str, StringConstraints(strict=True, max_length=4096)]


class TaskMetadata(WireModel):
    # Upstream dropped the email check on owner; only the lengths and source prefix remain.
    name: Annotated[str, StringConstraints(strict=True, max_length=255)]
    description: Annotated[str, StringConstraints(strict=True, max_length=32768)]
    owner: Annotated[str, StringConstraints(strict=True, max_length=255)]
    source: Annotated[
        str, StringConstraints(strict=True, max_length=4096, pattern=METADATA_SOURCE_PATTERN)
    ]


def default_expires(deadline: datetime) -> datetime:
    """`deadline` plus one calendar year, as JavaScript's `setFullYear(year + 1)` does it:
    29 February rolls over to 1 March (the servers run in UTC, so UTC fields it is)."""
    deadline = to_utc(deadline)
    try:
        return deadline.replace(year=deadline.year + 1)
    except ValueError:  # 29 Feb → no such day next year
        return deadline.replace(year=deadline.year + 1, month=3, day=1)


def _fill_queue_identity(data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Accept taskQueueId, provisionerId+workerType, or all three; fill in all three.

    Runs on the raw body so the three fields can be required `str`s. Returns the filled body
    and the InputError upstream would give for it, if any. Malformed values are left for
    the field validators; where an id cannot be derived a valid placeholder stands in, so
    only the real culprit is reported (the model is never built: the culprit fails)."""
    # An explicit null counts as given (and fails its type check), as in JSON schema.
    queue, prov, wtype = (
        data.get(k, _ABSENT) for k in ("taskQueueId", "provisionerId", "workerType")
    )
    if queue is _ABSENT:
        if prov is _ABSENT or wtype is _ABSENT:
            missing = "at least a provisionerId and a workerType or a taskQueueId must be provided"
            return {"provisionerId": "-", "workerType": "x", **data, "taskQueueId": "-/x"}, missing
        if isinstance(prov, str) and isinstance(wtype, str):
            return {**data, "taskQueueId": f"{prov}/{wtype}"}, None
        return {**data, "taskQueueId": "-/x"}, None
    if not isinstance(queue, str) or not _TASK_QUEUE_ID_RE.fullmatch(queue):
        return {"provisionerId": "-", "workerType": "x", **data}, None
    split_prov, split_wtype = queue.split("/", 1)
    filled = {"provisionerId": split_prov, "workerType": split_wtype, **data}
    # Upstream silently overwrites a lone provisionerId or workerType given beside a
    # taskQueueId; we reject a disagreeing one, since it can only be a client bug.
    prov_differs = prov is not _ABSENT and prov != split_prov
    if prov_differs or (wtype is not _ABSENT and wtype != split_wtype):
        given = ", ".join(
            f"{key}={data[key]!r}" for key in ("provisionerId", "workerType") if key in data
        )
        return (
            filled,
            f'taskQueueId must match "provisionerId/workerType" (taskQueueId={queue!r}, {given})',
        )

    return filled, None


def _no_duplicates(values: list[str]) -> list[str]:
    seen: set[str] = set()
    duplicates: set[str] = set()
    for value in values:
        (duplicates if value in seen else seen).add(value)
    if duplicates:
        raise ValueError(f"must not contain duplicates: {', '.join(sorted(duplicates))}")
    return values


def _expires_default_for(deadline: object) -> datetime:
    try:
        return default_expires(parse_timestamp(deadline))
    except ValueError:
        # The deadline itself is invalid (or missing), so validation fails on it and this
        # placeholder is never seen; it only keeps a second, misleading error off `expires`.
        return _EPOCH


class TaskDefinition(WireModel):
    """A create-task request after upstream's defaults (`useDefaults`) and normalisation.

    `taskGroupId` defaults to the taskId, which the body does not carry: fill it with
    `with_task_group_id(task_id)`."""

    provisionerId: ProvisionerId
    workerType: WorkerType
    taskQueueId: TaskQueueId
    schedulerId: Identifier = "-"
    projectId: ProjectId = "none"
    taskGroupId: Slugid | None = None
    dependencies: Annotated[list[Slugid], Field(max_length=MAX_TASK_DEPENDENCIES)] = []
    requires: Literal["all-completed", "all-resolved"] = "all-completed"
    routes: Annotated[list[Route], Field(max_length=MAX_ROUTES)] = []
    priority: Priority = "lowest"
    retries: Annotated[int, Field(strict=True, ge=0, le=49)] = 5
    created: Timestamp
    deadline: Timestamp
    expires: Timestamp  # defaulted from `deadline` before field validation
    scopes: list[Scope] = []
    payload: dict[str, Any]
    metadata: TaskMetadata
    tags: dict[str, TagValue] = {}
    extra: dict[str, Any] = {}

    @model_validator(mode="wrap")
    @classmethod
    def _protocol_rules(cls, data: Any, handler: ModelWrapValidatorHandler[TaskDefinition]) -> Any:
        input_error = None
        if isinstance(data, dict):
            data, input_error = _fill_queue_identity(data)
            if "expires" not in data:
                data = {**data, "expires": _expires_default_for(data.get("deadline"))}
        task = handler(data)
        # Upstream checks these only once the body passed its schema, and answers
        # InputError rather than InputValidationError: the distinct error type tells the
        # HTTP layer which (see errors.is_input_error).
        bad_scopes = [scope for scope in task.scopes if scope.endswith("**")]
        if input_error is None and bad_scopes:
            input_error = f"scopes must not end with `**`: {', '.join(bad_scopes)}"
        if input_error is not None:
            raise PydanticCustomError(INPUT_ERROR_TYPE, "{problem}", {"problem": input_error})
        return task

    @field_validator("dependencies", "routes")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        return _no_duplicates(values)

    def with_task_group_id(self, task_id: str) -> TaskDefinition:
        """A copy whose taskGroupId defaults to `task_id` (a decision task's own group)."""
        if self.taskGroupId is not None:
            return self
        return self.model_copy(update={"taskGroupId": task_id})

    def to_output(self, task_id: str | None = None) -> dict[str, Any]:
        """The `task` response object: every field, all three queue ids, dates as TS."""
        task = self.with_task_group_id(task_id) if task_id is not None else self
        if task.taskGroupId is None:
            raise ValueError("taskGroupId is unset: pass the taskId to default it")
        return task.model_dump(mode="json")


def check_dates(
    task: TaskDefinition, now: datetime, *, max_deadline_days: float = DEFAULT_MAX_DEADLINE_DAYS
) -> None:
    """createTask step 5, in upstream's order and with its boundaries (equal values pass).

    Raises TaskInputError naming the rule broken."""
    now = truncate_ms(to_utc(now))  # JavaScript dates have millisecond precision
    created, deadline, expires = task.created, task.deadline, task.expires
    if created < now - CREATED_DRIFT:
        raise TaskInputError("`created` cannot be in the past (max 15min drift)", created=created)
    if created > now + CREATED_DRIFT:
        raise TaskInputError("`created` cannot be in the future (max 15min drift)", created=created)
    if deadline < created:
        raise TaskInputError(
            "`deadline` cannot be earlier than `created`", created=created, deadline=deadline
        )
    if deadline < now:
        raise TaskInputError("`deadline` cannot be in the past", deadline=deadline)
    if deadline - now > timedelta(days=max_deadline_days) + CREATED_DRIFT:
        raise TaskInputError(
            f"`deadline` cannot be more than {max_deadline_days:g} days into the future",
            deadline=deadline,
        )
    if expires < deadline:
        raise TaskInputError(
            "`expires` cannot be before `deadline`", deadline=deadline, expires=expires
        )


def check_dependency_limit(task: TaskDefinition, limit: int = MAX_TASK_DEPENDENCIES) -> None:
    """The per-deployment `taskMaxDependencies` (the schema's 10000 always applies too)."""
    if len(task.dependencies) > limit:
        raise TaskInputError(
            f"tasks cannot have more than {limit} dependencies",
            count=len(task.dependencies),
        )


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: `true` is not `1` (as Python's `==` would say), but `1` is
    `1.0` (one JSON number, as in JavaScript and jsonb). Key order does not matter."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def same_definition(a: TaskDefinition, b: TaskDefinition, task_id: str | None = None) -> bool:
    """Whether a repeated createTask is "the same task" (idempotent success) or a conflict.

    Compared after defaults and with dates in TS form, so two spellings of one instant are
    equal; a missing taskGroupId counts as `task_id` when given."""
    if task_id is not None:
        a, b = a.with_task_group_id(task_id), b.with_task_group_id(task_id)
    return json_equal(a.model_dump(mode="json"), b.model_dump(mode="json"))
