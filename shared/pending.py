"""The pending queue: one entry per pending run, claimed by priority, then first in, first out.

Every operation is a handful of lookups and writes by `_id`, so claiming costs the same
with ten or a million tasks pending (FerretDB answers only `_id` conditions from an
index; a sorted query over the entries would read them all). Per task queue there is
one `pending_heads` document holding, for each priority, a head and a tail counter:

- enqueue stores the run's entry (keyed by run, so a repeat is a no-op), takes the next
  slot number of its priority with an atomic `$inc` of the tail, and points that slot at
  the entry;
- a claimer takes slot `head` of the highest non-empty priority by inserting a lease
  document for it (the insert is the mutex: exactly one claimer gets each slot), moves
  the head on with `$max`, and follows the slot to the entry.

Anything a slot leads to that is gone or stale (the run was claimed through claimTask,
cancelled, reprioritised, or is past its deadline) is skipped. A slot whose enqueuer
died before filling it is closed with a tombstone, so a late enqueuer sees it lost the
slot and takes another. A claimer that dies mid-claim leaves its lease behind; once the
lease lapses `sweep_leases` puts the entry back at the tail. Every function is safe to
repeat.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.db import DUPLICATE_KEY, Database
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

COLLECTION = "pending_entries"  # one per (run, priority)
HEADS = "pending_heads"  # per task queue: h<p>/t<p> counters and the entry count
SLOTS = "pending_slots"  # slot -> entry, or a tombstone
LEASES = "pending_leases"  # slots being claimed right now
PRIORITIES = range(7, 0, -1)  # 7 = highest
MAX_SLOT_ATTEMPTS = 10


class PendingEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    taskQueueId: str
    priority: int  # 7 (highest) .. 1 (lowest)
    insertedAt: datetime
    taskId: str
    runId: int
    deadline: datetime


@dataclass(frozen=True)
class Lease:
    """A claimed slot and the entry it led to."""

    entry: PendingEntry
    slot: str


def entry_key(task_id: str, run_id: int, priority: int) -> str:
    return f"{task_id}/{run_id}/{priority}"


def slot_key(task_queue_id: str, priority: int, number: int) -> str:
    return f"{task_queue_id}|{priority}|{number:012d}"


def _entry(document: dict[str, Any]) -> PendingEntry:
    return PendingEntry.model_validate(
        {k: document[k] for k in PendingEntry.model_fields if k in document}
    )


# --- adding ------------------------------------------------------------------------------


async def enqueue(db: Database, entry: PendingEntry) -> bool:
    """Add the run at the tail of its priority unless it is already queued there.
    Returns True when this call added it."""
    key = entry_key(entry.taskId, entry.runId, entry.priority)
    try:
        await db[COLLECTION].insert_one({"_id": key, **entry.model_dump()})
    except DuplicateKeyError:
        existing = await db[COLLECTION].find_one({"_id": key})
        if existing is None or existing.get("slot") is not None:
            return False  # queued (or already claimed and removed) by an earlier call
        # An earlier call stored the entry but died before linking it to a slot.
        await _link(db, entry, key)
        return False
    await _link(db, entry, key, new_entry=True)
    return True


async def enqueue_many(db: Database, entries: list[PendingEntry]) -> int:
    """`enqueue` for many runs at once (a fan-out): per task queue and priority, one `$inc`
    takes a block of slots and two bulk inserts fill them and store the entries. Returns
    how many it added.

    Slots are filled before the entries are stored: a crash in between leaves slots that
    still hand out their run (each carries a copy of its entry), and a repeat, finding no
    entries, queues the runs again. A duplicate slot is harmless: the claim checks the
    task, and the loser of the two is skipped."""
    by_key = {entry_key(e.taskId, e.runId, e.priority): e for e in entries}
    found = db[COLLECTION].find({"_id": {"$in": list(by_key)}}, {"slot": 1})
    existing = {document["_id"]: document async for document in found}
    for key in [k for k, document in existing.items() if document.get("slot") is None]:
        await enqueue(db, by_key[key])  # stored by a call that died before linking it
    bands: dict[tuple[str, int], list[tuple[str, PendingEntry]]] = {}
    for key, entry in by_key.items():
        if key not in existing:
            bands.setdefault((entry.taskQueueId, entry.priority), []).append((key, entry))
    added = 0
    for (task_queue_id, priority), band in bands.items():
        added += await _enqueue_band(db, task_queue_id, priority, band)
    return added


async def _enqueue_band(
    db: Database, task_queue_id: str, priority: int, band: list[tuple[str, PendingEntry]]
) -> int:
    tail = f"t{priority}"
    heads = await db[HEADS].find_one_and_update(
        {"_id": task_queue_id},
        {"$inc": {tail: len(band)}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    assert heads is not None
    first = heads[tail] - len(band)
    slots = [slot_key(task_queue_id, priority, first + index) for index in range(len(band))]
    lost = await _insert_ignoring_duplicates(
        db[SLOTS],
        [
            {"_id": slot, "entry": key, **entry.model_dump()}
            for slot, (key, entry) in zip(slots, band, strict=True)
        ],
    )  # a lost slot was closed by a claimer that found it empty: link that entry anew
    stored = [
        {"_id": key, **entry.model_dump(), **({} if index in lost else {"slot": slots[index]})}
        for index, (key, entry) in enumerate(band)
    ]
    duplicates = await _insert_ignoring_duplicates(db[COLLECTION], stored)
    added = len(band) - len(duplicates)
    if added:
        await db[HEADS].update_one({"_id": task_queue_id}, {"$inc": {"n": added}})
    for index in sorted(lost - duplicates):
        key, entry = band[index]
        await _link(db, entry, key)
    return added


async def _insert_ignoring_duplicates(collection: Any, documents: list[dict[str, Any]]) -> set[int]:
    """Insert all; return the indexes of those whose `_id` was already taken."""
    try:
        await collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details["writeErrors"]
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        return {int(error["index"]) for error in errors}
    return set()


async def _link(db: Database, entry: PendingEntry, key: str, *, new_entry: bool = False) -> str:
    """Take the next slot of the entry's priority and point it at the entry (the slot
    carries a copy of it, so a claimer needs no further read)."""
    tail = f"t{entry.priority}"
    for _attempt in range(MAX_SLOT_ATTEMPTS):
        heads = await db[HEADS].find_one_and_update(
            {"_id": entry.taskQueueId},
            {"$inc": {tail: 1, "n": 1 if new_entry else 0}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert heads is not None
        new_entry = False  # counted once, whichever attempt gets the slot
        slot = slot_key(entry.taskQueueId, entry.priority, heads[tail] - 1)
        try:
            await db[SLOTS].insert_one({"_id": slot, "entry": key, **entry.model_dump()})
        except DuplicateKeyError:
            continue  # a claimer gave up on this slot (tombstone): take the next one
        await db[COLLECTION].update_one({"_id": key}, {"$set": {"slot": slot}})
        return slot
    raise RuntimeError(f"could not link {key} to a slot after {MAX_SLOT_ATTEMPTS} attempts")


# --- claiming ----------------------------------------------------------------------------


async def lease_next(
    db: Database, task_queue_id: str, *, now: datetime, lease_s: float
) -> Lease | None:
    """Lease the best claimable entry of the queue, or None when there is none.

    Of any number of concurrent callers, exactly one gets each slot. The caller claims the
    run and then calls `finish` (or `release` to give the entry back)."""
    heads = await db[HEADS].find_one({"_id": task_queue_id})
    if heads is None:
        return None
    for priority in PRIORITIES:
        number, tail = heads.get(f"h{priority}", 0), heads.get(f"t{priority}", 0)
        while number < tail:
            slot = slot_key(task_queue_id, priority, number)
            number += 1
            lease = await _take(db, task_queue_id, priority, slot, number, now, lease_s)
            if lease is not None:
                return lease
    return None


async def _take(
    db: Database,
    task_queue_id: str,
    priority: int,
    slot: str,
    next_number: int,
    now: datetime,
    lease_s: float,
) -> Lease | None:
    try:
        await db[LEASES].insert_one({"_id": slot, "leasedUntil": now + timedelta(seconds=lease_s)})
    except DuplicateKeyError:
        return None  # another claimer has this slot
    _moved, link = await asyncio.gather(
        db[HEADS].update_one({"_id": task_queue_id}, {"$max": {f"h{priority}": next_number}}),
        db[SLOTS].find_one({"_id": slot}),
    )
    if link is None:
        try:  # the enqueuer has not filled the slot yet: close it, it will take another
            await db[SLOTS].insert_one({"_id": slot, "tombstone": now})
        except DuplicateKeyError:
            link = await db[SLOTS].find_one({"_id": slot})
    if link is None or "entry" not in link:
        await finish_slot(db, slot, keep_tombstone=True)
        return None
    if link["deadline"] <= now:  # never hand out a run whose deadline has passed
        await remove(db, link["taskId"], link["runId"])
        await finish_slot(db, slot)
        return None
    # A run claimed or cancelled meanwhile is caught by the claim itself, which checks
    # the task's state: the caller then `finish`es the lease and moves on.
    return Lease(_entry(link), slot)


async def still_queued(db: Database, lease: Lease) -> bool:
    """Whether the leased entry is still in the queue at this priority (callers that have
    no state of their own to check against use this; the queue checks the task)."""
    key = entry_key(lease.entry.taskId, lease.entry.runId, lease.entry.priority)
    return await db[COLLECTION].find_one({"_id": key}, {"_id": 1}) is not None


async def finish_slot(db: Database, slot: str, *, keep_tombstone: bool = False) -> None:
    """The slot is used up: drop its link and its lease."""
    if not keep_tombstone:
        await db[SLOTS].delete_one({"_id": slot})
    await db[LEASES].delete_one({"_id": slot})


async def finish(db: Database, lease: Lease) -> None:
    """The leased run was claimed (or found stale): the entry and its slot are done."""
    await remove(db, lease.entry.taskId, lease.entry.runId)
    await finish_slot(db, lease.slot)


async def release(db: Database, lease: Lease) -> None:
    """Give a leased entry back (the claim attempt failed for a passing reason). The head
    has moved past its slot, so it rejoins at the tail of its priority."""
    key = entry_key(lease.entry.taskId, lease.entry.runId, lease.entry.priority)
    if await db[COLLECTION].find_one({"_id": key}) is not None:
        await _link(db, lease.entry, key)
    await finish_slot(db, lease.slot)


async def run_lease_sweeper(db: Database, *, interval_s: float) -> None:
    """Forever: entries of claimers that died mid-claim go back once their lease lapses."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            if count := await sweep_leases(db, now=utcnow()):
                log.warning("re-queued %d pending entries of claims that never finished", count)
        except Exception:
            log.exception("pending lease sweep failed; retrying")


