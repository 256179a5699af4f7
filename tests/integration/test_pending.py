"""The pending queue against the real MongoDB-protocol server: order, atomic claims, and
recovery from claimers and enqueuers that die half-way."""

from __future__ import annotations

import asyncio
import random

from shared import pending
from shared.db import Database, ensure_indexes
from shared.ids import slugid
from shared.pending import Lease, PendingEntry
from shared.timeutil import from_now, utcnow

QUEUE = "prov/wt"


def entry(priority: int, queue: str = QUEUE, deadline_s: float = 3600) -> PendingEntry:
    return PendingEntry(
        taskQueueId=queue,
        priority=priority,
        insertedAt=utcnow(),
        taskId=slugid(),
        runId=0,
        deadline=from_now(deadline_s),
    )


async def lease(db: Database, queue: str = QUEUE, lease_s: float = 300) -> Lease | None:
    return await pending.lease_next(db, queue, now=utcnow(), lease_s=lease_s)


async def drain(db: Database, queue: str = QUEUE) -> list[PendingEntry]:
    """Claim everything, skipping leases whose entry is gone, as the queue's claimer does
    (it checks the task's state instead)."""
    claimed = []
    while (got := await lease(db, queue)) is not None:
        if await pending.still_queued(db, got):
            claimed.append(got.entry)
        await pending.finish(db, got)
    return claimed


async def test_claims_follow_priority_then_arrival(mongo_db: Database) -> None:
    entries = [entry(priority) for priority in range(1, 8) for _ in range(3)]
    random.Random(7).shuffle(entries)
    for item in entries:
        assert await pending.enqueue(mongo_db, item)
    # Highest priority first; within a priority, in the order they were enqueued.
    expected = sorted(entries, key=lambda e: -e.priority)  # sorted() is stable
    assert [e.taskId for e in await drain(mongo_db)] == [e.taskId for e in expected]
    assert await pending.count(mongo_db, QUEUE, now=utcnow()) == 0
    assert not await pending.any_claimable(mongo_db, QUEUE, now=utcnow())


async def test_queues_are_separate(mongo_db: Database) -> None:
    mine, other = entry(1), entry(7, queue="prov/other")
    await pending.enqueue(mongo_db, mine)
    await pending.enqueue(mongo_db, other)
    assert [e.taskId for e in await drain(mongo_db)] == [mine.taskId]
    assert await pending.count(mongo_db, "prov/other", now=utcnow()) == 1


async def test_enqueue_is_idempotent(mongo_db: Database) -> None:
    item = entry(3)
    assert await pending.enqueue(mongo_db, item)
    assert not await pending.enqueue(mongo_db, item)
    assert await pending.count(mongo_db, QUEUE, now=utcnow()) == 1
    assert [e.taskId for e in await drain(mongo_db)] == [item.taskId]


async def test_two_racing_claimers_exactly_one_wins(mongo_db: Database) -> None:
    for _ in range(25):
        item = entry(4)
        await pending.enqueue(mongo_db, item)
        results = await asyncio.gather(lease(mongo_db), lease(mongo_db))
        winners = [r for r in results if r is not None]
        assert [w.entry.taskId for w in winners] == [item.taskId]
        await pending.finish(mongo_db, winners[0])


async def test_many_claimers_share_entries_without_duplicates(mongo_db: Database) -> None:
    items = [entry(random.randint(1, 7)) for _ in range(40)]
    for item in items:
        await pending.enqueue(mongo_db, item)

    async def worker() -> list[str]:
        mine = []
        while (got := await lease(mongo_db)) is not None:
            mine.append(got.entry.taskId)
            await pending.finish(mongo_db, got)
        return mine

    claimed = [t for batch in await asyncio.gather(*(worker() for _ in range(8))) for t in batch]
    assert sorted(claimed) == sorted(i.taskId for i in items)


async def test_enqueuers_racing_claimers_lose_nothing(mongo_db: Database) -> None:
    items = [entry(random.randint(1, 7)) for _ in range(60)]
    claimed: list[str] = []
    done = asyncio.Event()

    async def producer(batch: list[PendingEntry]) -> None:
        for item in batch:
            await pending.enqueue(mongo_db, item)

    async def consumer() -> None:
        while not (
            done.is_set() and not await pending.any_claimable(mongo_db, QUEUE, now=utcnow())
        ):
            got = await lease(mongo_db)
            if got is None:
                await asyncio.sleep(0.005)
                continue
            claimed.append(got.entry.taskId)
            await pending.finish(mongo_db, got)

    consumers = [asyncio.create_task(consumer()) for _ in range(4)]
    await asyncio.gather(*(producer(items[i::3]) for i in range(3)))
    done.set()
    await asyncio.wait_for(asyncio.gather(*consumers), 30)
    claimed += [e.taskId for e in await drain(mongo_db)]
    assert sorted(claimed) == sorted(i.taskId for i in items)


async def test_lapsed_lease_is_swept_back_into_the_queue(mongo_db: Database) -> None:
    # A claimer that crashed after leasing must not strand the run.
    item = entry(5)
    await pending.enqueue(mongo_db, item)
    first = await lease(mongo_db, lease_s=60)
    assert first is not None and first.entry.taskId == item.taskId
    assert await lease(mongo_db) is None  # the head moved past it
    assert await pending.sweep_leases(mongo_db, now=utcnow()) == 0  # not lapsed yet
    assert await pending.sweep_leases(mongo_db, now=from_now(61)) == 1
    assert [e.taskId for e in await drain(mongo_db)] == [item.taskId]


