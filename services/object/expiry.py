"""Deleting objects past their `expires`, and uploads never finished within a day of
their start (upstream's 01:00 cron), from any number of replicas: bytes first, then the
record, so a crash in between leaves a record whose (idempotent) deletion is repeated."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from services.object import rules
from services.object.records import COLLECTION
from shared.artifact_bytes.base import ByteStore
from shared.db import Database
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

BATCH = 500
FIRST_S = 60.0  # soon after start, so what a stopped deployment left is not kept long
INTERVAL_S = 3600.0  # objects live days: hourly is plenty, and the query scans on FerretDB
MAX_FAILURES = 5  # consecutive failed passes before the process exits for its supervisor


async def expire_objects(db: Database, byte_store: ByteStore, now: datetime) -> int:
    objects = db[COLLECTION]
    due = {
        "$or": [
            {"expires": {"$lt": now}},
            {"finished": False, "uploadExpires": {"$lt": now}},
        ]
    }
    deleted = 0
    while True:
        names = [d["_id"] async for d in objects.find(due, {"_id": 1}).limit(BATCH)]
        if not names:
            break
        await byte_store.delete([rules.store_key(name) for name in names])
        await objects.delete_many({"_id": {"$in": names}, **due})
        deleted += len(names)
        if len(names) < BATCH:
            break
    if deleted:
        log.info("deleted %d expired objects", deleted)
    return deleted


async def run_expiry(db: Database, byte_store: ByteStore) -> None:
    """The loop: one pass an hour; a pass that keeps failing ends the process."""
    failures = 0
    await asyncio.sleep(FIRST_S)
    while True:
        try:
            await expire_objects(db, byte_store, utcnow())
            failures = 0
        except Exception:
            failures += 1
            log.exception("object expiry pass failed (%d in a row)", failures)
            if failures >= MAX_FAILURES:
                raise
        await asyncio.sleep(INTERVAL_S)
