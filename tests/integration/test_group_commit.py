"""Group commit against the real server: concurrent writes leave as few bulk commands,
each caller still hears its own write's outcome."""

from __future__ import annotations

import asyncio

import pytest
from pymongo import InsertOne, UpdateOne
from pymongo.errors import BulkWriteError

from shared import db as dbmod
from shared.group_commit import GroupCommit


async def test_concurrent_writes_leave_together_and_all_land(mongo_db: dbmod.Database) -> None:
    commit = GroupCommit(mongo_db["counters"])
    await asyncio.gather(
        *(
            commit.write(UpdateOne({"_id": f"c{i % 5}"}, {"$inc": {"n": 1}}, upsert=True))
            for i in range(100)
        )
    )
    counts = {d["_id"]: d["n"] async for d in mongo_db["counters"].find({})}
    assert counts == {f"c{i}": 20 for i in range(5)}
    # All were issued before the first command left: they share it.
    assert commit.commands == 1


async def test_each_caller_hears_only_its_own_failure(mongo_db: dbmod.Database) -> None:
    commit = GroupCommit(mongo_db["things"])
    await commit.write(InsertOne({"_id": "taken"}))
    results = await asyncio.gather(
        commit.write(InsertOne({"_id": "a"})),
        commit.write(InsertOne({"_id": "taken"})),
        commit.write(InsertOne({"_id": "taken"}), ignore_duplicate=True),
        commit.write(InsertOne({"_id": "b"})),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None and results[3] is None
    assert isinstance(results[1], BulkWriteError)
    assert {d["_id"] async for d in mongo_db["things"].find({})} == {"taken", "a", "b"}


async def test_a_write_on_an_idle_collection_is_not_held_back(mongo_db: dbmod.Database) -> None:
    commit = GroupCommit(mongo_db["solo"])
    for i in range(3):
        await commit.write(InsertOne({"_id": i}))
    assert commit.commands == 3  # nothing to wait for: each left at once
    with pytest.raises(BulkWriteError):
        await commit.write(InsertOne({"_id": 0}))
