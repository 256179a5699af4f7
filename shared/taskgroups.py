"""Task groups (reference §5): created by their first task, schedulerId fixed, expiry
extended to the latest task's expiry plus an hour, optionally sealed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from shared import errors, group_commit
from shared.db import Database
from shared.events import task_group_info
from shared.timeutil import utcnow

COLLECTION = "task_groups"
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
    """Create the group or join it, and count the new task as unresolved: one command.
    409 on another schedulerId or a sealed group (nothing counted then).

    The task is counted before it is stored, so a crash in between leaves the count one
    high (the group's resolution goes unannounced) and never one low (announced while a
    task is still open). A createTask that then stores nothing calls `leave`."""
    expires = task_expires + EXPIRY_MARGIN
    try:
        group = await db[COLLECTION].find_one_and_update(
            # No equality on `sealed`: an upsert would copy it into the new group.
            {"_id": task_group_id, "schedulerId": scheduler_id, "sealed": {"$exists": False}},
            {"$inc": {"unresolved": 1}, "$max": {"expires": expires}},
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


async def leave(db: Database, task_group_id: str) -> None:
    """Take back a `join` whose task was not stored (a repeated or refused createTask)."""
    await db[COLLECTION].update_one({"_id": task_group_id}, {"$inc": {"unresolved": -1}})


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


async def member_resolved(db: Database, task_group_id: str) -> None:
    await group_commit.of(db[COLLECTION]).write(
        UpdateOne({"_id": task_group_id}, {"$inc": {"unresolved": -1}})
    )


def all_resolved(group: dict[str, Any]) -> bool:
    """No task of the group is left that never resolved (approximate under crashes, and
    it may hold more than once, as upstream's task-group-resolved)."""
    return int(group.get("unresolved", 0)) <= 0
