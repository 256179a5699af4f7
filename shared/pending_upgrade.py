"""Upgrading in place: runs still pending in the database-held queue of earlier versions
(collections `pending_entries`, `pending_heads`, `pending_slots`, `pending_leases`) move
onto RabbitMQ once, at start.

Safe to repeat and to run on several replicas at once: each entry is published before
it is deleted, so a crash in between publishes it again, and a duplicate message is
skipped by claimers like any stale one. Entries whose run is no longer pending are
dropped without publishing."""

from __future__ import annotations

import logging

from shared.db import Database
from shared.models import RunState
from shared.pending import PendingQueues, pending_run

log = logging.getLogger(__name__)

ENTRIES = "pending_entries"
OLD_COLLECTIONS = (ENTRIES, "pending_heads", "pending_slots", "pending_leases")


async def move_to_broker(db: Database, queues: PendingQueues) -> int:
    """Publish every run the old queue still holds; drop the old collections. Returns how
    many runs were moved."""
    present = set(await db.list_collection_names())
    if not present & set(OLD_COLLECTIONS):
        return 0
    moved = 0
    async for entry in db[ENTRIES].find({}):
        task = await db["tasks"].find_one({"_id": entry["taskId"]}, {"runs": 1})
        runs = (task or {}).get("runs") or []
        if len(runs) == entry["runId"] + 1 and runs[-1].get("state") == RunState.PENDING:
            await queues.publish(
                pending_run(
                    entry["taskQueueId"],
                    entry["taskId"],
                    entry["runId"],
                    entry["priority"],
                    entry["deadline"],
                )
            )
            moved += 1
        await db[ENTRIES].delete_one({"_id": entry["_id"]})
    for name in OLD_COLLECTIONS:
        await db.drop_collection(name)
    log.warning("moved %d pending runs from the database onto RabbitMQ (upgrade)", moved)
    return moved
