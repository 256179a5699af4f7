"""Task groups (reference §5): created by their first task, schedulerId fixed, expiry
extended to the latest task's expiry plus an hour, optionally sealed."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from shared import errors
from shared.db import Database
from shared.events import task_group_info
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

COLLECTION = "task_groups"
TASKS = "tasks"
EXPIRY_MARGIN = timedelta(hours=1)


async def get(db: Database, task_group_id: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": task_group_id})


async def require(db: Database, task_group_id: str) -> dict[str, Any]:
    group = await get(db, task_group_id)
    if group is None:
        raise errors.ResourceNotFound(f"task-group `{task_group_id}` not found")
    return group


async def join(
    db: Database, task_group_id: str, scheduler_id: str, task_expires: datetime
) -> dict[str, Any]:
    """Create the group or join it: one command. 409 on another schedulerId or a sealed
    group. Safe to repeat (a createTask retried after a crash joins again harmlessly):
    the group keeps no count; whether its tasks are all resolved is asked of the tasks."""
    expires = task_expires + EXPIRY_MARGIN
    try:
        group = await db[COLLECTION].find_one_and_update(
            # No equality on `sealed`: an upsert would copy it into the new group.
            {"_id": task_group_id, "schedulerId": scheduler_id, "sealed": {"$exists": False}},
            {"$max": {"expires": expires}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:  # the group exists but the filter did not match it
        group = await require(db, task_group_id)
        if group["schedulerId"] != scheduler_id:
            raise errors.RequestConflict(
                f"Task group `{task_group_id}` belongs to schedulerId `{group['schedulerId']}`; "
                f"a task with schedulerId `{scheduler_id}` cannot join it"
            ) from None
        if group.get("sealed") is not None:
            raise errors.RequestConflict(
                f"Task group `{task_group_id}` is sealed; no more tasks can be added"
            ) from None
        return await join(db, task_group_id, scheduler_id, task_expires)  # a race: retry
    assert group is not None
    return group


async def seal(db: Database, task_group_id: str) -> dict[str, Any]:
    """Idempotent: the first seal time is kept."""
    sealed = await db[COLLECTION].find_one_and_update(
        {"_id": task_group_id, "sealed": None},
        {"$set": {"sealed": utcnow()}},
        return_document=ReturnDocument.AFTER,
    )
    return sealed if sealed is not None else await require(db, task_group_id)


def info(group: dict[str, Any]) -> dict[str, Any]:
    """The `{taskGroupId, schedulerId, expires, sealed?}` response body."""
    return {
        "taskGroupId": group["_id"],
        "schedulerId": group["schedulerId"],
        **task_group_info(group),
    }


async def any_open(db: Database, task_group_id: str) -> bool:
    """Is a task of the group still open (never resolved)? Asked of the tasks themselves:
    each carries `openInGroup` until its first resolution, cleared in the same write as
    its state, so the answer is exact whatever crashed or was repeated. One indexed
    lookup."""
    return await db[TASKS].find_one({"openInGroup": task_group_id}, {"_id": 1}) is not None


def all_resolved(group: dict[str, Any]) -> bool:
    """With no task open (`any_open`): may the group be announced? Not while a count
    left by an earlier version, not yet upgraded (see `upgrade`), still says no. It may
    hold more than once (as upstream's task-group-resolved may be sent more than once)."""
    return int(group.get("unresolved", 0)) <= 0


async def upgrade(db: Database) -> int:
    """Upgrading in place from versions that counted each group's unresolved tasks: mark
    the open tasks of every counted group, then drop its count. Safe to repeat and to run
    on several replicas at once (a crash leaves the count, so the group is done again).
    Returns how many groups were upgraded."""
    upgraded = 0
    async for group in db[COLLECTION].find({"unresolved": {"$exists": True}}, {"_id": 1}):
        await db[TASKS].update_many(
            {"taskGroupId": group["_id"], "everResolved": False},
            {"$set": {"openInGroup": group["_id"]}},
        )
        await db[COLLECTION].update_one({"_id": group["_id"]}, {"$unset": {"unresolved": ""}})
        upgraded += 1
    if upgraded:
        log.warning("task groups: %d upgraded to open-task marks", upgraded)
    return upgraded
