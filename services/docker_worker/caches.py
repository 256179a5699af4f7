"""Named caches (reference §2.8): host directories `<root>/<name>/<instance>` bind-mounted
into containers. A run gets the most recently used instance nobody has mounted, else a
new empty one; instances a run flags for purge are deleted when it releases them.
Instances found on disk at start are reused, so caches outlive worker restarts.

An instance's directory name starts with its creation time (epoch ms), so purge requests
("drop caches created before T") need no side files; instances from before that naming
count as created at the epoch. `PurgeChecker` asks the purge-cache service for those
requests before a task mounts caches (reference §2, as generic-worker does).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.docker_worker.payload import CACHE_NAME_PATTERN
from shared.timeutil import from_epoch_ms, parse_ts, to_epoch_ms, utcnow

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# generic-worker's margins: a cache created up to 5 minutes after a request's `before` is
# still dropped (clocks differ), and each query reaches 5 minutes before the last one.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class CacheInstance:
    name: str
    path: Path


def created_at(path: Path) -> datetime:
    stamp = path.name.split("-", 1)[0]
    return from_epoch_ms(int(stamp)) if stamp.isdigit() else EPOCH


class Caches:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._mounted: set[Path] = set()
        self._doomed: set[Path] = set()  # purged while mounted: deleted on release

    def acquire(self, name: str) -> CacheInstance:
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        free = [p for p in directory.iterdir() if p.is_dir() and p not in self._mounted]
        if free:
            path = max(free, key=lambda p: p.stat().st_mtime)
        else:
            path = directory / f"{to_epoch_ms(utcnow())}-{uuid.uuid4().hex}"
        path.mkdir(exist_ok=True)
        self._mounted.add(path)
        return CacheInstance(name, path)

    def release(self, instance: CacheInstance, *, purge: bool) -> None:
        self._mounted.discard(instance.path)
        if purge or instance.path in self._doomed:
            self._doomed.discard(instance.path)
            shutil.rmtree(instance.path, ignore_errors=True)
        elif instance.path.exists():
            os.utime(instance.path)  # most recently used first next time

    def drop_created_before(self, name: str, before: datetime) -> int:
        """Delete the instances of cache `name` created before `before` (with the clock
        margin); one in use is deleted when released. How many were dropped or doomed."""
        if not CACHE_NAME_PATTERN.fullmatch(name) or name in (".", ".."):
            return 0  # not a name a task could have mounted; never a path to follow
        directory = self.root / name
        if not directory.is_dir():
            return 0
        dropped = 0
        for path in directory.iterdir():
            if path.is_dir() and created_at(path) - CLOCK_SKEW < before:
                dropped += 1
                if path in self._mounted:
                    self._doomed.add(path)
                else:
                    shutil.rmtree(path, ignore_errors=True)
        return dropped


# `since` (None the first time) → the purge requests of this worker's pool, as
# purge-cache's purgeRequests answers them: [{cacheName, before, ...}].
FetchRequests = Callable[[datetime | None], Awaitable[list[dict[str, Any]]]]


class PurgeChecker:
    """Before a task uses caches: ask which caches of this worker pool were purged since
    the last check and drop the local instances created before each request.

    Self-contained (a fetch function and the Caches) so any worker loop can call it. A
    failed query raises; the caller warns and keeps its caches, as generic-worker does,
    and the next check asks again from the last successful one."""

    def __init__(self, caches: Caches, fetch: FetchRequests) -> None:
        self.caches = caches
        self.fetch = fetch
        self._last: datetime | None = None
        # Requests already carried out (cache name → its `before`): the queries overlap by
        # the clock margin, and a request seen again must not drop the caches made since.
        self._applied: dict[str, datetime] = {}
        self._lock = asyncio.Lock()  # concurrent task starts share one query

    async def check(self) -> list[str]:
        """The cache names it dropped instances of."""
        async with self._lock:
            started = utcnow()
            since = None if self._last is None else self._last - CLOCK_SKEW
            requests = await self.fetch(since)
            dropped = []
            for request in requests:
                name, before = request["cacheName"], parse_ts(request["before"])
                if self._applied.get(name, EPOCH) >= before:
                    continue
                if self.caches.drop_created_before(name, before):
                    dropped.append(name)
                self._applied[name] = before
            self._last = started
            if dropped:
                log.info("dropped purged caches", extra={"caches": dropped})
            return dropped
