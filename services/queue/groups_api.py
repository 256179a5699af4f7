"""Task-group endpoints: list, get, seal, cancel and reprioritise a whole group."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pymongo import ASCENDING

from services.queue.context import QueueContext
from services.queue.tasks_api import ChangePriorityRequest
from shared import errors, events, paging, taskgroups, transitions
from shared.api import Call, declare
from shared.ids import SLUGID_PATTERN
from shared.taskstore import TASKS, from_document
from shared.timeutil import utcnow
from shared.transitions import TaskRecord

GROUP_ID = {"taskGroupId": SLUGID_PATTERN}
BATCH = 200


LIST_SCOPE = "queue:list-task-group:<taskGroupId>"


class GroupsApi:
    def __init__(self, context: QueueContext) -> None:
        self.ctx = context
        self.store = context.store

    async def _members(self, task_group_id: str) -> AsyncIterator[TaskRecord]:
        """Every task of the group, in taskId order, a batch at a time."""
        after: str | None = None
        while True:
            query: dict[str, Any] = {"taskGroupId": task_group_id}
            if after is not None:
                query["_id"] = {"$gt": after}
            cursor = self.ctx.db[TASKS].find(query).sort("_id", ASCENDING).limit(BATCH)
            batch = [from_document(document) async for document in cursor]
            for record in batch:
                yield record
            if len(batch) < BATCH:
                return
            after = batch[-1].task_id

    @declare(
        "listTaskGroup",
        "GET",
        "/task-group/<taskGroupId>/list",
        title="List Task Group",
        scopes=LIST_SCOPE,
        params=GROUP_ID,
        query=paging.PAGE_QUERY,
    )
    async def list_task_group(self, call: Call) -> dict[str, Any]:
        group_id = call.params["taskGroupId"]
        group = await taskgroups.require(self.ctx.db, group_id)
        limit = paging.limit(call.query)
        query: dict[str, Any] = {"taskGroupId": group_id}
        after = paging.decode_str(call.query)
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self.ctx.db[TASKS].find(query).sort("_id", ASCENDING).limit(limit + 1)
        records = [from_document(document) async for document in cursor]
        page = await self.ctx.store.complete(records[:limit])
        out = {
            **taskgroups.info(group),
            "tasks": [
                {"status": r.status.to_output(), "task": r.definition.to_output()} for r in page
            ],
        }
        if len(records) > limit:
            out["continuationToken"] = paging.encode(page[-1].task_id)
        return out

    @declare(
        "getTaskGroup",
        "GET",
        "/task-group/<taskGroupId>",
        title="Get Task Group",
        scopes=LIST_SCOPE,
        params=GROUP_ID,
    )
    async def get_task_group(self, call: Call) -> dict[str, Any]:
        return taskgroups.info(await taskgroups.require(self.ctx.db, call.params["taskGroupId"]))

    async def _authorized_group(self, call: Call) -> dict[str, Any]:
        group = await taskgroups.require(self.ctx.db, call.params["taskGroupId"])
        call.authorize(schedulerId=group["schedulerId"])
        return group

    @declare(
        "sealTaskGroup",
        "POST",
        "/task-group/<taskGroupId>/seal",
        title="Seal Task Group",
        scopes="queue:seal-task-group:<schedulerId>/<taskGroupId>",
        params=GROUP_ID,
    )
    async def seal_task_group(self, call: Call) -> dict[str, Any]:
        group = await self._authorized_group(call)
        sealed = await taskgroups.seal(self.ctx.db, group["_id"])
        await self.store.publish([events.task_group_sealed(sealed)])
        return taskgroups.info(sealed)

    @declare(
        "cancelTaskGroup",
        "POST",
        "/task-group/<taskGroupId>/cancel",
        title="Cancel Task Group",
        scopes="queue:cancel-task-group:<schedulerId>/<taskGroupId>",
        params=GROUP_ID,
    )
    async def cancel_task_group(self, call: Call) -> dict[str, Any]:
        group = await self._authorized_group(call)
        if group.get("sealed") is None:
            raise errors.RequestConflict(
                f"Task group `{group['_id']}` must be sealed before it can be cancelled"
            )
        size, cancelled = 0, []
        async for record in self._members(group["_id"]):
            size += 1
            if record.is_open and record.definition.deadline > utcnow():
                await self.store.mutate(record.task_id, lambda r: transitions.cancel(r, utcnow()))
                cancelled.append(record.task_id)
        return {
            "taskGroupId": group["_id"],
            "taskGroupSize": size,
            "cancelledCount": len(cancelled),
            "taskIds": cancelled,
        }

    @declare(
        "changeTaskGroupPriority",
        "POST",
        "/task-group/<taskGroupId>/priority",
        title="Change Task Group Priority",
        scopes="queue:change-task-group-priority:<schedulerId>/<taskGroupId>",
        input=ChangePriorityRequest,
        params=GROUP_ID,
    )
    async def change_task_group_priority(self, call: Call) -> dict[str, Any]:
        group = await self._authorized_group(call)
        new_priority = call.body.newPriority
        affected = []
        async for record in self._members(group["_id"]):
            if (
                not record.is_open
                or record.ever_resolved
                or record.definition.priority == new_priority
                or record.definition.deadline <= utcnow()
            ):
                continue
            try:
                await self.store.mutate(
                    record.task_id,
                    lambda r: transitions.change_priority(
                        r, new_priority, utcnow(), announce=False
                    ),
                )
            except errors.RequestConflict:
                continue  # resolved or changed since we listed it
            affected.append(record.task_id)
        await self.store.publish(
            [
                events.task_group_priority_changed(
                    group["_id"], group["schedulerId"], new_priority, len(affected)
                )
            ]
        )
        return {
            "taskGroupId": group["_id"],
            "schedulerId": group["schedulerId"],
            "newPriority": new_priority,
            "tasksAffected": len(affected),
            "taskIds": affected,
        }
