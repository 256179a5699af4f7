"""The pending queue: one entry per pending run, claimed by priority, then first in, first out.

Claiming is a lease, not a delete: `lease_next` atomically marks the best entry as leased
for `lease_s`, the claimer then updates the task conditionally and `remove`s the entry. If
the claimer dies in between, the lease lapses and the entry becomes claimable again, so a
crash can delay a run but never strand it. Every function is safe to repeat.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from shared.db import Database

COLLECTION = "pending"
CLAIM_ORDER = [("priority", DESCENDING), ("insertedAt", ASCENDING)]


class PendingEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    taskQueueId: str
    priority: int  # 7 (highest) .. 1 (lowest)
    insertedAt: datetime
    taskId: str
    runId: int
    deadline: datetime
    leasedUntil: datetime | None = None


def _document(entry: PendingEntry) -> dict[str, object]:
    return entry.model_dump()


async def enqueue(db: Database, entry: PendingEntry) -> bool:
    """Add the entry unless one for the same run exists. Returns True when it was added."""
    try:
        await db[COLLECTION].insert_one(_document(entry))
    except DuplicateKeyError:
        return False
    return True


async def lease_next(
    db: Database, task_queue_id: str, *, now: datetime, lease_s: float
) -> PendingEntry | None:
    """Lease the best claimable entry of the queue, or None. One atomic update per call:
    of any number of concurrent callers, exactly one gets each entry."""
    document = await db[COLLECTION].find_one_and_update(
        {
            "taskQueueId": task_queue_id,
            "deadline": {"$gt": now},  # never hand out a run whose deadline has passed
            "$or": [{"leasedUntil": None}, {"leasedUntil": {"$lte": now}}],
        },
        {"$set": {"leasedUntil": now + timedelta(seconds=lease_s)}},
        sort=CLAIM_ORDER,
        # No projection: FerretDB 1.24 does not implement findAndModify's `fields`.
        return_document=ReturnDocument.AFTER,
    )
    if document is None:
        return None
    document.pop("_id", None)
    return PendingEntry.model_validate(document)


async def remove(db: Database, task_id: str, run_id: int) -> None:
    await db[COLLECTION].delete_one({"taskId": task_id, "runId": run_id})


async def release(db: Database, task_id: str, run_id: int) -> None:
    """Give a leased entry back at once (the claim attempt failed for a passing reason)."""
    await db[COLLECTION].update_one(
        {"taskId": task_id, "runId": run_id}, {"$set": {"leasedUntil": None}}
    )


async def count(db: Database, task_queue_id: str, *, now: datetime) -> int:
    return await db[COLLECTION].count_documents(
        {"taskQueueId": task_queue_id, "deadline": {"$gt": now}}
    )


async def set_priority(db: Database, task_id: str, run_id: int, priority: int) -> None:
    await db[COLLECTION].update_one(
        {"taskId": task_id, "runId": run_id}, {"$set": {"priority": priority}}
    )


async def any_claimable(db: Database, task_queue_id: str, *, now: datetime) -> bool:
    """Whether lease_next would find something (a cheap probe for the claim sweeper)."""
    document = await db[COLLECTION].find_one(
        {
            "taskQueueId": task_queue_id,
            "deadline": {"$gt": now},
            "$or": [{"leasedUntil": None}, {"leasedUntil": {"$lte": now}}],
        },
        {"_id": 1},
    )
    return document is not None
