"""What the queue needs from wherever artifact bytes live: signed URLs, deletion, and the
HTTP routes (if any) the queue itself must serve for them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from aiohttp import web


class ByteStore(Protocol):
    kind: str  # "mongodb" or "s3"

    def upload_url(
        self, key: str, *, content_type: str, expires: datetime, length: int | None = None
    ) -> str:
        """A URL a client PUTs the bytes to, with exactly this Content-Type (and exactly
        `length` bytes, when the artifact declared one). No I/O."""
        ...

    def download_url(self, key: str, *, expires: datetime) -> str:
        """A URL anyone holding it may GET the bytes from until `expires`. No I/O."""
        ...

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store these (small) bytes under `key` directly, replacing what was there."""
        ...

    async def stat(self, key: str) -> int | None:
        """The length of the object stored under `key`, or None if there is none."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove these objects; keys that are missing are fine, so a retry is harmless."""
        ...

    def routes(self) -> list[web.RouteDef]:
        """Routes the queue app serves for this store, outside the Hawk-authenticated API."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...
