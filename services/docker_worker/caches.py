"""Named caches (reference §2.8): host directories `<root>/<name>/<instance>` bind-mounted
into containers. A run gets the most recently used instance nobody has mounted, else a
new empty one; instances a run flags for purge are deleted when it releases them.
Instances found on disk at start are reused, so caches outlive worker restarts.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CacheInstance:
    name: str
    path: Path


class Caches:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._mounted: set[Path] = set()

    def acquire(self, name: str) -> CacheInstance:
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        free = [p for p in directory.iterdir() if p.is_dir() and p not in self._mounted]
        path = max(free, key=lambda p: p.stat().st_mtime) if free else directory / uuid.uuid4().hex
        path.mkdir(exist_ok=True)
        self._mounted.add(path)
        return CacheInstance(name, path)

    def release(self, instance: CacheInstance, *, purge: bool) -> None:
        self._mounted.discard(instance.path)
        if purge:
            shutil.rmtree(instance.path, ignore_errors=True)
        elif instance.path.exists():
            os.utime(instance.path)  # most recently used first next time
