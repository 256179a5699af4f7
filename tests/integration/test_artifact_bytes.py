"""Both byte stores against real servers: the embedded one on FerretDB, served by a real
aiohttp server; the S3 one on moto's standalone server. Clients are aiohttp and curl."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from shared import db as dbmod
from shared.api import protocol_middleware
from shared.artifact_bytes import ByteStore, open_store
from shared.artifact_bytes.chunks import (
    BATCH_CHUNKS,
    CHUNK_SIZE,
    CHUNKS,
    FILES,
    ChunkStore,
    LengthMismatch,
    chunk_id,
)
from shared.config import Settings
from tests.conftest import _free_port

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Served:
    store: ByteStore
    db: dbmod.Database


@asynccontextmanager
async def serving(config: Settings, db: dbmod.Database, port: int) -> AsyncIterator[Served]:
    """The configured store, its routes on a real server set up as the queue's: behind its
    error middleware, and with request bodies left encoded."""
    store = open_store(config, db)
    app = web.Application(middlewares=[protocol_middleware])
    app.add_routes(store.routes())
    runner = web.AppRunner(app, auto_decompress=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await store.start()
        yield Served(store, db)
    finally:
        await store.close()
        await runner.cleanup()


@pytest.fixture(params=["mongodb", "s3"])
async def served(
    request: pytest.FixtureRequest, settings: Settings, mongo_db: dbmod.Database
) -> AsyncIterator[Served]:
    port = _free_port()
    overrides = {"artifact_url_base": f"http://127.0.0.1:{port}/"}
    if request.param == "s3":
        overrides = {
            "s3_endpoint_url": request.getfixturevalue("moto_server"),
            "s3_bucket": f"test-{uuid.uuid4().hex[:12]}",
            "s3_access_key_id": "testing",
            "s3_secret_access_key": "testing",
        }
    config = settings.model_copy(update={"artifact_store": request.param, **overrides})
    async with serving(config, mongo_db, port) as running:
        assert running.store.kind == request.param
        yield running


@pytest.fixture
async def gridfs(settings: Settings, mongo_db: dbmod.Database) -> AsyncIterator[Served]:
    port = _free_port()
    config = settings.model_copy(update={"artifact_url_base": f"http://127.0.0.1:{port}"})
    async with serving(config, mongo_db, port) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # auto_decompress=False: the tests look at the bytes exactly as served.
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def _soon(seconds: float = 600) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _key(name: str = "public/build/result.tar.gz") -> str:
    return f"t/{uuid.uuid4().hex[:22]}/0/{name}"


async def _put(
    http: aiohttp.ClientSession,
    store: ByteStore,
    key: str,
    body: bytes,
    content_type: str = "application/octet-stream",
    **headers: str,
) -> None:
    url = store.upload_url(key, content_type=content_type, expires=_soon())
    # BytesIO: aiohttp warns (an error here) about large bodies given as bytes.
    async with http.put(
        url, data=io.BytesIO(body), headers={"Content-Type": content_type, **headers}
    ) as r:
        assert r.status == 200, await r.text()


async def _error_code(response: aiohttp.ClientResponse) -> str:
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["message"]
    return str(body["code"])


async def test_bytes_come_back_as_uploaded_encoding_and_all(
    served: Served, http: aiohttp.ClientSession
) -> None:
    text = b"line of a log\n" * 50_000
    packed = gzip.compress(text)
    key = _key("public/logs/live backing log.txt")
    await _put(
        http, served.store, key, packed, "text/plain; charset=utf-8", **{"Content-Encoding": "gzip"}
    )
    async with http.get(served.store.download_url(key, expires=_soon())) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Length"] == str(len(packed))
        assert await response.read() == packed  # still compressed: nobody decoded it
    assert gzip.decompress(packed) == text


async def test_a_range_gets_206_and_exactly_those_bytes(
    served: Served, http: aiohttp.ClientSession
) -> None:
    body = os.urandom(3 * CHUNK_SIZE + 1000)
    key = _key()
    await _put(http, served.store, key, body)
    url = served.store.download_url(key, expires=_soon())
    start, end = CHUNK_SIZE - 10, 2 * CHUNK_SIZE + 10  # across two chunk boundaries
    for header, first, last in [
        (f"bytes={start}-{end}", start, end),
        ("bytes=-100", len(body) - 100, len(body) - 1),
        (f"bytes={len(body) - 5}-", len(body) - 5, len(body) - 1),
    ]:
        async with http.get(url, headers={"Range": header}) as response:
            assert response.status == 206, header
            assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(body)}"
            assert await response.read() == body[first : last + 1]


async def test_delete_is_idempotent_and_makes_get_404(
    served: Served, http: aiohttp.ClientSession
) -> None:
    kept, doomed = _key("kept"), _key("doomed")
    for key in (kept, doomed):
        await _put(http, served.store, key, os.urandom(CHUNK_SIZE + 1))
    await served.store.delete([doomed, _key("never-uploaded")])
    await served.store.delete([doomed])
    async with http.get(served.store.download_url(doomed, expires=_soon())) as response:
        assert response.status == 404
    async with http.get(served.store.download_url(kept, expires=_soon())) as response:
        assert response.status == 200


async def test_start_is_repeatable(served: Served, http: aiohttp.ClientSession) -> None:
    key = _key()
    await _put(http, served.store, key, b"before")
    await served.store.start()  # every replica starts it, the bucket exists by then
    await served.store.start()
    async with http.get(served.store.download_url(key, expires=_soon())) as response:
        assert (response.status, await response.read()) == (200, b"before")  # nothing lost
    await _put(http, served.store, _key(), b"after")  # and it still takes uploads


async def test_curl_downloads_a_signed_url(
    served: Served, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = os.urandom(CHUNK_SIZE * 2 + 7)
    key = _key("public/awkward/../name with 100% ?#&.bin")
    await _put(http, served.store, key, body)
    target = tmp_path / "download"
    # asyncio's subprocess: the server answering curl runs on this very event loop.
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--fail", "-o", str(target), served.store.download_url(key, expires=_soon())
    )
    assert await curl.wait() == 0
    assert target.read_bytes() == body


async def test_head_and_unsatisfiable_ranges(gridfs: Served, http: aiohttp.ClientSession) -> None:
    key = _key()
    await _put(http, gridfs.store, key, b"0123456789", "text/plain")
    url = gridfs.store.download_url(key, expires=_soon())
    async with http.head(url) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "10"
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["ETag"]
        assert response.headers["Access-Control-Allow-Origin"] == "*"  # for the UI
    async with http.get(url, headers={"Range": "bytes=10-"}) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == "bytes */10"
        assert await _error_code(response) == "RangeNotSatisfiable"
    async with http.get(url, headers={"Range": "bytes=0-1,4-5"}) as response:
        assert response.status == 200  # several ranges: we send the whole object
        assert await response.read() == b"0123456789"


async def test_expired_and_tampered_urls_are_refused(
    gridfs: Served, http: aiohttp.ClientSession
) -> None:
    store, key = gridfs.store, _key()
    await _put(http, store, key, b"secret")
    expired = store.download_url(key, expires=datetime.now(UTC) - timedelta(seconds=5))
    good = store.download_url(key, expires=_soon())
    tampered = good.replace("signature=", "signature=0")
    longer = good.replace("expires=", "expires=9")
    upload = store.upload_url(key, content_type="text/plain", expires=_soon())
    other_key = good.replace("%2F0%2F", "%2F1%2F")
    for url in (expired, tampered, longer, upload, other_key, good.split("?")[0]):
        async with http.get(url) as response:
            assert response.status == 403, url
            assert await _error_code(response) == "SignatureInvalid"


async def test_an_upload_must_send_the_signed_content_type(
    gridfs: Served, http: aiohttp.ClientSession
) -> None:
    key = _key()
    url = gridfs.store.upload_url(key, content_type="application/json", expires=_soon())
    async with http.put(url, data=b"{}", headers={"Content-Type": "text/plain"}) as response:
        assert response.status == 403
        assert await _error_code(response) == "SignatureInvalid"
    async with http.get(gridfs.store.download_url(key, expires=_soon())) as response:
        assert response.status == 404
        assert await _error_code(response) == "ResourceNotFound"


async def test_a_reupload_replaces_the_content_and_its_chunks(
    gridfs: Served, http: aiohttp.ClientSession
) -> None:
    key = _key()
    await _put(http, gridfs.store, key, os.urandom(5 * CHUNK_SIZE), "application/zip")
    replacement = os.urandom(CHUNK_SIZE + 1)
    await _put(http, gridfs.store, key, replacement, "text/plain")
    async with http.get(gridfs.store.download_url(key, expires=_soon())) as response:
        assert response.headers["Content-Type"] == "text/plain"
        assert await response.read() == replacement
    assert await gridfs.db[CHUNKS].count_documents({}) == 2  # the old generation is gone
    await gridfs.store.delete([key])
    assert await gridfs.db[CHUNKS].count_documents({}) == 0
    assert await gridfs.db[FILES].count_documents({}) == 0


async def test_broken_uploads_publish_nothing_and_leave_nothing(
    gridfs: Served, http: aiohttp.ClientSession
) -> None:
    chunks = ChunkStore(gridfs.db)
    key = _key()
    await _put(http, gridfs.store, key, b"the published version")

    async def breaks_midway() -> AsyncIterator[bytes]:
        yield os.urandom((BATCH_CHUNKS + 2) * CHUNK_SIZE)  # one batch gets written
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await chunks.write(
            key, breaks_midway(), content_type="x/y", content_encoding=None, expected_length=None
        )
    with pytest.raises(LengthMismatch):
        await chunks.write(
            key, _pieces(b"abc"), content_type="x/y", content_encoding=None, expected_length=4
        )
    async with http.get(gridfs.store.download_url(key, expires=_soon())) as response:
        assert await response.read() == b"the published version"
    assert await gridfs.db[CHUNKS].count_documents({}) == 1
    assert (await gridfs.db[FILES].find_one({"_id": key}) or {}).get("pending") == []

    # A crash mid-upload: the generation stays listed as pending, its chunks orphaned.
    crashed = _key()
    await gridfs.db[FILES].insert_one({"_id": crashed, "pending": ["g1"], "complete": False})
    await gridfs.db[CHUNKS].insert_many([{"_id": f"g1:{n:08d}", "data": b"x"} for n in range(1500)])
    async with http.get(gridfs.store.download_url(crashed, expires=_soon())) as response:
        assert response.status == 404
    await gridfs.store.delete([crashed, key])
    assert await gridfs.db[CHUNKS].count_documents({}) == 0
    assert await gridfs.db[FILES].count_documents({}) == 0


async def test_a_download_that_breaks_midway_is_cut_short(
    gridfs: Served, http: aiohttp.ClientSession
) -> None:
    key = _key()
    await _put(http, gridfs.store, key, os.urandom((BATCH_CHUNKS + 2) * CHUNK_SIZE))
    # As if a re-upload or delete removed the chunks after this download started: the
    # first batch goes out, then the server must not pass off a short body as complete.
    stored = await ChunkStore(gridfs.db).find(key)
    assert stored is not None
    await gridfs.db[CHUNKS].delete_one({"_id": chunk_id(stored.generation, BATCH_CHUNKS)})
    async with http.get(gridfs.store.download_url(key, expires=_soon())) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_empty_objects(gridfs: Served, http: aiohttp.ClientSession) -> None:
    key = _key()
    await _put(http, gridfs.store, key, b"")
    async with http.get(gridfs.store.download_url(key, expires=_soon())) as response:
        assert response.status == 200
        assert await response.read() == b""


async def test_large_transfers_stream_in_bounded_memory(
    gridfs: Served, http: aiohttp.ClientSession
) -> None:
    size = 64 * 1024 * 1024
    piece = os.urandom(1024 * 1024)
    key = _key("public/big.bin")
    peak = _PeakRss()
    sent = hashlib.sha256()

    async def generate() -> AsyncIterator[bytes]:
        for i in range(size // len(piece)):
            data = piece[i:] + piece[:i]  # distinct pieces, so misordered chunks show
            sent.update(data)
            yield data

    async with peak.watch():
        url = gridfs.store.upload_url(key, content_type="application/x-big", expires=_soon())
        headers = {"Content-Type": "application/x-big"}
        async with http.put(url, data=generate(), headers=headers) as response:
            assert response.status == 200
        received = hashlib.sha256()
        length = 0
        async with http.get(gridfs.store.download_url(key, expires=_soon())) as response:
            async for data in response.content.iter_chunked(256 * 1024):
                received.update(data)
                length += len(data)
    assert length == size
    assert received.hexdigest() == sent.hexdigest()
    # Client and server share this process: had either held the object, RSS would have
    # grown by its size (observed: ~11 MB, batches and allocator slack).
    assert peak.growth < size // 3, f"RSS grew by {peak.growth >> 20} MB"


async def _pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class _PeakRss:
    """This process's resident memory, sampled while a block runs."""

    def __init__(self) -> None:
        self.growth = 0

    @staticmethod
    def _rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc/self/status")

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[None]:
        baseline = self._rss()

        async def sample() -> None:
            while True:
                self.growth = max(self.growth, self._rss() - baseline)
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        try:
            yield
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            self.growth = max(self.growth, self._rss() - baseline)
