"""Writable cache directories (`mounts` with `cacheName`), kept between tasks:
`<root>/<name>/<instance>`. A run takes the most recently used instance nobody holds,
else a new empty one (then pre-loaded from the mount's `content`, if any). Instances a
run flags for purge (`onExitStatus.purgeCaches`) are deleted when it releases them, and
so are instances created before a purge-cache request for their name.

Purge requests: `purgeRequests(workerPoolId, {since})` of the purge-cache service, read
before a run mounts caches; any error (no such service) means "none", as upstream
ignores them so that a worker never stalls on it.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CREATED_SUFFIX = ".created"  # beside each instance: its creation time (ISO)
SKEW = timedelta(minutes=5)  # upstream asks for requests since the last poll minus 5 min


@dataclass(frozen=True)
class CacheInstance:
    name: str
    path: Path
    new: bool


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).astimezone(UTC)


class Caches:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._held: set[Path] = set()
        self._since: datetime | None = None

    def acquire(self, name: str) -> CacheInstance:
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        free = [p for p in directory.iterdir() if p.is_dir() and p not in self._held]
        if free:
            path, new = max(free, key=lambda p: p.stat().st_mtime), False
        else:
            path, new = directory / uuid.uuid4().hex, True
            path.mkdir()
            Path(str(path) + CREATED_SUFFIX).write_text(datetime.now(UTC).isoformat())
        self._held.add(path)
        return CacheInstance(name, path, new)

    def release(self, instance: CacheInstance, *, purge: bool) -> None:
        self._held.discard(instance.path)
        if purge:
            self._delete(instance.path)
        elif instance.path.exists():
            os.utime(instance.path)  # most recently used first next time

    def _delete(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        Path(str(path) + CREATED_SUFFIX).unlink(missing_ok=True)

    async def apply_purge_requests(self, purge_cache: Any, pool_id: str) -> None:
        """Delete unheld instances older than a purge request for their name."""
        since = (self._since - SKEW) if self._since else datetime(2000, 1, 1, tzinfo=UTC)
        asked_at = datetime.now(UTC)
        try:
            answer = await purge_cache.purgeRequests(
                pool_id, query={"since": since.isoformat().replace("+00:00", "Z")}
            )
        except Exception as exc:
            log.debug("no purge requests", extra={"error": str(exc)[:200]})
            return
        self._since = asked_at
        for request in answer.get("requests", []):
            self.purge(request.get("cacheName", ""), _parse(request["before"]))

    def purge(self, name: str, before: datetime) -> None:
        directory = self.root / name
        if not name or not directory.is_dir():
            return
        for path in directory.iterdir():
            if not path.is_dir() or path in self._held:
                continue
            marker = Path(str(path) + CREATED_SUFFIX)
            created = (
                _parse(marker.read_text()) if marker.exists() else datetime(2000, 1, 1, tzinfo=UTC)
            )
            if created < before:
                log.info("cache purged", extra={"cache": name, "instance": path.name})
                self._delete(path)
