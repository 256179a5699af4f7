"""purge-cache's `since` and what a pool's listing shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.purge_cache import rules

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def test_since_is_read_as_upstream_reads_it() -> None:
    assert rules.parse_since(None) == rules.EPOCH
    assert rules.parse_since("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert rules.parse_since("2026-12-01T10:00:00.000Z") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    for bad in ("", "soon", "2026-13-01", "1970-01-01T00:00:00.000Z"):
        with pytest.raises(ValueError):
            rules.parse_since(bad)


def test_a_pool_shows_unexpired_requests_at_or_after_since_by_name() -> None:
    def request(name: str, before: datetime) -> dict[str, object]:
        return {"cacheName": name, "before": before, "expires": before + rules.REQUEST_LIFETIME}

    document = {
        "_id": "p/w",
        "caches": {
            "1": request("b", NOW - timedelta(hours=1)),
            "2": request("a", NOW - timedelta(minutes=1)),
            "3": request("old", NOW - timedelta(days=2)),
        },
    }
    names = [r["cacheName"] for r in rules.requested_since(document, rules.EPOCH, NOW)]
    assert names == ["a", "b"]
    recent = rules.requested_since(document, NOW - timedelta(minutes=1), NOW)
    assert [r["cacheName"] for r in recent] == ["a"]
    assert rules.requested_since(None, rules.EPOCH, NOW) == []
    assert rules.entry_out("p/w", recent[0])["before"] == "2026-12-02T11:59:00.000Z"