async def test_released_entry_rejoins_at_the_tail(mongo_db: Database) -> None:
    older, newer = entry(2), entry(2)
    await pending.enqueue(mongo_db, older)
    await pending.enqueue(mongo_db, newer)
    leased = await lease(mongo_db)
    assert leased is not None and leased.entry.taskId == older.taskId
    await pending.release(mongo_db, leased)
    assert [e.taskId for e in await drain(mongo_db)] == [newer.taskId, older.taskId]


async def test_removed_and_expired_entries_are_skipped(mongo_db: Database) -> None:
    cancelled, expired, live = entry(7), entry(6, deadline_s=-1), entry(1)
    for item in (cancelled, expired, live):
        await pending.enqueue(mongo_db, item)
    await pending.remove(mongo_db, cancelled.taskId, 0)
    assert await pending.count(mongo_db, QUEUE, now=utcnow()) == 2
    assert [e.taskId for e in await drain(mongo_db)] == [live.taskId]
    assert await pending.count(mongo_db, QUEUE, now=utcnow()) == 0


async def test_set_priority_moves_the_entry(mongo_db: Database) -> None:
    low, other = entry(1), entry(4)
    await pending.enqueue(mongo_db, low)
    await pending.enqueue(mongo_db, other)
    await pending.set_priority(mongo_db, low.taskId, 0, 7)
    drained = await drain(mongo_db)
    assert [(e.taskId, e.priority) for e in drained] == [(low.taskId, 7), (other.taskId, 4)]


async def test_a_slot_left_unfilled_is_closed_and_its_enqueuer_takes_another(
    mongo_db: Database,
) -> None:
    # Simulate an enqueuer that took slot 0 and stalled before filling it.
    await mongo_db[pending.HEADS].update_one({"_id": QUEUE}, {"$inc": {"t3": 1}}, upsert=True)
    assert await lease(mongo_db) is None  # the claimer closes slot 0 with a tombstone
    stalled = entry(3)
    # the late enqueuer's slot is taken: it must land in a fresh one and stay claimable
    key = pending.entry_key(stalled.taskId, 0, 3)
    await mongo_db[pending.COLLECTION].insert_one({"_id": key, **stalled.model_dump()})
    await pending.enqueue(mongo_db, stalled)  # finds its entry unlinked and links it
    assert [e.taskId for e in await drain(mongo_db)] == [stalled.taskId]


async def test_enqueue_many_keeps_order_and_skips_what_is_queued(mongo_db: Database) -> None:
    first = entry(3)
    await pending.enqueue(mongo_db, first)
    batch = [entry(3) for _ in range(40)] + [entry(6) for _ in range(5)] + [first]
    assert await pending.enqueue_many(mongo_db, batch) == 45  # `first` was queued already
    assert await pending.enqueue_many(mongo_db, batch) == 0  # a repeat adds nothing
    assert await pending.count(mongo_db, QUEUE, now=utcnow()) == 46
    drained = [e.taskId for e in await drain(mongo_db)]
    assert drained == [e.taskId for e in batch[40:45]] + [first.taskId] + [
        e.taskId for e in batch[:40]
    ]
    assert await pending.count(mongo_db, QUEUE, now=utcnow()) == 0


async def test_enqueue_many_recovers_from_a_half_done_batch(mongo_db: Database) -> None:
    # An earlier attempt died after storing one entry and before linking it, and a claimer
    # closed the slot the next batch is about to take: nothing may be lost or doubled.
    unlinked, fresh = entry(2), [entry(2) for _ in range(3)]
    key = pending.entry_key(unlinked.taskId, 0, 2)
    await mongo_db[pending.COLLECTION].insert_one({"_id": key, **unlinked.model_dump()})
    await mongo_db[pending.HEADS].update_one({"_id": QUEUE}, {"$inc": {"t2": 1}}, upsert=True)
    # (slot 0: taken and never filled; slot 1: the unlinked entry's; slot 2: closed)
    await mongo_db[pending.SLOTS].insert_one({"_id": pending.slot_key(QUEUE, 2, 2), "tombstone": 1})
    assert await pending.enqueue_many(mongo_db, [unlinked, *fresh]) == 3
    assert await pending.count(mongo_db, QUEUE, now=utcnow()) == 3  # (the unlinked: uncounted)
    drained = [e.taskId for e in await drain(mongo_db)]
    assert sorted(drained) == sorted([unlinked.taskId, *(e.taskId for e in fresh)])
    assert drained[0] == unlinked.taskId and drained[-1] == fresh[0].taskId  # relinked last


async def test_cost_of_a_claim_does_not_depend_on_depth(mongo_db: Database) -> None:
    # Claiming reads and writes only by _id: explain every query shape it uses.
    await pending.enqueue(mongo_db, entry(3))
    for collection, filter_ in (
        (pending.HEADS, {"_id": QUEUE}),
        (pending.SLOTS, {"_id": pending.slot_key(QUEUE, 3, 0)}),
        (pending.COLLECTION, {"_id": "x/0/3"}),
    ):
        explained = await mongo_db.command("explain", {"find": collection, "filter": filter_})
        plan = str(explained.get("queryPlanner"))
        assert "SCAN" not in plan or "IXSCAN" in plan, plan


async def test_index_creation_is_repeatable(mongo_db: Database) -> None:
    # Every replica runs this at start-up; FerretDB once dropped the connection on a repeat.
    await ensure_indexes(mongo_db)
    await ensure_indexes(mongo_db)
    names = {index["name"] async for index in await mongo_db[pending.LEASES].list_indexes()}
    assert "by_lease_end" in names
