"""The index's pure rules: storage keys, namespace expiry, rank, and what a completed
task's routes ask to be indexed."""

from __future__ import annotations

from datetime import UTC, datetime

from services.index import entries

NOW = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)


def test_children_of_a_namespace_are_one_id_range_without_grandchildren() -> None:
    low, high = entries.children_range("a.b")
    ids = sorted(entries.row_id(n) for n in ("a.b.c", "a.b.d", "a.b.c.x", "a.bb.c", "a.b", "a.c"))
    inside = [i for i in ids if low <= i < high]
    assert inside == ["a.b/c", "a.b/d"]
    top_low, top_high = entries.children_range("")
    assert [i for i in ids if top_low <= i < top_high] == []
    assert top_low <= entries.row_id("a") < top_high


def test_namespaces_are_checked_like_upstream() -> None:
    assert entries.is_namespace("gecko.v2.mozilla-central.latest.firefox!(x)~*'%")
    for bad in ("", "a..b", ".a", "a.", "a/b", "a b", "x" * 256):
        assert not entries.is_namespace(bad)
    assert entries.ancestors("a.b.c") == ["a", "a.b"]
    assert entries.ancestors("a") == []


def test_namespace_expiry_is_the_next_midnight() -> None:
    assert entries.namespace_expiry(NOW) == datetime(2026, 12, 3, tzinfo=UTC)


def test_a_completed_task_indexes_its_valid_index_routes_with_extra_index() -> None:
    found, problems = entries.from_task(
        "T",
        ["index.a.b", "index.bad..ns", "notify.x", "index.c"],
        {"index": {"rank": 4, "data": {"k": 1}, "expires": "2027-01-01T00:00:00.000Z"}},
        NOW,
        NOW,
    )
    assert problems == []
    assert [(e.namespace, e.rank, e.data) for e in found] == [
        ("a.b", 4, {"k": 1}),
        ("c", 4, {"k": 1}),
    ]
    assert found[0].expires == datetime(2027, 1, 1, tzinfo=UTC)
    defaults, _ = entries.from_task("T", ["index.a"], {}, NOW, NOW)
    assert (defaults[0].rank, defaults[0].data, defaults[0].expires) == (0, {}, NOW)


def test_a_task_with_a_bad_rank_or_data_is_not_indexed() -> None:
    for extra in ({"index": {"rank": "1"}}, {"index": {"rank": True}}, {"index": {"data": []}}):
        found, problems = entries.from_task("T", ["index.a"], extra, NOW, NOW)
        assert found == [] and problems