async def sweep_leases(db: Database, *, now: datetime) -> int:
    """Put back the entries of claimers that died mid-claim (their lease lapsed)."""
    count = 0
    async for lease in db[LEASES].find({"leasedUntil": {"$lte": now}}):
        link = await db[SLOTS].find_one({"_id": lease["_id"]})
        document = (
            await db[COLLECTION].find_one({"_id": link["entry"]})
            if link is not None and "entry" in link
            else None
        )
        if document is not None and document.get("slot") == lease["_id"]:
            await release(db, Lease(_entry(document), lease["_id"]))
            count += 1
        else:
            await finish_slot(
                db, lease["_id"], keep_tombstone=link is not None and "entry" not in link
            )
    return count


# --- removing and changing ---------------------------------------------------------------


async def _remove_entry(db: Database, document: dict[str, Any]) -> None:
    result = await db[COLLECTION].delete_one({"_id": document["_id"]})
    if result.deleted_count:
        await db[HEADS].update_one({"_id": document["taskQueueId"]}, {"$inc": {"n": -1}})


async def remove(db: Database, task_id: str, run_id: int) -> None:
    """The run is no longer pending (claimed, cancelled): drop its entries. Their slots
    now lead nowhere and are skipped by claimers."""
    keys = [entry_key(task_id, run_id, priority) for priority in PRIORITIES]
    async for document in db[COLLECTION].find({"_id": {"$in": keys}}):
        await _remove_entry(db, document)


