"""The MongoDB subset Flotilla relies on, checked against the real server (FerretDB locally).

Every test asserts a behaviour that MongoDB and FerretDB 1.24 share, so a failure means the
server stopped supporting something the code depends on. FerretDB 1.24 does not support
(or silently mishandles) some things, and those have no test here. Code must not rely on them:
  * bare FerretDB runs find_one_and_update / update_one / find_one_and_delete as
    read-then-write, so conditional updates are NOT atomic there (several racers "win",
    concurrent $inc loses increments). Our build (deploy/ferretdb) serializes write
    commands in front of FerretDB, which restores MongoDB's guarantee; the race tests below
    check exactly that, so they fail against an ungated FerretDB.
  * positional `$`, `$[]`, arrayFilters, update pipelines, findAndModify `fields`.
  * $push modifiers $slice/$position/$sort (silently ignored), $pull with a condition
    (only exact-equality pulls work), $elemMatch on sub-document fields (silently no match).
  * $group with more than one accumulator (all but the first come back 0), $group $max/$min/
    $first/$avg/$push, $lookup, $facet, $expr, `$slice`/`$elemMatch` projections.
  * partialFilterExpression, expireAfterSeconds, collation, let; `sparse` is accepted but not
    reported back; a duplicate key caused by an *update* is InternalError (code 1), not 11000.
  * bulk results: `upserted[].index` counts upserts, not batch positions (wrong upserted_ids keys).
  * query planning: FerretDB 1.24 on SQLite answers only `_id` conditions from an index
    (with our build's patch, deploy/ferretdb/sqlite-id-pushdown.patch); every other filter,
    and every sort, is evaluated over the whole collection. Hot paths look tasks up by _id.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Awaitable, Callable

import pytest
from pymongo import (
    ASCENDING,
    DESCENDING,
    DeleteOne,
    IndexModel,
    InsertOne,
    ReturnDocument,
    UpdateOne,
)
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from shared import db as dbmod

Database = dbmod.Database
Document = dbmod.Document

UTC = dt.UTC
T0 = dt.datetime(2025, 3, 4, 5, 6, 7, 123000, tzinfo=UTC)
AFTER = ReturnDocument.AFTER
BEFORE = ReturnDocument.BEFORE
CLAIM_ORDER = [("priority", DESCENDING), ("insertedAt", ASCENDING)]
RACE_ROUNDS = 50
RACERS = 10


def _pending(i: int, priority: int, queue: str = "prov/wt") -> Document:
    # taskId/runId are always set: `by_run` is unique and not sparse, and MongoDB (unlike
    # FerretDB) treats a missing field as null, so two docs without it would collide.
    return {
        "_id": f"p{i}",
        "taskId": f"task{i}",
        "runId": 0,
        "taskQueueId": queue,
        "priority": priority,
        "insertedAt": T0 + dt.timedelta(seconds=i),
    }


async def test_upsert_and_set_on_insert(mongo_db: Database) -> None:
    col = mongo_db["compat_upsert"]
    update = {"$set": {"state": "new"}, "$setOnInsert": {"created": T0}}
    # BEFORE on an insert returns None (there was no pre-image), AFTER returns the new doc.
    assert await col.find_one_and_update({"_id": "a"}, update, upsert=True) is None
    doc = await col.find_one_and_update(
        {"_id": "b", "kind": "x", "meta.owner": "me"}, update, upsert=True, return_document=AFTER
    )
    # Equality fields of the filter (dotted ones as nested docs) become part of the new doc.
    assert doc == {"_id": "b", "kind": "x", "meta": {"owner": "me"}, "state": "new", "created": T0}

    later = T0 + dt.timedelta(days=1)
    again = await col.find_one_and_update(
        {"_id": "b"},
        {"$set": {"state": "seen"}, "$setOnInsert": {"created": later}},
        upsert=True,
        return_document=AFTER,
    )
    assert again is not None and again["state"] == "seen" and again["created"] == T0

    res = await col.update_one({"_id": "c"}, {"$set": {"n": 1}}, upsert=True)
    assert res.upserted_id == "c" and res.matched_count == 0
    res = await col.update_one({"_id": "c"}, {"$set": {"n": 2}}, upsert=True)
    assert res.upserted_id is None and res.matched_count == 1 and res.modified_count == 1


async def test_conditional_update_on_array_element_by_index(mongo_db: Database) -> None:
    col = mongo_db["compat_runs"]
    runs = [{"state": "exception"}, {"state": "failed"}, {"state": "pending"}]
    await col.insert_one({"_id": "t", "runs": runs})
    expect = {"_id": "t", "runs.2.state": "pending"}

    doc = await col.find_one_and_update(
        expect,
        {"$set": {"runs.2.state": "running", "runs.2.takenUntil": T0}},
        return_document=AFTER,
    )
    assert doc is not None
    assert doc["runs"][2] == {"state": "running", "takenUntil": T0}
    assert doc["runs"][:2] == runs[:2]
    # The same transition again finds nothing: the expected state is part of the filter.
    assert await col.find_one_and_update(expect, {"$set": {"runs.2.state": "running"}}) is None
    # Appending a new run and addressing it by its index in one conditional step.
    pushed = await col.find_one_and_update(
        {"_id": "t", "runs": {"$size": 3}},
        {"$push": {"runs": {"state": "pending"}}},
        return_document=AFTER,
    )
    assert pushed is not None and len(pushed["runs"]) == 4
    assert await col.count_documents({"runs.3.state": "pending"}) == 1


async def test_array_update_operators(mongo_db: Database) -> None:
    col = mongo_db["compat_arrays"]
    await col.insert_one({"_id": 1, "tags": ["a", "b"], "runs": [{"s": "x"}, {"s": "y", "n": 2}]})

    async def upd(update: Document) -> Document:
        doc = await col.find_one_and_update({"_id": 1}, update, return_document=AFTER)
        assert doc is not None
        return doc

    assert (await upd({"$push": {"tags": "c"}}))["tags"] == ["a", "b", "c"]
    # Only plain $each appends are portable; FerretDB ignores $slice/$position/$sort.
    assert (await upd({"$push": {"tags": {"$each": ["d", "e"]}}}))["tags"] == list("abcde")
    assert (await upd({"$push": {"new": {"$each": [1]}}}))["new"] == [1]
    # $pull by exact value: scalars, and whole sub-documents that match exactly.
    assert (await upd({"$pull": {"tags": "b"}}))["tags"] == list("acde")
    assert (await upd({"$pull": {"runs": {"s": "x"}}}))["runs"] == [{"s": "y", "n": 2}]
    assert (await upd({"$pullAll": {"tags": ["d", "e"]}}))["tags"] == ["a", "c"]
    assert (await upd({"$addToSet": {"tags": "a"}}))["tags"] == ["a", "c"]
    assert (await upd({"$addToSet": {"tags": {"$each": ["c", "f", "f"]}}}))["tags"] == [
        "a",
        "c",
        "f",
    ]
    assert (await upd({"$pop": {"tags": -1}}))["tags"] == ["c", "f"]


async def test_scalar_update_operators(mongo_db: Database) -> None:
    col = mongo_db["compat_scalars"]
    await col.insert_one({"_id": 1, "n": 2, "gone": True, "old": "v", "lo": T0, "hi": T0})

    doc = await col.find_one_and_update(
        {"_id": 1},
        {"$inc": {"n": 3, "fresh": 1}, "$unset": {"gone": ""}, "$rename": {"old": "renamed"}},
        return_document=AFTER,
    )
    assert doc is not None
    assert (doc["n"], doc["fresh"], doc["renamed"]) == (5, 1, "v")
    assert "gone" not in doc and "old" not in doc

    doc = await col.find_one_and_update(
        {"_id": 1}, {"$mul": {"n": 4, "absent": 3}}, return_document=AFTER
    )
    assert doc is not None and doc["n"] == 20 and doc["absent"] == 0  # $mul on missing -> 0

    earlier, later = T0 - dt.timedelta(minutes=1), T0 + dt.timedelta(minutes=1)
    # $min only lowers and $max only raises; on a missing field both simply set it.
    doc = await col.find_one_and_update(
        {"_id": 1},
        {"$min": {"lo": earlier, "hiMin": later}, "$max": {"hi": earlier}},
        return_document=AFTER,
    )
    assert doc is not None and (doc["lo"], doc["hi"], doc["hiMin"]) == (earlier, T0, later)
    doc = await col.find_one_and_update({"_id": 1}, {"$max": {"hi": later}}, return_document=AFTER)
    assert doc is not None and doc["hi"] == later

    before = dt.datetime.now(UTC) - dt.timedelta(seconds=5)
    doc = await col.find_one_and_update(
        {"_id": 1}, {"$currentDate": {"touched": True}}, return_document=AFTER
    )
    assert doc is not None and isinstance(doc["touched"], dt.datetime)
    assert before <= doc["touched"] <= dt.datetime.now(UTC) + dt.timedelta(seconds=5)


async def test_datetimes_round_trip_aware_utc_with_millisecond_precision(
    mongo_db: Database,
) -> None:
    col = mongo_db["compat_dates"]
    precise = dt.datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    await col.insert_many(
        [
            {"_id": "precise", "at": precise},
            {"_id": "offset", "at": dt.datetime(2025, 3, 4, 7, 6, 8, tzinfo=plus_two)},
        ]
    )
    doc = await col.find_one({"_id": "precise"})
    assert doc is not None
    # BSON dates hold milliseconds: microseconds are truncated (not rounded).
    assert doc["at"] == precise.replace(microsecond=123000)
    assert doc["at"].utcoffset() == dt.timedelta(0)
    offset = await col.find_one({"_id": "offset"})
    assert offset is not None and offset["at"] == dt.datetime(2025, 3, 4, 5, 6, 8, tzinfo=UTC)

    async def ids(flt: Document) -> list[object]:
        return [d["_id"] async for d in col.find(flt).sort("_id", ASCENDING)]

    stored = precise.replace(microsecond=123000)
    assert await ids({"at": {"$lt": stored}}) == []
    assert await ids({"at": {"$lte": stored}}) == ["precise"]
    assert await ids({"at": {"$lt": stored + dt.timedelta(milliseconds=1)}}) == ["precise"]
    assert await ids({"at": {"$gt": stored, "$lte": T0.replace(second=8)}}) == ["offset"]


async def test_query_operators(mongo_db: Database) -> None:
    col = mongo_db["compat_query"]
    await col.insert_many(
        [
            {"_id": 1, "tags": ["a", "b"], "nums": [1, 5], "runs": [{"state": "done"}], "x": 1},
            {"_id": 2, "tags": ["a"], "nums": [9], "runs": [{"state": "running"}]},
            {"_id": 3, "tags": [], "nums": [], "runs": [], "x": None},
        ]
    )

    async def ids(flt: Document) -> list[object]:
        return [d["_id"] async for d in col.find(flt).sort("_id", ASCENDING)]

    assert await ids({"tags": {"$size": 2}}) == [1]
    assert await ids({"tags": {"$size": 0}}) == [3]
    assert await ids({"x": {"$exists": True}}) == [1, 3]
    assert await ids({"x": {"$exists": False}}) == [2]
    assert await ids({"_id": {"$in": [2, 3, 99]}}) == [2, 3]
    assert await ids({"_id": {"$nin": [2]}, "tags": "a"}) == [1]
    assert await ids({"$or": [{"_id": 1}, {"tags": {"$size": 0}}]}) == [1, 3]
    assert await ids({"tags": {"$all": ["a", "b"]}}) == [1]
    assert await ids({"x": {"$ne": 1}}) == [2, 3]
    # $elemMatch with operators on a scalar array is portable ...
    assert await ids({"nums": {"$elemMatch": {"$gte": 2, "$lt": 6}}}) == [1]
    # ... but on sub-documents FerretDB never matches; a dotted path does the same job.
    assert await ids({"runs.state": "running"}) == [2]
    assert await ids({"runs.state": {"$in": ["done", "failed"]}}) == [1]


async def test_conditional_update_is_a_sequential_compare_and_set(mongo_db: Database) -> None:
    col = mongo_db["compat_cas"]
    await col.insert_one({"_id": "t", "state": "pending", "version": 0})
    first = await col.find_one_and_update(
        {"_id": "t", "state": "pending", "version": 0},
        {"$set": {"state": "running"}, "$inc": {"version": 1}},
        return_document=AFTER,
    )
    assert first is not None and first["version"] == 1
    # A caller still holding the old view loses, however it phrases the expectation.
    assert (
        await col.find_one_and_update({"_id": "t", "state": "pending"}, {"$set": {"s": 1}}) is None
    )
    res = await col.update_one({"_id": "t", "version": 0}, {"$set": {"s": 1}})
    assert (res.matched_count, res.modified_count) == (0, 0)


async def _race(
    rounds: int,
    setup: Callable[[int], Awaitable[object]],
    attempt: Callable[[int, int], Awaitable[bool]],
) -> list[int]:
    """Winners per round when RACERS coroutines attempt the same step at once."""
    winners = []
    for r in range(rounds):
        await setup(r)
        results = await asyncio.gather(*(attempt(r, i) for i in range(RACERS)))
        winners.append(sum(results))
    return winners


async def test_concurrent_conditional_updates_have_one_winner(mongo_db: Database) -> None:
    # Flotilla's every state change rests on this: of racers updating one document from
    # the same expected state, exactly one succeeds.
    col = mongo_db["compat_race_cas"]

    async def setup(r: int) -> None:
        await col.insert_one({"_id": r, "state": "pending"})

    async def by_find_and_modify(r: int, i: int) -> bool:
        won = await col.find_one_and_update(
            {"_id": r, "state": "pending"}, {"$set": {"state": "running", "by": i}}
        )
        return won is not None

    assert await _race(RACE_ROUNDS, setup, by_find_and_modify) == [1] * RACE_ROUNDS

    async def setup_more(r: int) -> None:
        await col.insert_one({"_id": 1000 + r, "state": "pending"})

    async def by_update_one(r: int, i: int) -> bool:
        result = await col.update_one(
            {"_id": 1000 + r, "state": "pending"}, {"$set": {"state": "running", "by": i}}
        )
        return result.modified_count == 1

    assert await _race(RACE_ROUNDS, setup_more, by_update_one) == [1] * RACE_ROUNDS


async def test_concurrent_increments_are_not_lost(mongo_db: Database) -> None:
    col = mongo_db["compat_race_inc"]
    await col.insert_one({"_id": "counter", "n": 0})
    await asyncio.gather(
        *(col.update_one({"_id": "counter"}, {"$inc": {"n": 1}}) for _ in range(300))
    )
    assert (await col.find_one({"_id": "counter"}))["n"] == 300


async def test_concurrent_insert_of_same_key_has_one_winner(mongo_db: Database) -> None:
    col = mongo_db["compat_race_insert"]

    async def noop(r: int) -> None:
        return None

    async def attempt(r: int, i: int) -> bool:
        try:
            await col.insert_one({"_id": f"claim/{r}", "by": i})
        except DuplicateKeyError as exc:
            assert exc.code == 11000
            return False
        return True

    assert await _race(RACE_ROUNDS, noop, attempt) == [1] * RACE_ROUNDS


async def test_concurrent_delete_of_same_doc_has_one_winner(mongo_db: Database) -> None:
    col = mongo_db["compat_race_delete"]

    async def setup(r: int) -> None:
        await col.insert_one({"_id": r, "state": "pending"})

    async def attempt(r: int, i: int) -> bool:
        return (await col.delete_one({"_id": r})).deleted_count == 1

    assert await _race(RACE_ROUNDS, setup, attempt) == [1] * RACE_ROUNDS


async def test_concurrent_upsert_of_same_key_inserts_once(mongo_db: Database) -> None:
    col = mongo_db["compat_race_upsert"]

    async def noop(r: int) -> None:
        return None

    async def attempt(r: int, i: int) -> bool:
        try:
            res = await col.update_one({"_id": r}, {"$setOnInsert": {"by": i}}, upsert=True)
        except DuplicateKeyError:
            # Both servers may reject a racing upsert's insert; callers retry as an update.
            return False
        return res.upserted_id is not None

    assert await _race(RACE_ROUNDS, noop, attempt) == [1] * RACE_ROUNDS
    assert await col.count_documents({}) == RACE_ROUNDS


async def test_update_many_on_indexed_field(mongo_db: Database) -> None:
    tasks = mongo_db["tasks"]
    await tasks.insert_many(
        [{"_id": f"t{i}", "takenUntil": T0 + dt.timedelta(minutes=i), "n": 0} for i in range(5)]
        + [{"_id": "no-claim", "n": 0}]
    )
    res = await tasks.update_many(
        {"takenUntil": {"$lt": T0 + dt.timedelta(minutes=3)}},
        {"$unset": {"takenUntil": ""}, "$inc": {"n": 1}},
    )
    assert (res.matched_count, res.modified_count) == (3, 3)
    assert await tasks.count_documents({"takenUntil": {"$exists": False}}) == 4
    assert await tasks.count_documents({"n": 1}) == 3


async def test_bulk_write_unordered(mongo_db: Database) -> None:
    col = mongo_db["compat_bulk"]
    await col.insert_many([{"_id": i, "x": 0} for i in range(3)])
    res = await col.bulk_write(
        [
            UpdateOne({"_id": 0}, {"$inc": {"x": 1}}),
            InsertOne({"_id": 10}),
            DeleteOne({"_id": 1}),
            UpdateOne({"_id": 11}, {"$set": {"x": 5}}, upsert=True),
        ],
        ordered=False,
    )
    assert (res.matched_count, res.modified_count, res.inserted_count) == (1, 1, 1)
    # Only the upserted _ids are portable: FerretDB numbers `upserted[].index` by upsert
    # (0, 1, ...) instead of by position in the batch, so the dict keys differ from MongoDB.
    assert (res.deleted_count, res.upserted_count) == (1, 1)
    assert list(res.upserted_ids.values()) == [11]

    with pytest.raises(BulkWriteError) as info:
        await col.bulk_write(
            [
                InsertOne({"_id": 0}),
                UpdateOne({"_id": 2}, {"$inc": {"x": 1}}),
                InsertOne({"_id": 12}),
            ],
            ordered=False,
        )
    details = info.value.details
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(0, 11000)]
    assert (details["nInserted"], details["nModified"]) == (1, 1)
    assert sorted([d["_id"] async for d in col.find({}, {"_id": 1})]) == [0, 2, 10, 11, 12]


async def test_insert_many_with_duplicate_in_the_middle(mongo_db: Database) -> None:
    docs: list[Document] = [{"_id": 1}, {"_id": 2}, {"_id": 1}, {"_id": 3}]
    unordered = mongo_db["compat_im_unordered"]
    with pytest.raises(BulkWriteError) as info:
        await unordered.insert_many([dict(d) for d in docs], ordered=False)
    assert info.value.code == 65  # pymongo's "multiple errors" wrapper
    errors = info.value.details["writeErrors"]
    assert [(e["index"], e["code"], e["op"]["_id"]) for e in errors] == [(2, 11000, 1)]
    assert info.value.details["nInserted"] == 3
    assert sorted([d["_id"] async for d in unordered.find()]) == [1, 2, 3]

    ordered = mongo_db["compat_im_ordered"]
    with pytest.raises(BulkWriteError) as info:
        await ordered.insert_many([dict(d) for d in docs], ordered=True)
    assert info.value.details["nInserted"] == 2  # ordered stops at the first error
    assert sorted([d["_id"] async for d in ordered.find()]) == [1, 2]


async def test_unique_indexes_raise_duplicate_key_error(mongo_db: Database) -> None:
    deps = mongo_db["compat_pairs"]
    await deps.create_indexes(
        [IndexModel([("dependent", ASCENDING), ("required", ASCENDING)], name="edge", unique=True)]
    )
    await deps.insert_one({"dependent": "a", "required": "b"})
    with pytest.raises(DuplicateKeyError) as info:
        await deps.insert_one({"dependent": "a", "required": "b"})
    assert info.value.code == 11000
    with pytest.raises(DuplicateKeyError):
        await deps.update_one(
            {"dependent": "a", "required": "b", "x": 1}, {"$set": {"y": 1}}, upsert=True
        )
    await deps.insert_one(
        {"dependent": "a", "required": "c"}
    )  # compound key: only the pair is unique

    # An update that collides fails too and changes nothing, but FerretDB reports
    # InternalError (code 1) instead of 11000: catch OperationFailure, not only 11000.
    with pytest.raises(OperationFailure):
        await deps.update_one({"required": "c"}, {"$set": {"required": "b"}})
    assert await deps.count_documents({"dependent": "a", "required": "c"}) == 1


async def test_sparse_unique_index_allows_many_missing(mongo_db: Database) -> None:
    col = mongo_db["compat_sparse"]
    await col.create_indexes(
        [IndexModel([("token", ASCENDING)], name="token", unique=True, sparse=True)]
    )
    await col.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3, "token": "t"}])
    with pytest.raises(DuplicateKeyError):
        await col.insert_one({"_id": 4, "token": "t"})


async def test_count_aggregate_distinct(mongo_db: Database) -> None:
    col = mongo_db["compat_agg"]
    await col.insert_many([{"_id": i, "q": f"q{i % 3}", "n": i, "live": i < 8} for i in range(10)])
    assert await col.count_documents({"live": True, "q": "q0"}) == 3
    assert await col.count_documents({}) == 10

    # One accumulator per $group: FerretDB 1.24 returns 0 for every accumulator after the first.
    pipeline: list[Document] = [
        {"$match": {"live": True}},
        {"$group": {"_id": "$q", "count": {"$sum": 1}}},
        {"$sort": {"count": -1, "_id": 1}},
        {"$limit": 2},
    ]
    rows = await (await col.aggregate(pipeline)).to_list()
    assert rows == [{"_id": "q0", "count": 3}, {"_id": "q1", "count": 3}]
    total = [{"$match": {"q": "q1"}}, {"$group": {"_id": None, "total": {"$sum": "$n"}}}]
    assert await (await col.aggregate(total)).to_list() == [{"_id": None, "total": 1 + 4 + 7}]

    assert sorted(await col.distinct("q")) == ["q0", "q1", "q2"]
    assert sorted(await col.distinct("q", {"n": {"$gte": 8}})) == ["q0", "q2"]


async def test_find_sort_skip_limit_hint_and_projection(mongo_db: Database) -> None:
    pending = mongo_db["pending"]
    await pending.insert_many([_pending(i, i % 3) for i in range(9)])
    cursor = (
        pending.find({"taskQueueId": "prov/wt"}, {"_id": 1})
        .sort(CLAIM_ORDER)
        .skip(2)
        .limit(3)
        .hint("claim_order")
    )
    assert [d["_id"] async for d in cursor] == ["p8", "p1", "p4"]
    by_spec = pending.find({}).sort([("taskId", ASCENDING)]).limit(1)
    by_spec = by_spec.hint([("taskId", ASCENDING), ("runId", ASCENDING)])
    assert [d["_id"] async for d in by_spec] == ["p0"]

    col = mongo_db["compat_projection"]
    await col.insert_one({"_id": 1, "a": {"b": 1, "c": 2}, "arr": [5, 6, 7], "big": "x" * 100})
    assert await col.find_one({"_id": 1}, {"a.b": 1}) == {"_id": 1, "a": {"b": 1}}
    assert await col.find_one({"_id": 1}, {"_id": 0, "a.c": 1, "arr": 1}) == {
        "a": {"c": 2},
        "arr": [5, 6, 7],
    }
    assert await col.find_one({"_id": 1}, {"big": 0, "a.b": 0}) == {
        "_id": 1,
        "a": {"c": 2},
        "arr": [5, 6, 7],
    }
    # Positional projection of the matched element works (`$slice` projection does not).
    assert await col.find_one({"_id": 1, "arr": 6}, {"arr.$": 1}) == {"_id": 1, "arr": [6]}


async def test_large_documents(mongo_db: Database) -> None:
    col = mongo_db["compat_large"]
    await col.insert_one({"_id": "arr", "items": list(range(10_000))})
    # $push and $set on the same array in one update conflict on both servers: two steps.
    res = await col.update_one({"_id": "arr", "items.5000": 5000}, {"$push": {"items": 10_000}})
    assert res.modified_count == 1
    res = await col.update_one(
        {"_id": "arr", "items": {"$size": 10_001}}, {"$set": {"items.0": -1}}
    )
    assert res.modified_count == 1
    assert await col.count_documents({"items": {"$size": 10_001}}) == 1
    doc = await col.find_one({"_id": "arr"})
    assert doc is not None and doc["items"][0] == -1 and doc["items"][-1] == 10_000

    blob = os.urandom(4 * 1024 * 1024)
    await col.insert_one({"_id": "blob", "data": blob})
    doc = await col.find_one({"_id": "blob"})
    assert doc is not None and doc["data"] == blob


async def test_index_information_and_list_indexes_shape(mongo_db: Database) -> None:
    info = await mongo_db["artifacts"].index_information()
    assert info["artifact"]["key"] == [("taskId", 1), ("runId", 1), ("name", 1)]
    assert info["artifact"]["unique"] is True
    assert not info["by_expires"].get("unique", False)
    assert info["_id_"]["key"] == [("_id", 1)]
    workers = await mongo_db["workers"].index_information()
    assert workers["worker"]["key"] == [("taskQueueId", 1), ("workerGroup", 1), ("workerId", 1)]
    # Sparse indexes exist, but FerretDB does not echo `sparse: True`, so only check the key.
    tasks_info = await mongo_db["tasks"].index_information()
    assert tasks_info["by_taken_until"]["key"] == [("takenUntil", 1)]

    listed = await (await mongo_db["claimed_runs"].list_indexes()).to_list()
    by_name = {ix["name"]: ix for ix in listed}
    assert set(by_name) == {"_id_", "by_queue"}
    assert list(by_name["by_queue"]["key"].items()) == [("taskQueueId", 1)]

    # Start-up re-runs ensure_indexes: an identical spec (one index per command) is a no-op.
    await dbmod.ensure_indexes(mongo_db)
    assert await mongo_db["artifacts"].index_information() == info
    with pytest.raises(OperationFailure) as same_name:
        await mongo_db["artifacts"].create_indexes(
            [IndexModel([("taskId", ASCENDING)], name="artifact")]
        )
    assert same_name.value.code == 86  # IndexKeySpecsConflict
    with pytest.raises(OperationFailure) as same_key:
        await mongo_db["artifacts"].create_indexes(
            [
                IndexModel(
                    [("taskId", ASCENDING), ("runId", ASCENDING), ("name", ASCENDING)],
                    name="renamed",
                    unique=True,
                )
            ]
        )
    assert same_key.value.code == 85  # IndexOptionsConflict


def _plan(explained: dict[str, object]) -> str:
    return str(explained.get("queryPlanner"))


@pytest.mark.parametrize(
    "filter_",
    [
        {"_id": "t-42"},
        {"_id": "t-42", "version": 3},  # a version-conditioned update's filter
        {"_id": {"$in": ["t-1", "t-42", "missing"]}},  # a batch of lookups
    ],
)
async def test_lookups_by_id_are_index_searches(mongo_db: Database, filter_: dict) -> None:
    await mongo_db.t.insert_many([{"_id": f"t-{i}", "version": 3} for i in range(100)])
    explained = await mongo_db.command("explain", {"find": "t", "filter": filter_})
    plan = _plan(explained)
    if "ferretdbVersion" in str(explained.get("serverInfo")):
        assert "USING INDEX" in plan and "SCAN" not in plan, plan
    else:  # MongoDB itself
        assert "IDHACK" in plan or "IXSCAN" in plan or "EXPRESS" in plan, plan
    found = [d["_id"] async for d in mongo_db.t.find(filter_)]
    assert sorted(found) == (["t-1", "t-42"] if "$in" in str(filter_) else ["t-42"])
