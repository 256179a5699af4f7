"""Our FerretDB build pushes filters on indexed fields and sorts on _id down to SQLite
(deploy/ferretdb/sqlite-index-pushdown.patch). The pushed SQL may only narrow what is read:
every query must answer exactly what the same query answers unpushed. The unpushed twin of
a query is the same filter under `$and` and the same sort with a second, absent key: the
patch pushes neither, so FerretDB reads every document and filters and sorts them itself.
`explain` shows which of the two was pushed. (Against MongoDB these hold trivially.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pymongo
import pytest
from bson import Int64, ObjectId
from pymongo.collection import Collection

from shared.config import Settings

OID = ObjectId("65a1b2c3d4e5f60718293a4b")

# _ids of every type, and strings whose JSON text orders differently from the strings
# themselves (escapes; the closing quote against " " and "!").
STRING_IDS = ["a", "ab", "ab ", "ab!", "ab#", 'a"b', "a\\b", "a<b", "a&b", "é", "\u2028", "", "Z~"]
OTHER_IDS: list[Any] = [
    1,
    2.5,
    Int64(3),
    -4,
    None,
    OID,
    True,
    {"k": 1},
    datetime(2026, 1, 2, tzinfo=UTC),
]

# Values of `g` (a compound index's prefix) and `n` (a single-field index); `u` has none.
G_VALUES: list[Any] = [
    "a",
    ["x", "a"],
    ["x"],
    [{"g": "a"}],  # (FerretDB stores no nested arrays)
    [],
    "A",
    "a ",
    "a<b",
    'q"x',
    "l\u2028s",
    "",
    str(OID),
    OID,
    None,
    1,
    {"a": 1},
]
N_VALUES: list[Any] = [1, 1.0, Int64(1), [1, 2], "1", 2, None, 1.5]


@pytest.fixture
def tasks(settings: Settings) -> Iterator[Collection]:
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_url, serverSelectionTimeoutMS=5000
    )
    name = f"test_{uuid.uuid4().hex[:12]}"
    try:
        yield _fill(client[name]["tasks"])
    finally:
        client.drop_database(name)
        client.close()


def _fill(collection: Collection) -> Collection:
    collection.create_index([("g", 1), ("_id", 1)], name="by_g")
    collection.create_index([("n", 1)], name="by_n")
    documents = []
    for i, _id in enumerate(STRING_IDS + OTHER_IDS):
        document: dict[str, Any] = {"_id": _id, "u": "x" if i % 2 else "y"}
        if i % 5 != 4:  # some documents have neither field
            document["g"] = G_VALUES[i % len(G_VALUES)]
            document["n"] = N_VALUES[i % len(N_VALUES)]
        documents.append(document)
    # A group of plain string ids, as task groups are, for paging.
    documents += [{"_id": f"t{k:03d}", "g": "a", "n": k % 3, "u": "x"} for k in range(40)]
    collection.insert_many(documents)
    return collection


def unpushed(filter_: dict[str, Any]) -> dict[str, Any]:
    return {"$and": [filter_]} if filter_ else {}


def ids(cursor: Any) -> list[Any]:
    return [document["_id"] for document in cursor]


def assert_same(
    tasks: Collection,
    filter_: dict[str, Any],
    direction: int | None = None,
    limit: int = 0,
    skip: int = 0,
    batch_size: int = 0,
) -> list[Any]:
    pushed = tasks.find(filter_, limit=limit, skip=skip, batch_size=batch_size)
    reference = tasks.find(unpushed(filter_), limit=limit, skip=skip, batch_size=batch_size)
    if direction is not None:
        pushed = pushed.sort("_id", direction)
        reference = reference.sort([("_id", direction), ("absent", 1)])
        got, want = ids(pushed), ids(reference)
        assert got == want, (filter_, direction, limit, skip)
    else:
        got, want = ids(pushed), ids(reference)
        assert sorted(map(repr, got)) == sorted(map(repr, want)), filter_
    assert tasks.count_documents(filter_) == tasks.count_documents(unpushed(filter_)), filter_
    return got


def explain(tasks: Collection, filter_: dict[str, Any], sort: dict[str, int] | None = None) -> Any:
    command: dict[str, Any] = {"find": tasks.name, "filter": filter_}
    if sort:
        command["sort"] = sort
    return tasks.database.command("explain", command)


def test_the_pushed_queries_use_the_indexes_and_their_twins_do_not(tasks: Collection) -> None:
    group = explain(tasks, {"g": "a", "_id": {"$gt": "t010"}}, {"_id": 1})
    assert group["filterPushdown"] and group["sortPushdown"]
    assert any("USING INDEX" in line and "by_g" in line for line in group["queryPlanner"]["Plan"])
    assert any("USING INDEX" in line for line in explain(tasks, {"n": "1"})["queryPlanner"]["Plan"])
    twin = explain(tasks, unpushed({"g": "a", "_id": {"$gt": "t010"}}), {"_id": 1, "absent": 1})
    assert not twin["filterPushdown"] and not twin["sortPushdown"]
    assert not explain(tasks, {"u": "x"})["filterPushdown"]  # no index on u
    assert not explain(tasks, {"n": 1})["filterPushdown"]  # numbers are never pushed


@pytest.mark.parametrize(
    "value",
    ["a", {"$eq": "a"}, "A", "a ", "a<b", 'q"x', "l\u2028s", "", "x", str(OID), OID, "nothing"],
    ids=repr,
)
def test_equality_on_an_indexed_field_matches_scalars_and_arrays(
    tasks: Collection, value: Any
) -> None:
    got = assert_same(tasks, {"g": value})
    if value == "a":  # the scalar, the array holding it, the group
        assert "ab" in got and "ab!" not in got and len(got) > 40


@pytest.mark.parametrize("value", [1, 1.0, Int64(1), 2, "1", None, 1.5], ids=repr)
def test_equality_on_numbers_and_null(tasks: Collection, value: Any) -> None:
    assert_same(tasks, {"n": value})


@pytest.mark.parametrize(
    "filter_",
    [
        {"_id": {"$gt": "ab"}},
        {"_id": {"$gte": "ab"}},
        {"_id": {"$lt": "ab!"}},
        {"_id": {"$lte": "a<b"}},
        {"_id": {"$gt": "", "$lt": "t"}},
        {"_id": {"$gte": "a", "$lte": "ab "}},
        {"_id": {"$gt": "é"}},
        {"_id": {"$lt": "\u2028"}},
        {"_id": {"$gt": 1}},
        {"_id": "ab!"},
        {"_id": {"$in": ["ab", "a<b", "t001", "none"]}},
        {"_id": {"$eq": "é"}},
        {"_id": {"$gt": "a"}, "g": "a"},
        {"_id": {"$lt": "t020"}, "g": "a", "n": 2},
        {"g": "a", "u": "x"},
        {"g": "a", "n": Int64(1)},
        {},
    ],
    ids=repr,
)
@pytest.mark.parametrize("direction", [1, -1])
def test_id_ranges_sorted_both_ways(
    tasks: Collection, filter_: dict[str, Any], direction: int
) -> None:
    assert_same(tasks, filter_, direction)
    assert_same(tasks, filter_, direction, limit=3)
    assert_same(tasks, filter_, direction, limit=5, skip=2, batch_size=2)


def test_sort_on_id_orders_every_type_as_mongodb_does(tasks: Collection) -> None:
    got = assert_same(tasks, {}, 1)
    assert got[:4] == [None, -4, 1, 2.5]
    strings = [i for i in got if isinstance(i, str)]
    assert strings == sorted(strings, key=lambda s: s.encode())
    assert got[-1] == datetime(2026, 1, 2)  # noqa: DTZ001 - PyMongo decodes naive UTC
    assert assert_same(tasks, {}, -1) == got[::-1]


@pytest.mark.parametrize("direction", [1, -1])
def test_paging_a_group_as_list_task_group_does(tasks: Collection, direction: int) -> None:
    """`_id > last` (or `<` going down), sorted, limit page + 1, small batches: every
    string id once, in order, each page the same as unpushed."""
    seen: list[Any] = []
    last = None
    while True:
        filter_: dict[str, Any] = {"g": "a"}
        if last is not None:
            filter_["_id"] = {"$gt" if direction == 1 else "$lt": last}
        page = assert_same(tasks, filter_, direction, limit=8, batch_size=3)
        seen += page[:7]
        if len(page) <= 7:
            break
        last = page[6]
    everything = ids(tasks.find(unpushed({"g": "a"})).sort([("_id", direction), ("absent", 1)]))
    # A string bound reaches only string ids (a non-string one sorts first or last).
    assert strings(seen) == strings(everything) and len(strings(seen)) > 40


def strings(values: list[Any]) -> list[str]:
    return [value for value in values if isinstance(value, str)]


def test_updates_and_deletes_by_an_indexed_field_reach_every_match(tasks: Collection) -> None:
    want = tasks.count_documents(unpushed({"g": "a"}))
    assert tasks.update_many({"g": "a"}, {"$set": {"seen": True}}).modified_count == want
    assert tasks.count_documents({"seen": True}) == want
    doomed = {"g": "a", "_id": {"$gte": "t"}}
    gone = tasks.count_documents(unpushed(doomed))
    assert gone >= 40
    assert tasks.delete_many(doomed).deleted_count == gone
    assert tasks.count_documents(unpushed({"g": "a"})) == want - gone
