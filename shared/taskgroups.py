"""Task groups (reference §5): created by their first task, schedulerId fixed, expiry
extended to the latest task's expiry plus an hour, optionally sealed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from shared import errors
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


async def ensure_for_task(
    db: Database, task_group_id: str, scheduler_id: str, task_expires: datetime
) -> dict[str, Any]:
    """Create the group or join it: 409 on another schedulerId or a sealed group."""
    expires = task_expires + EXPIRY_MARGIN
    group = await get(db, task_group_id)
    if group is None:
        try:
            document = {"_id": task_group_id, "schedulerId": scheduler_id, "expires": expires}
            await db[COLLECTION].insert_one(document)
            return document
        except DuplicateKeyError:  # another task of the group won the race
            group = await require(db, task_group_id)
    if group["schedulerId"] != scheduler_id:
        raise errors.RequestConflict(
            f"Task group `{task_group_id}` belongs to schedulerId `{group['schedulerId']}`; "
            f"a task with schedulerId `{scheduler_id}` cannot join it"
        )
    if group.get("sealed") is not None:
        raise errors.RequestConflict(
            f"Task group `{task_group_id}` is sealed; no more tasks can be added"
        )
    if group["expires"] < expires:
        await db[COLLECTION].update_one({"_id": task_group_id}, {"$max": {"expires": expires}})
        group = {**group, "expires": expires}
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


async def member_added(db: Database, task_group_id: str) -> None:
    await db[COLLECTION].update_one({"_id": task_group_id}, {"$inc": {"unresolved": 1}})


async def member_resolved(db: Database, task_group_id: str) -> None:
    await db[COLLECTION].update_one({"_id": task_group_id}, {"$inc": {"unresolved": -1}})


def all_resolved(group: dict[str, Any]) -> bool:
    """No task of the group is left that never resolved (approximate under crashes, and
    it may hold more than once, as upstream's task-group-resolved)."""
    return int(group.get("unresolved", 0)) <= 0
