"""The embedded byte store (`kind = "mongodb"`, formerly "gridfs"): bytes in MongoDB (see
`chunks`), moved by the queue itself at signed, expiring URLs (see `signing`). Any
replica serves any URL: the signature is checked with the shared secret and the bytes
are read from the database.

These routes sit outside the Hawk-authenticated API (the signature is the credential)
but inside the queue's error middleware, which formats the ApiErrors raised here.

The server must run with `auto_decompress=False` (a `web.run_app` / `AppRunner` option):
otherwise aiohttp inflates a PUT body sent with `Content-Encoding: gzip` before this
handler sees it. The Content-Length check then refuses such an upload (400), but one sent
without a length would be stored decoded, yet labelled gzip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from aiohttp import hdrs, web

from shared import errors
from shared.api import COMMON_HEADERS, error_body, json_response, paced_chunks
from shared.artifact_bytes import signing
from shared.artifact_bytes.chunks import ChunkStore, StoredObject
from shared.artifact_bytes.ranges import ByteRange, RangeNotSatisfiable, parse_range
from shared.db import Database

log = logging.getLogger(__name__)


class EmbeddedStore:
    kind: str = "mongodb"  # FLOTILLA_ARTIFACT_STORE; "gridfs" is its old name

    def __init__(
        self,
        db: Database,
        *,
        secret_key: str,
        url_base: str,
        path_prefix: str = signing.PATH_PREFIX,
        max_bytes: int | None = None,
    ) -> None:
        self._chunks = ChunkStore(db)
        self._signing_key = signing.derive_key(secret_key)
        self._url_base = url_base
        # The queue serves `/artifact-bytes/v1/`; the object service its own prefix under
        # `/api/object/v1/`, so one root URL (the ingress) routes each to its server.
        self._path_prefix = path_prefix
        self._max_bytes = max_bytes  # per artifact; None: unbounded

    def upload_url(
        self, key: str, *, content_type: str, expires: datetime, length: int | None = None
    ) -> str:
        return signing.signed_url(
            self._url_base,
            self._signing_key,
            method="PUT",
            key=key,
            expires=int(expires.timestamp()),
            content_type=content_type,
            length=length,
            path_prefix=self._path_prefix,
        )

    def download_url(self, key: str, *, expires: datetime) -> str:
        return signing.signed_url(
            self._url_base,
            self._signing_key,
            method="GET",
            key=key,
            expires=int(expires.timestamp()),
            path_prefix=self._path_prefix,
        )

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        async def body() -> AsyncIterator[bytes]:
            yield data

        await self._chunks.write(
            key, body(), content_type=content_type, content_encoding=None, expected_length=len(data)
        )

    async def stat(self, key: str) -> int | None:
        stored = await self._chunks.find(key)
        return None if stored is None else stored.length

    async def delete(self, keys: Sequence[str]) -> None:
        await self._chunks.delete(keys)

    def routes(self) -> list[web.RouteDef]:
        # aiohttp's GET route answers HEAD too (with the same handler, minus the body).
        route = self._path_prefix + "{key:.+}"
        return [web.put(route, self._put), web.get(route, self._get)]

    async def start(self) -> None:
        """Nothing to prepare: both collections are read and written by `_id` alone."""

    async def close(self) -> None:
        """Nothing to release: the database client belongs to the caller."""

    async def _put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        content_type = request.headers.get(hdrs.CONTENT_TYPE, "")
        declared = _declared_length(request.query.get("length"))
        self._verify(request, "PUT", key, content_type, declared)
        # Refused before a byte is read: an upload must be as long as the artifact
        # declared (so artifact-info stays true) and never longer than the maximum.
        expected = upload_length(request.content_length, declared, self._max_bytes)
        try:
            stored = await self._chunks.write(
                key,
                # Streamed: aiohttp stops reading the socket while this reader's buffer
                # is full, so an upload of any size costs a bounded amount of memory.
                _bounded(paced_chunks(request), self._max_bytes),
                content_type=content_type,
                content_encoding=request.headers.get(hdrs.CONTENT_ENCODING),
                expected_length=expected,
            )
        except (web.RequestPayloadError, ConnectionError) as exc:
            # The client broke off or sent a malformed body: its fault, not an incident.
            raise errors.InputError(f"The request body could not be read: {exc}") from exc
        log.info("artifact bytes stored", extra={"key": key, "length": stored.length})
        return web.Response(status=200, headers={hdrs.ETAG: _etag(stored)})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        self._verify(request, "GET", key)  # a GET URL serves HEAD too
        stored = await self._chunks.find(key)
        if stored is None:
            raise errors.ResourceNotFound(f"No artifact bytes are stored under {key!r}.")
        try:
            wanted = parse_range(request.headers.get(hdrs.RANGE), stored.length)
        except RangeNotSatisfiable as exc:
            # Returned, not raised: a 416 carries the length so a client can retry.
            headers = {hdrs.CONTENT_RANGE: f"bytes */{stored.length}"}
            return json_response(error_body(request, exc), exc.status, headers)
        span = wanted or ByteRange(0, stored.length - 1)
        response = web.StreamResponse(status=200 if wanted is None else 206)
        response.headers.update(_headers(stored))
        # The error middleware adds these after the handler returns: too late for a
        # response whose headers are already out. Browsers (the UI) need the CORS ones.
        for name, value in COMMON_HEADERS.items():
            response.headers.setdefault(name, value)
        if wanted is not None:
            response.headers[hdrs.CONTENT_RANGE] = wanted.content_range(stored.length)
        response.content_length = span.length
        await response.prepare(request)
        if request.method == hdrs.METH_HEAD:
            return response
        try:
            async for piece in self._chunks.read(stored, span.start, span.end):
                await response.write(piece)
        except ConnectionError:
            pass  # the client went away
        except Exception:
            # The status line is out, so no error response can follow (and the error
            # middleware must not try one). Cutting the connection short of
            # Content-Length is the only way left to tell the client its copy is bad.
            log.exception("artifact download broke off", extra={"key": key})
            if request.transport is not None:
                request.transport.abort()
        return response

    def _verify(
        self,
        request: web.Request,
        method: str,
        key: str,
        content_type: str = "",
        length: int | None = None,
    ) -> None:
        signing.verify(
            self._signing_key,
            method=method,
            key=key,
            expires=request.query.get("expires"),
            signature_hex=request.query.get("signature"),
            now=time.time(),
            content_type=content_type,
            length=length,
        )


def _declared_length(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise signing.SignatureInvalid("`length` must be a whole number of bytes.")
    return int(text)


def upload_length(sent: int | None, declared: int | None, max_bytes: int | None) -> int | None:
    """The exact length an upload must have (None: whatever arrives, up to the maximum).
    Raises before any byte is read when the request says a length that cannot do."""
    if declared is not None and sent is not None and sent != declared:
        raise errors.InputError(
            f"The artifact declared contentLength {declared}; this upload is {sent} bytes."
        )
    expected = declared if declared is not None else sent
    if expected is not None and max_bytes is not None and expected > max_bytes:
        raise errors.InputTooLarge(f"An artifact may hold at most {max_bytes} bytes.")
    return expected


async def _bounded(body: AsyncIterator[bytes], max_bytes: int | None) -> AsyncIterator[bytes]:
    """The body, cut off with a 413 once it grows past the maximum (a chunked upload
    says no length up front)."""
    total = 0
    async for piece in body:
        total += len(piece)
        if max_bytes is not None and total > max_bytes:
            raise errors.InputTooLarge(f"An artifact may hold at most {max_bytes} bytes.")
        yield piece


def _headers(stored: StoredObject) -> dict[str, str]:
    headers = {
        # The stored bytes exactly as uploaded: aiohttp compresses nothing on its own, and
        # Content-Encoding merely describes them.
        hdrs.CONTENT_TYPE: stored.content_type or "application/octet-stream",
        hdrs.ACCEPT_RANGES: "bytes",
        hdrs.ETAG: _etag(stored),
    }
    if stored.content_encoding:
        headers[hdrs.CONTENT_ENCODING] = stored.content_encoding
    return headers


def _etag(stored: StoredObject) -> str:
    return f'"{stored.generation}"'
