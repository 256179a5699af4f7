"""The index's rules as pure functions: namespaces, storage keys, rank, expiry, and what a
completed task's `index.*` routes ask to be indexed (reference §3).

Storage keys. Both collections (`index_namespaces`, `index_tasks`) key a row by its
parent namespace and its own name joined by '/': `a.b.c` is stored as `a.b/c`, a
top-level `a` as `/a`. '/' can never occur in a namespace key (`[a-zA-Z0-9_!~*'()%-]`,
and '.' only between keys), so:
- findTask `a.b.c` is one get by `_id` = `a.b/c` (the only query FerretDB answers from
  an index, and the cheapest on MongoDB);
- the direct children of `a.b` are exactly the `_id`s starting with `a.b/`, that is the
  `_id` range [`a.b/`, `a.b0`) ('0' follows '/'), read in name order from the `_id`
  index and continued from the last `_id` of a page. Grandchildren (`a.b.c/d`) start with
  `a.b.`, never `a.b/`, so they fall outside the range.
Rows keep the full `namespace` too, so answers need no reassembly. (Our FerretDB build
pushes `_id` equality and `$in` down to SQLite, not yet ranges: there the listings read
the collection, findTask and every write stay index lookups.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from shared.timeutil import parse_ts, to_utc

KEY = r"[a-zA-Z0-9_!~*'()%-]+"
NAMESPACE_PATTERN = rf"^(?:{KEY})(?:\.{KEY})*$"
_NAMESPACE = re.compile(NAMESPACE_PATTERN)
MAX_NAMESPACE_LENGTH = 255
SEPARATOR = "/"
_AFTER_SEPARATOR = chr(ord(SEPARATOR) + 1)
DEFAULT_EXPIRY = timedelta(days=365)  # a task without `expires` (never ours) as upstream


def is_namespace(value: str) -> bool:
    return len(value) <= MAX_NAMESPACE_LENGTH and _NAMESPACE.fullmatch(value) is not None


def split(namespace: str) -> tuple[str, str]:
    """(`a.b`, `c`) for `a.b.c`; (``, `a`) for `a`."""
    parent, _, name = namespace.rpartition(".")
    return parent, name


def row_id(namespace: str) -> str:
    parent, name = split(namespace)
    return f"{parent}{SEPARATOR}{name}"


def children_range(parent: str) -> tuple[str, str]:
    """[low, high) of the `_id`s of `parent`'s direct children (`` for the top level)."""
    return parent + SEPARATOR, parent + _AFTER_SEPARATOR


def ancestors(namespace: str) -> list[str]:
    """The namespaces an entry at `namespace` lives under: `a`, `a.b` for `a.b.c`."""
    keys = namespace.split(".")
    return [".".join(keys[:n]) for n in range(1, len(keys))]


def namespace_expiry(entry_expires: datetime) -> datetime:
    """A namespace lives until the midnight (UTC) after its latest entry expires; upstream
    rounds to the next midnight so a busy namespace is not rewritten on every insert."""
    day = to_utc(entry_expires).date() + timedelta(days=1)
    return datetime.combine(day, time(0), tzinfo=to_utc(entry_expires).tzinfo)


def is_live(expires: datetime, now: datetime) -> bool:
    return to_utc(expires) > to_utc(now)


@dataclass(frozen=True)
class Entry:
    namespace: str
    task_id: str
    rank: float
    data: dict[str, Any]
    expires: datetime


def from_task(
    task_id: str,
    routes: list[str],
    extra: dict[str, Any],
    task_expires: datetime | None,
    created: datetime,
    prefix: str = "index.",
) -> tuple[list[Entry], list[str]]:
    """The entries a completed task's routes ask for, and why any were skipped.

    Upstream: every route `index.<ns>` with a valid `<ns>` (others silently dropped),
    rank/data/expires from `extra.index` (rank 0, data {}, the task's expiry by default);
    a rank that is not a number or data that is not an object skips the whole task."""
    namespaces = [r[len(prefix) :] for r in routes if r.startswith(prefix)]
    namespaces = [ns for ns in namespaces if is_namespace(ns)]
    if not namespaces:
        return [], []
    options = extra.get("index") if isinstance(extra, dict) else None
    options = options if isinstance(options, dict) else {}
    rank = options.get("rank", 0)
    if isinstance(rank, bool) or not isinstance(rank, int | float):
        return [], [f"extra.index.rank is not a number: {rank!r}"]
    data = options.get("data", {})
    if not isinstance(data, dict):
        return [], [f"extra.index.data is not an object: {data!r}"]
    expires = task_expires or created + DEFAULT_EXPIRY
    if "expires" in options:
        try:
            expires = parse_ts(options["expires"])
        except (ValueError, TypeError):
            return [], [f"extra.index.expires is not a date-time: {options['expires']!r}"]
    return [Entry(ns, task_id, rank, data, expires) for ns in namespaces], []
