"""Dependency edges between tasks (reference §5): one document per (dependent, required).

createTask writes the edges *before* reading the required tasks' states, so a dependency
resolving at the same moment is seen either by this read or by the resolver that marks
edges satisfied: never by neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pymongo import ASCENDING
from pymongo.errors import BulkWriteError

from shared.db import Database
from shared.models import RunState, TaskDefinition
from shared.timeutil import format_ts
from shared.transitions import TaskRecord

COLLECTION = "dependencies"
WRITE_BATCH = 1000
_DUPLICATE_KEY = 11000


def edge_id(dependent: str, required: str) -> str:
    return f"{dependent}/{required}"


def satisfies(required: TaskRecord, requires: str) -> bool:
    """Whether `required`'s resolution satisfies an edge of a dependent with `requires`.
    A run retried after an exception leaves the task open, so it does not count."""
    last = required.last_run
    if last is None or required.is_open:
        return False
    if last.state == RunState.COMPLETED:
        return True
    return requires == "all-resolved"


def problems(task: TaskDefinition, found: Mapping[str, TaskRecord]) -> list[str]:
    """createTask's dependency checks: every dependency exists and outlives our deadline."""
    missing = [d for d in task.dependencies if d not in found]
    expiring = [
        d for d in task.dependencies if d in found and found[d].definition.expires < task.deadline
    ]
    messages = []
    if missing:
        messages.append(f"The following dependencies are missing: {', '.join(missing)}")
    if expiring:
        messages.append(
            "The following dependencies expire before the task's deadline "
            f"{format_ts(task.deadline)}: {', '.join(expiring)}"
        )
    return messages


async def write_edges(db: Database, dependent: TaskRecord) -> None:
    task = dependent.definition
    documents = [
        {
            "_id": edge_id(dependent.task_id, required),
            "dependent": dependent.task_id,
            "required": required,
            "requires": task.requires,
            "satisfied": False,
            "expires": task.expires,
        }
        for required in task.dependencies
    ]
    for start in range(0, len(documents), WRITE_BATCH):
        try:
            await db[COLLECTION].insert_many(documents[start : start + WRITE_BATCH], ordered=False)
        except BulkWriteError as exc:  # a repeated createTask finds its edges already there
            if any(e.get("code") != _DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise


async def mark_satisfied(db: Database, dependent: str, required: Iterable[str]) -> None:
    ids = [edge_id(dependent, r) for r in required]
    for start in range(0, len(ids), WRITE_BATCH):
        await db[COLLECTION].update_many(
            {"_id": {"$in": ids[start : start + WRITE_BATCH]}}, {"$set": {"satisfied": True}}
        )


async def delete_edges(db: Database, dependent: str) -> None:
    await db[COLLECTION].delete_many({"dependent": dependent})


async def dependents_page(db: Database, required: str, after: str | None, limit: int) -> list[str]:
    """Dependents of `required`, ordered by taskId, starting after `after`."""
    query: dict[str, object] = {"required": required}
    if after is not None:
        query["dependent"] = {"$gt": after}
    cursor = db[COLLECTION].find(query, {"dependent": 1}).sort("dependent", ASCENDING).limit(limit)
    return [document["dependent"] async for document in cursor]