async def set_priority(db: Database, task_id: str, run_id: int, priority: int) -> None:
    """Move a pending run to another priority (it joins the back of that band)."""
    keys = [entry_key(task_id, run_id, p) for p in PRIORITIES if p != priority]
    async for document in db[COLLECTION].find({"_id": {"$in": keys}}):
        moved = _entry(document).model_copy(update={"priority": priority})
        await enqueue(db, moved)
        await _remove_entry(db, document)


# --- reading -----------------------------------------------------------------------------


async def count(db: Database, task_queue_id: str, *, now: datetime) -> int:
    """Runs pending in the queue (entries past their deadline count until a claimer or the
    deadline resolver drops them)."""
    heads = await db[HEADS].find_one({"_id": task_queue_id})
    return max(0, int(heads.get("n", 0))) if heads is not None else 0


async def any_claimable(db: Database, task_queue_id: str, *, now: datetime) -> bool:
    """Whether lease_next might find something (a cheap probe for the claim sweeper)."""
    heads = await db[HEADS].find_one({"_id": task_queue_id})
    return heads is not None and any(
        heads.get(f"h{p}", 0) < heads.get(f"t{p}", 0) for p in PRIORITIES
    )


async def entries(
    db: Database, task_queue_id: str, *, now: datetime, skip: int, limit: int
) -> list[PendingEntry]:
    """Entries of a queue by insertion time, for listing (reads every entry of the
    collection on FerretDB: an operator's tool, not a hot path)."""
    cursor = (
        db[COLLECTION]
        .find({"taskQueueId": task_queue_id, "deadline": {"$gt": now}})
        .sort([("insertedAt", ASCENDING), ("taskId", ASCENDING)])
        .skip(skip)
        .limit(limit)
    )
    return [_entry(document) async for document in cursor]
