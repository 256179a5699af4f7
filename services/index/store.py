"""Indexed tasks and namespaces in MongoDB, keyed as `services.index.entries` explains.

Every write is one conditional single-document command, safe to repeat and to race:
- an entry is replaced only when the stored one has a rank <= the new one (or has
  expired); otherwise the upsert collides with the existing `_id` and the existing
  entry is the answer, as upstream;
- a namespace's expiry only moves later (`$max`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.index import entries
from shared.db import Database
from shared.timeutil import format_ts, to_utc

TASKS = "index_tasks"
NAMESPACES = "index_namespaces"
# Rows expired longer than this are deleted (upstream's cron keeps them an hour too).
PURGE_AFTER = timedelta(hours=1)
INDEXES = {
    TASKS: IndexModel([("expires", ASCENDING)], name="by_expires"),
    NAMESPACES: IndexModel([("expires", ASCENDING)], name="by_expires"),
}


def task_out(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "namespace": document["namespace"],
        "taskId": document["taskId"],
        "rank": document["rank"],
        "data": document["data"],
        "expires": format_ts(document["expires"]),
    }


def namespace_out(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "namespace": document["namespace"],
        "name": entries.split(document["namespace"])[1],
        "expires": format_ts(document["expires"]),
    }


class IndexStore:
    def __init__(self, db: Database) -> None:
        self.tasks = db[TASKS]
        self.namespaces = db[NAMESPACES]

    async def ensure_indexes(self) -> None:
        for collection, model in INDEXES.items():
            await self.tasks.database[collection].create_indexes([model])

    async def find(self, namespace: str) -> dict[str, Any] | None:
        return await self.tasks.find_one({"_id": entries.row_id(namespace)})

    async def insert(self, entry: entries.Entry, now: datetime) -> dict[str, Any]:
        """Store `entry` unless a live entry of higher rank is there; the stored entry."""
        # Parents first: a crash in between leaves a namespace with no entry yet (harmless,
        # it expires), never an entry that listNamespaces cannot reach.
        namespace_expires = entries.namespace_expiry(entry.expires)
        for namespace in entries.ancestors(entry.namespace):
            await self.namespaces.update_one(
                {"_id": entries.row_id(namespace)},
                {
                    "$max": {"expires": namespace_expires},
                    "$setOnInsert": {"namespace": namespace},
                },
                upsert=True,
            )
        row = {
            "namespace": entry.namespace,
            "taskId": entry.task_id,
            "rank": entry.rank,
            "data": entry.data,
            "expires": to_utc(entry.expires),
        }
        key = entries.row_id(entry.namespace)
        replaceable = {"$or": [{"rank": {"$lte": entry.rank}}, {"expires": {"$lte": now}}]}
        try:
            stored = await self.tasks.find_one_and_update(
                {"_id": key, **replaceable},
                {"$set": row},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            stored = None  # a live entry of higher rank is there: it stays, and is the answer
        if stored is None:
            stored = await self.tasks.find_one({"_id": key})
        assert stored is not None
        return stored

    async def children(
        self, collection: str, parent: str, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to `limit` rows directly under `parent`, in name order, after `_id` `after`."""
        low, high = entries.children_range(parent)
        condition: dict[str, Any] = {"$gte": low, "$lt": high}
        if after is not None:
            condition["$gt"] = after
        coll = self.tasks if collection == TASKS else self.namespaces
        cursor = coll.find({"_id": condition}).sort("_id", ASCENDING).limit(limit)
        return [document async for document in cursor]

    async def purge_expired(self, now: datetime) -> int:
        cutoff = now - PURGE_AFTER
        removed = 0
        for coll in (self.tasks, self.namespaces):
            result = await coll.delete_many({"expires": {"$lt": cutoff}})
            removed += result.deleted_count
        return removed
