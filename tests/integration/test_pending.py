"""The pending queue against the real MongoDB-protocol server: order and atomic claims."""

from __future__ import annotations

import asyncio
import random

from shared import pending
from shared.db import Database, ensure_indexes
from shared.ids import slugid
from shared.pending import PendingEntry
from shared.timeutil import from_now, utcnow

QUEUE = "prov/wt"


def entry(
    priority: int, inserted_s: float, queue: str = QUEUE, deadline_s: float = 3600
) -> PendingEntry:
    return PendingEntry(
        taskQueueId=queue,
        priority=priority,
        insertedAt=from_now(inserted_s),
        taskId=slugid(),
        runId=0,
        deadline=from_now(deadline_s),
    )


async def drain(db: Database, queue: str = QUEUE) -> list[PendingEntry]:
    claimed = []
    while (
        next_entry := await pending.lease_next(db, queue, now=utcnow(), lease_s=300)
    ) is not None:
        claimed.append(next_entry)
    return claimed


async def test_claims_follow_priority_then_fifo(mongo_db: Database) -> None:
    entries = [entry(priority, -seconds) for priority in range(1, 8) for seconds in (30, 20, 10)]
    shuffled = entries[:]
    random.Random(7).shuffle(shuffled)
    for item in shuffled:
        assert await pending.enqueue(mongo_db, item)
    expected = sorted(entries, key=lambda e: (-e.priority, e.insertedAt))
    assert [e.taskId for e in await drain(mongo_db)] == [e.taskId for e in expected]


async def test_queues_are_separate(mongo_db: Database) -> None:
    mine, other = entry(1, 0), entry(7, 0, queue="prov/other")
    await pending.enqueue(mongo_db, mine)
    await pending.enqueue(mongo_db, other)
    assert [e.taskId for e in await drain(mongo_db)] == [mine.taskId]


async def test_enqueue_is_idempotent(mongo_db: Database) -> None:
    item = entry(3, 0)
    assert await pending.enqueue(mongo_db, item)
    assert not await pending.enqueue(mongo_db, item)
    assert await pending.count(mongo_db, QUEUE, now=utcnow()) == 1


async def test_two_racing_claimers_exactly_one_wins(mongo_db: Database) -> None:
    for _ in range(25):
        item = entry(4, 0)
        await pending.enqueue(mongo_db, item)
        results = await asyncio.gather(
            *(pending.lease_next(mongo_db, QUEUE, now=utcnow(), lease_s=300) for _ in range(2))
        )
        winners = [r for r in results if r is not None]
        assert [w.taskId for w in winners] == [item.taskId]
        await pending.remove(mongo_db, item.taskId, 0)


async def test_many_claimers_share_entries_without_duplicates(mongo_db: Database) -> None:
    items = [entry(random.randint(1, 7), -i) for i in range(40)]
    for item in items:
        await pending.enqueue(mongo_db, item)

    async def worker() -> list[str]:
        mine = []
        while (
            got := await pending.lease_next(mongo_db, QUEUE, now=utcnow(), lease_s=300)
        ) is not None:
            mine.append(got.taskId)
        return mine

    claimed = [
        task for batch in await asyncio.gather(*(worker() for _ in range(8))) for task in batch
    ]
    assert sorted(claimed) == sorted(i.taskId for i in items)


async def test_lapsed_lease_makes_entry_claimable_again(mongo_db: Database) -> None:
    # A claimer that crashed after leasing must not strand the run.
    item = entry(5, 0)
    await pending.enqueue(mongo_db, item)
    first = await pending.lease_next(mongo_db, QUEUE, now=utcnow(), lease_s=0.05)
    assert first is not None and first.taskId == item.taskId
    assert await pending.lease_next(mongo_db, QUEUE, now=utcnow(), lease_s=300) is None
    await asyncio.sleep(0.1)
    again = await pending.lease_next(mongo_db, QUEUE, now=utcnow(), lease_s=300)
    assert again is not None and again.taskId == item.taskId


async def test_released_entry_keeps_its_place(mongo_db: Database) -> None:
    older, newer = entry(2, -10), entry(2, 0)
    await pending.enqueue(mongo_db, older)
    await pending.enqueue(mongo_db, newer)
    leased = await pending.lease_next(mongo_db, QUEUE, now=utcnow(), lease_s=300)
    assert leased is not None and leased.taskId == older.taskId
    await pending.release(mongo_db, older.taskId, 0)
    assert [e.taskId for e in await drain(mongo_db)] == [older.taskId, newer.taskId]


async def test_entries_past_their_deadline_are_never_handed_out(mongo_db: Database) -> None:
    await pending.enqueue(mongo_db, entry(7, -5, deadline_s=-1))
    live = entry(1, 0)
    await pending.enqueue(mongo_db, live)
    assert [e.taskId for e in await drain(mongo_db)] == [live.taskId]


async def test_index_creation_is_repeatable(mongo_db: Database) -> None:
    # Every replica runs this at start-up; FerretDB once dropped the connection on a repeat.
    await ensure_indexes(mongo_db)
    await ensure_indexes(mongo_db)
    names = {index["name"] async for index in await mongo_db["pending"].list_indexes()}
    assert {"claim_order", "by_run"} <= names
