"""Our FerretDB build reuses compiled SQLite statements (deploy/ferretdb/modernc-sqlite/
statement-cache.patch). Reuse must never show a reader old data or let two result sets of
the same query disturb each other. (Against MongoDB these hold trivially.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pymongo
import pytest
from pymongo.database import Database

from shared.config import Settings


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    # One connection, so every statement runs on the same server-side session.
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_url, maxPoolSize=1, serverSelectionTimeoutMS=5000
    )
    name = f"test_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


def test_two_open_cursors_of_the_same_query_each_see_everything(database: Database) -> None:
    database.docs.insert_many([{"_id": n} for n in range(10)])
    first = database.docs.find({}, batch_size=2).sort("_id", 1)
    second = database.docs.find({}, batch_size=2).sort("_id", 1)
    seen_first, seen_second = [], []
    for _ in range(10):  # interleaved: both result sets are open at once
        seen_first.append(next(first)["_id"])
        seen_second.append(next(second)["_id"])
    assert seen_first == seen_second == list(range(10))


def test_a_repeated_read_sees_every_write_before_it(database: Database) -> None:
    database.docs.insert_one({"_id": "t", "version": 0})
    for version in range(1, 40):
        # Left open half-read: its statement stays busy while the same query runs again.
        half_read = database.docs.find({}, batch_size=1)
        next(half_read)
        result = database.docs.update_one(
            {"_id": "t", "version": version - 1}, {"$set": {"version": version}}
        )
        assert result.modified_count == 1
        assert database.docs.find_one({"_id": "t"})["version"] == version
        assert [d["version"] for d in database.docs.find({})] == [version]
        half_read.close()


def test_a_failed_statement_does_not_poison_the_next(database: Database) -> None:
    database.docs.insert_one({"_id": "same"})
    for _ in range(5):
        with pytest.raises(pymongo.errors.DuplicateKeyError):
            database.docs.insert_one({"_id": "same"})
        database.docs.insert_one({"_id": uuid.uuid4().hex})
    assert database.docs.count_documents({}) == 6
