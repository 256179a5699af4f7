"""The runs workers hold right now, one small document each, so counting and listing a
queue's claimed runs reads this short collection rather than every task."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DeleteOne, InsertOne, UpdateOne

from shared import group_commit
from shared.db import Database

COLLECTION = "claimed_runs"


def claim_key(task_id: str, run_id: int) -> str:
    return f"{task_id}/{run_id}"


async def started(db: Database, claim: Mapping[str, Any]) -> None:
    document = {
        "_id": claim_key(claim["taskId"], claim["runId"]),
        **{k: claim[k] for k in ("taskQueueId", "taskId", "runId", "workerGroup", "workerId")},
        "started": claim["started"],
        "takenUntil": claim.get("takenUntil"),
    }
    # Effects run at least once: a repeat finds its document there.
    await group_commit.of(db[COLLECTION]).write(InsertOne(document), ignore_duplicate=True)


async def extended(db: Database, task_id: str, run_id: int, taken_until: datetime) -> None:
    await group_commit.of(db[COLLECTION]).write(
        UpdateOne({"_id": claim_key(task_id, run_id)}, {"$max": {"takenUntil": taken_until}})
    )


async def due(db: Database, *, limit: int) -> list[dict[str, Any]]:
    """The claims that expire first (a read of this short collection)."""
    cursor = db[COLLECTION].find({}).sort("takenUntil", ASCENDING).limit(limit)
    return [document async for document in cursor]


async def ended(db: Database, task_id: str, run_id: int) -> None:
    await group_commit.of(db[COLLECTION]).write(DeleteOne({"_id": claim_key(task_id, run_id)}))


async def count(db: Database, task_queue_id: str) -> int:
    return await db[COLLECTION].count_documents({"taskQueueId": task_queue_id})


async def page(
    db: Database, task_queue_id: str, after: str | None, limit: int
) -> list[dict[str, Any]]:
    query: dict[str, Any] = {"taskQueueId": task_queue_id}
    if after is not None:
        query["_id"] = {"$gt": after}
    cursor = db[COLLECTION].find(query).sort("_id", ASCENDING).limit(limit)
    return [document async for document in cursor]
