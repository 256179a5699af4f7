"""When each task's deadline falls, indexed so that a resolver finds the tasks whose
deadline passed with lookups by `_id` only: one bucket document per second (in a few
shards, so a burst of tasks sharing a deadline does not make one huge document), and a
cursor saying which second is next. Every replica may run the resolver: the cursor moves
by a conditional update, so each second is taken by exactly one of them.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from shared import group_commit
from shared.db import Database
from shared.timeutil import to_epoch_ms

COLLECTION = "deadlines"
CURSOR = "cursor"
SHARDS = 8
# Where a brand-new cursor starts; anything older is left to the periodic overdue sweep.
START_LOOKBACK = timedelta(minutes=1)


def second_of(moment: datetime) -> int:
    return to_epoch_ms(moment) // 1000


def bucket_id(second: int, shard: int) -> str:
    return f"{second:011d}/{shard}"


def _shard(task_id: str) -> int:
    return zlib.crc32(task_id.encode()) % SHARDS


async def add(db: Database, task_id: str, deadline: datetime) -> None:
    """Record a task's deadline (idempotent). Written before the task itself, so a task
    can never exist without its deadline being found; a bucket naming a task that was
    never stored is simply skipped."""
    bucket = bucket_id(second_of(deadline), _shard(task_id))
    await group_commit.of(db[COLLECTION]).write(
        UpdateOne({"_id": bucket}, {"$addToSet": {"t": task_id}}, upsert=True)
    )


async def take_seconds(db: Database, now: datetime, *, most: int = 60) -> range | None:
    """The next seconds (up to `most`) whose deadlines have all passed, now owned by this
    caller; None if the cursor has caught up with the clock."""
    cursor = await db[COLLECTION].find_one({"_id": CURSOR})
    if cursor is None:
        start = second_of(now - START_LOOKBACK)
        try:
            await db[COLLECTION].insert_one({"_id": CURSOR, "next": start})
        except DuplicateKeyError:
            pass
        cursor = await db[COLLECTION].find_one({"_id": CURSOR})
        assert cursor is not None
    first = int(cursor["next"])
    end = min(second_of(now), first + most)  # the current second may still be ahead
    if first >= end:
        return None
    taken = await db[COLLECTION].find_one_and_update(
        {"_id": CURSOR, "next": first},
        {"$set": {"next": end}},
        return_document=ReturnDocument.AFTER,
    )
    return range(first, end) if taken is not None else await take_seconds(db, now, most=most)


def _ids(seconds: range) -> list[str]:
    return [bucket_id(second, shard) for second in seconds for shard in range(SHARDS)]


async def tasks_in(db: Database, seconds: range) -> list[str]:
    found: list[str] = []
    async for bucket in db[COLLECTION].find({"_id": {"$in": _ids(seconds)}}):
        found += bucket.get("t", [])
    return found


async def drop(db: Database, seconds: range) -> None:
    await db[COLLECTION].delete_many({"_id": {"$in": _ids(seconds)}})
