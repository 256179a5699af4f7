"""The purge-cache rules as pure functions (reference §2): `since`, what a worker pool's
listing shows, and the one-document-per-pool storage shape.

Storage: one document per worker pool, `_id` = workerPoolId, holding its requests in a
map keyed by a digest of the cache name (a cache name may hold '.' or '$', which a
field path cannot). purgeRequests, which every worker calls before its tasks, is then
one get by `_id` (no scan, on MongoDB or FerretDB), and purgeCache one upsert of one
field, safe to repeat.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.timeutil import format_ts, parse_ts, to_utc

# upstream's URL regex, looser than a task queue id's
WORKER_POOL_ID_PATTERN = r"^[A-Za-z0-9_-]{1,38}(?:/|%2[Ff])[A-Za-z0-9_-]{1,38}$"
REQUEST_LIFETIME = timedelta(days=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def pool_id(raw: str) -> str:
    return raw.replace("%2F", "/").replace("%2f", "/")


def cache_key(cache_name: str) -> str:
    return hashlib.sha256(cache_name.encode()).hexdigest()[:32]


def parse_since(text: str | None) -> datetime:
    """`since` as upstream reads it: absent means the epoch; a date that does not parse is
    the caller's error, and so is the epoch itself (JS `Date.parse` gives 0, falsy)."""
    if text is None:
        return EPOCH
    try:
        since = parse_ts(text + "T00:00:00Z" if _DATE_ONLY.match(text) else text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"since {text!r} is not a date-time") from exc
    if since == EPOCH:
        raise ValueError("since may not be the epoch (upstream rejects it)")
    return since


def entry_out(worker_pool_id: str, request: dict[str, Any]) -> dict[str, Any]:
    provisioner_id, worker_type = worker_pool_id.split("/", 1)
    return {
        "provisionerId": provisioner_id,
        "workerType": worker_type,
        "cacheName": request["cacheName"],
        "before": format_ts(request["before"]),
    }


def open_requests(document: dict[str, Any] | None, now: datetime) -> list[dict[str, Any]]:
    """A pool's unexpired requests, by cache name."""
    if document is None:
        return []
    live = [r for r in document.get("caches", {}).values() if to_utc(r["expires"]) > now]
    return sorted(live, key=lambda r: r["cacheName"])


def requested_since(
    document: dict[str, Any] | None, since: datetime, now: datetime
) -> list[dict[str, Any]]:
    """purgeRequests: the pool's open requests with `before >= since`."""
    return [r for r in open_requests(document, now) if to_utc(r["before"]) >= since]
