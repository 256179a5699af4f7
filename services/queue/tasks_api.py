"""Task endpoints: create, read, schedule, rerun, cancel, reprioritise, list dependents.

Each handler follows the same five steps: parse (the Api layer) → authorise → load →
decide (shared.transitions) → store and reply (shared.taskstore).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from services.queue.context import QueueContext
from shared import deadlines, dependencies, errors, logs, paging, taskgroups, transitions
from shared.api import Call, declare
from shared.ids import SLUGID_PATTERN
from shared.models import (
    RUN_ID_URL_PATTERN,
    Priority,
    Slugid,
    TaskDefinition,
    TaskInputError,
    TaskStatusResponse,
    check_dates,
    check_dependency_limit,
    priorities_at_or_above,
    same_definition,
)
from shared.taskstore import Loaded
from shared.timeutil import utcnow
from shared.transitions import TaskRecord

TASK_ID = {"taskId": SLUGID_PATTERN}
RUN_PARAMS = {"taskId": SLUGID_PATTERN, "runId": RUN_ID_URL_PATTERN}

CREATE_TASK_SCOPES = {
    "AllOf": [
        {"for": "scope", "in": "scopes", "each": "<scope>"},
        {"for": "route", "in": "routes", "each": "queue:route:<route>"},
        "queue:create-task:project:<projectId>",
        "queue:scheduler-id:<schedulerId>",
        {
            "AnyOf": [
                {
                    "for": "priority",
                    "in": "priorities",
                    "each": "queue:create-task:<priority>:<provisionerId>/<workerType>",
                }
            ]
        },
    ]
}

log = logging.getLogger(__name__)


def _scheduler_scopes(verb: str) -> dict[str, Any]:
    """schedule/rerun/cancel: by scheduler and group, by project, or by assuming the
    scheduler-id role."""
    return {
        "AnyOf": [
            f"queue:{verb}:<schedulerId>/<taskGroupId>/<taskId>",
            f"queue:{verb}-in-project:<projectId>",
            {"AllOf": [f"queue:{verb}", "assume:scheduler-id:<schedulerId>/<taskGroupId>"]},
        ]
    }


class TasksRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    taskIds: Annotated[list[Slugid], Field(max_length=1000)]


class ChangePriorityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    newPriority: Priority


def status_body(record: TaskRecord) -> dict[str, Any]:
    return {"status": record.status.to_output()}  # the shape of TaskStatusResponse


def _task_params(record: TaskRecord) -> dict[str, Any]:
    task = record.definition
    return {
        "taskId": record.task_id,
        "schedulerId": task.schedulerId,
        "taskGroupId": task.taskGroupId,
        "projectId": task.projectId,
        "taskQueueId": task.taskQueueId,
    }


class TasksApi:
    def __init__(self, context: QueueContext) -> None:
        self.ctx = context
        self.store = context.store

    # --- reading --------------------------------------------------------------------------

    @declare(
        "task",
        "GET",
        "/task/<taskId>",
        title="Get Task Definition",
        scopes="queue:get-task:<taskId>",
        params=TASK_ID,
        output=TaskDefinition,
    )
    async def task(self, call: Call) -> dict[str, Any]:
        loaded = await self.store.require(call.params["taskId"])
        return loaded.record.definition.to_output()

    @declare(
        "status",
        "GET",
        "/task/<taskId>/status",
        title="Get task status",
        scopes="queue:status:<taskId>",
        params=TASK_ID,
        output=TaskStatusResponse,
    )
    async def status(self, call: Call) -> dict[str, Any]:
        loaded = await self.store.require(call.params["taskId"], whole=False)
        return status_body(loaded.record)

    async def _batch(self, call: Call) -> tuple[list[TaskRecord], str | None]:
        body: TasksRequest = call.body
        call.authorize(taskIds=body.taskIds)
        limit = paging.limit(call.query)
        offset = paging.decode_offset(call.query)
        ids = body.taskIds[offset : offset + limit]
        found = await self.store.load_many(ids)
        token = paging.encode(offset + limit) if offset + limit < len(body.taskIds) else None
        return [found[i] for i in ids if i in found], token

    @declare(
        "tasks",
        "POST",
        "/tasks",
        title="Get multiple task definitions",
        scopes={"AllOf": [{"for": "taskId", "in": "taskIds", "each": "queue:get-task:<taskId>"}]},
        input=TasksRequest,
        query=paging.PAGE_QUERY,
        scopes_from_params=False,
    )
    async def tasks(self, call: Call) -> dict[str, Any]:
        records, token = await self._batch(call)
        out: dict[str, Any] = {
            "tasks": [{"taskId": r.task_id, "task": r.definition.to_output()} for r in records]
        }
        if token:
            out["continuationToken"] = token
        return out

    @declare(
        "statuses",
        "POST",
        "/tasks/status",
        title="Get multiple task definitions",
        scopes={"AllOf": [{"for": "taskId", "in": "taskIds", "each": "queue:status:<taskId>"}]},
        input=TasksRequest,
        query=paging.PAGE_QUERY,
        scopes_from_params=False,
    )
    async def statuses(self, call: Call) -> dict[str, Any]:
        records, token = await self._batch(call)
        out: dict[str, Any] = {
            "statuses": [{"taskId": r.task_id, "status": r.status.to_output()} for r in records]
        }
        if token:
            out["continuationToken"] = token
        return out

    @declare(
        "listDependentTasks",
        "GET",
        "/task/<taskId>/dependents",
        title="List Dependent Tasks",
        scopes="queue:list-dependent-tasks:<taskId>",
        params=TASK_ID,
        query=paging.PAGE_QUERY,
    )
    async def list_dependent_tasks(self, call: Call) -> dict[str, Any]:
        task_id = call.params["taskId"]
        await self.store.require(task_id)
        limit = paging.limit(call.query)
        after = paging.decode_str(call.query)
        everyone = await dependencies.all_dependents(self.ctx.db, task_id)
        ids = [i for i in everyone if after is None or i > after][: limit + 1]
        page = ids[:limit]
        found = await self.store.load_many(page)
        out: dict[str, Any] = {
            "taskId": task_id,
            "tasks": [
                {"task": found[i].definition.to_output(), "status": found[i].status.to_output()}
                for i in page
                if i in found
            ],
        }
        if len(ids) > limit:
            out["continuationToken"] = paging.encode(page[-1])
        return out

    # --- creating -------------------------------------------------------------------------

    @declare(
        "createTask",
        "PUT",
        "/task/<taskId>",
        title="Create New Task",
        scopes=CREATE_TASK_SCOPES,
        input=TaskDefinition,
        params=TASK_ID,
        scopes_from_params=False,
        output=TaskStatusResponse,
    )
    async def create_task(self, call: Call) -> dict[str, Any]:
        task_id = call.params["taskId"]
        task: TaskDefinition = call.body.with_task_group_id(task_id)
        call.authorize(
            scopes=list(task.scopes),
            routes=list(task.routes),
            priorities=list(priorities_at_or_above(task.priority)),
            projectId=task.projectId,
            schedulerId=task.schedulerId,
            provisionerId=task.provisionerId,
            workerType=task.workerType,
        )
        now = utcnow()
        try:
            check_dates(task, now)
            check_dependency_limit(task)
        except TaskInputError as exc:
            raise errors.InputError(exc.message) from exc
        assert task.taskGroupId is not None
        record = TaskRecord.new(task_id, task)
        await deadlines.add(self.ctx.db, task_id, task.deadline)
        await taskgroups.join(self.ctx.db, task.taskGroupId, task.schedulerId, task.expires)
        if not task.dependencies:
            # The common case in one write: the task, run 0 and its events together.
            outcome = transitions.defined(record, schedule=True, now=now)
            if await self.store.insert(outcome.record, outcome.effects) is not None:
                log.info(logs.TASK_CREATED, extra=logs.task_fields(task_id, 0, state="pending"))
                return status_body(outcome.record)
        elif (
            await self.store.insert(record, extra=dependencies.waiting_fields(task_id, task))
            is not None
        ):
            log.info(logs.TASK_CREATED, extra=logs.task_fields(task_id, state="unscheduled"))
            return status_body(await self._track_dependencies(record, created=True))
        # The taskId is taken: the same definition repeated is a success, else 409.
        existing = await self.store.require(task_id)
        if not same_definition(existing.record.definition, task):
            raise errors.RequestConflict(f"taskId `{task_id}` already used by another task")
        if task.dependencies:
            return status_body(await self._track_dependencies(existing.record, created=False))
        outcome = await self.store.mutate(
            task_id, lambda r: transitions.defined(r, schedule=True, now=utcnow()), loaded=existing
        )
        return status_body(outcome.record)

    async def _track_dependencies(self, record: TaskRecord, *, created: bool) -> TaskRecord:
        db, task = self.ctx.db, record.definition
        await dependencies.create_shards(db, record.task_id, task)
        await dependencies.register(db, record.task_id, task)
        found = await self.store.load_many(list(task.dependencies))
        problems = dependencies.problems(task, found)
        if problems:
            if created:  # upstream inserts first and takes the task back on a bad dependency
                await dependencies.unregister(db, record.task_id, task)
                await self.store.delete(record)
            raise errors.InputError("\n".join(problems))
        await dependencies.satisfy_edges(
            db,
            {
                required: [dependencies.target(record.task_id, task, required)]
                for required, found_record in found.items()
                if dependencies.satisfies(found_record, task.requires)
            },
        )
        ready = await dependencies.waiting_count(db, record.task_id) == 0
        outcome = await self.store.mutate(
            record.task_id, lambda r: transitions.defined(r, schedule=ready, now=utcnow())
        )
        return outcome.record

    # --- changing -------------------------------------------------------------------------

    async def _authorized(self, call: Call) -> Loaded:
        loaded = await self.store.require(call.params["taskId"])
        call.authorize(**_task_params(loaded.record))
        return loaded

    @declare(
        "scheduleTask",
        "POST",
        "/task/<taskId>/schedule",
        title="Schedule Defined Task",
        scopes=_scheduler_scopes("schedule-task"),
        params=TASK_ID,
        output=TaskStatusResponse,
    )
    async def schedule_task(self, call: Call) -> dict[str, Any]:
        loaded = await self._authorized(call)
        outcome = await self.store.mutate(
            loaded.record.task_id, lambda r: transitions.schedule(r, utcnow()), loaded=loaded
        )
        return status_body(outcome.record)

    @declare(
        "rerunTask",
        "POST",
        "/task/<taskId>/rerun",
        title="Rerun a Resolved Task",
        scopes=_scheduler_scopes("rerun-task"),
        params=TASK_ID,
        output=TaskStatusResponse,
    )
    async def rerun_task(self, call: Call) -> dict[str, Any]:
        loaded = await self._authorized(call)
        outcome = await self.store.mutate(
            loaded.record.task_id, lambda r: transitions.rerun(r, utcnow()), loaded=loaded
        )
        return status_body(outcome.record)

    @declare(
        "cancelTask",
        "POST",
        "/task/<taskId>/cancel",
        title="Cancel Task",
        scopes=_scheduler_scopes("cancel-task"),
        params=TASK_ID,
        output=TaskStatusResponse,
    )
    async def cancel_task(self, call: Call) -> dict[str, Any]:
        loaded = await self._authorized(call)
        outcome = await self.store.mutate(
            loaded.record.task_id, lambda r: transitions.cancel(r, utcnow()), loaded=loaded
        )
        return status_body(outcome.record)

    @declare(
        "changeTaskPriority",
        "POST",
        "/task/<taskId>/priority",
        title="Change Task Priority",
        scopes={
            "AnyOf": [
                "queue:change-task-priority:<taskId>",
                "queue:change-task-priority-in-queue:<taskQueueId>",
            ]
        },
        input=ChangePriorityRequest,
        params=TASK_ID,
        output=TaskStatusResponse,
    )
    async def change_task_priority(self, call: Call) -> dict[str, Any]:
        loaded = await self._authorized(call)
        new_priority = call.body.newPriority
        outcome = await self.store.mutate(
            loaded.record.task_id,
            lambda r: transitions.change_priority(r, new_priority, utcnow()),
            loaded=loaded,
        )
        return status_body(outcome.record)
