"""Artifact bytes in MongoDB, GridFS-style but addressed only by `_id`.

Why not GridFS itself: FerretDB 1.24 on SQLite answers only `_id` equality and `_id $in`
from an index, so GridFS's chunk query (`{files_id, n}`, sorted) scans every chunk of
every artifact on each read (measured: a 20 MB GridFS download took 0.8 s alone, 4.3 s
beside 100 MB of other files, 7.4 s beside 200 MB; by `_id`, 1.2-1.7 s throughout).
Here a chunk's `_id` is `<generation>:<n:08d>`, computed.

- `artifact_files`: `_id` = key; the published generation with its length, chunk size,
  content type and encoding, `complete: True`; `pending` lists generations being written.
- `artifact_chunks`: `_id` = `<generation>:<n:08d>`, `data` = up to CHUNK_SIZE bytes.

An upload writes a fresh generation's chunks, then publishes it with one update of the
files document, then drops the generation it replaced: a reader sees the old content or
the new, never a mix or a partial upload (a read still streaming the old generation when
it is dropped breaks off, and the server cuts that response short).

Chunks of a generation are written in order from 0, so a crashed upload leaves a
contiguous run that `_drop_generation` can find by `_id` alone; `delete` does so for
every generation listed in `pending`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import Binary
from pymongo import ReturnDocument

from shared import errors
from shared.db import Database
from shared.timeutil import utcnow

FILES = "artifact_files"
CHUNKS = "artifact_chunks"
CHUNK_SIZE = 255 * 1024  # GridFS's default: keeps each document far below the 16 MB limit
# Chunks per insert and per read. On FerretDB each command costs far more than its bytes
# (measured: 2.5 MB/s inserting one chunk per command, ~11-15 MB/s at 8-32), and a batch
# bounds what one transfer holds in memory: 8 x 255 KB = 2 MB.
BATCH_CHUNKS = 8
_DELETE_BATCH = 1000  # chunk ids per delete command
_KEY_BATCH = 100  # files documents per delete pass


class LengthMismatch(errors.InputError):
    """The body is not as long as the request's Content-Length said."""


class ContentChanged(Exception):
    """A chunk disappeared mid-read: the object was replaced or deleted meanwhile."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    generation: str
    length: int
    chunk_size: int
    content_type: str
    content_encoding: str | None
    uploaded: datetime

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> StoredObject:
        return cls(
            key=doc["_id"],
            generation=doc["generation"],
            length=doc["length"],
            chunk_size=doc["chunkSize"],
            content_type=doc["contentType"],
            content_encoding=doc.get("contentEncoding"),
            uploaded=doc["uploadDate"],
        )


def chunk_id(generation: str, n: int) -> str:
    return f"{generation}:{n:08d}"


class ChunkStore:
    def __init__(self, db: Database) -> None:
        self._files = db[FILES]
        self._chunks = db[CHUNKS]

    async def find(self, key: str) -> StoredObject | None:
        """The published object under `key`, if any (an unfinished upload is not one)."""
        doc = await self._files.find_one({"_id": key, "complete": True})
        return None if doc is None else StoredObject.from_document(doc)

    async def write(
        self,
        key: str,
        body: AsyncIterable[bytes],
        *,
        content_type: str,
        content_encoding: str | None,
        expected_length: int | None,
    ) -> StoredObject:
        """Store `body` under `key`, replacing what was there once it is all written."""
        generation = uuid.uuid4().hex
        # Recorded before any chunk exists, so `delete` can find the chunks of an upload
        # that never finishes.
        await self._files.update_one(
            {"_id": key},
            {"$addToSet": {"pending": generation}, "$setOnInsert": {"complete": False}},
            upsert=True,
        )
        try:
            length = await self._write_chunks(generation, body, expected_length)
        except BaseException:
            # Cancellation included; if this cleanup is cut short, `delete` finishes it.
            await self._discard(key, generation)
            raise
        stored = StoredObject(
            key, generation, length, CHUNK_SIZE, content_type, content_encoding, utcnow()
        )
        previous = await self._files.find_one_and_update(
            {"_id": key},
            {
                "$set": {
                    "generation": generation,
                    "length": length,
                    "chunkSize": CHUNK_SIZE,
                    "contentType": content_type,
                    "contentEncoding": content_encoding,
                    "uploadDate": stored.uploaded,
                    "complete": True,
                },
                "$pull": {"pending": generation},
            },
            upsert=True,  # `delete` may have run meanwhile; the upload still wins
            return_document=ReturnDocument.BEFORE,
        )
        if previous is not None and previous.get("generation"):
            await self._drop_generation(previous["generation"])
        return stored

    async def read(self, obj: StoredObject, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start..end` (inclusive) of `obj`, in pieces of at most one chunk."""
        if obj.length == 0:
            return
        size = obj.chunk_size
        first, last = start // size, end // size
        for batch_start in range(first, last + 1, BATCH_CHUNKS):
            numbers = range(batch_start, min(batch_start + BATCH_CHUNKS, last + 1))
            ids = [chunk_id(obj.generation, n) for n in numbers]
            found = {
                doc["_id"]: doc["data"] async for doc in self._chunks.find({"_id": {"$in": ids}})
            }
            for n, cid in zip(numbers, ids, strict=True):
                data = found.get(cid)
                if data is None:
                    raise ContentChanged(f"chunk {cid} of {obj.key!r} is gone")
                lo = start - n * size if n == first else 0
                hi = end - n * size + 1 if n == last else len(data)
                yield data[lo:hi]

    async def delete(self, keys: Sequence[str]) -> None:
        for offset in range(0, len(keys), _KEY_BATCH):
            batch = list(keys[offset : offset + _KEY_BATCH])
            for doc in await self._files.find({"_id": {"$in": batch}}).to_list():
                generations = list(doc.get("pending") or [])
                if doc.get("generation"):
                    generations.append(doc["generation"])
                for generation in generations:
                    await self._drop_generation(generation)
            # Chunks first: should this stop midway, the files documents still lead a
            # retry to what is left.
            await self._files.delete_many({"_id": {"$in": batch}})

    async def _write_chunks(
        self, generation: str, body: AsyncIterable[bytes], expected_length: int | None
    ) -> int:
        buffer = bytearray()
        pending: list[dict[str, Any]] = []
        written = 0  # chunks inserted or queued
        length = 0

        async def flush() -> None:
            if pending:
                await self._chunks.insert_many(pending, ordered=True)
                pending.clear()

        async for piece in body:
            length += len(piece)
            if expected_length is not None and length > expected_length:
                raise LengthMismatch(f"The body is longer than Content-Length {expected_length}.")
            buffer += piece
            while len(buffer) >= CHUNK_SIZE:
                pending.append(
                    {"_id": chunk_id(generation, written), "data": Binary(buffer[:CHUNK_SIZE])}
                )
                del buffer[:CHUNK_SIZE]
                written += 1
                if len(pending) == BATCH_CHUNKS:
                    await flush()
        if expected_length is not None and length != expected_length:
            raise LengthMismatch(
                f"The body has {length} bytes but Content-Length said {expected_length}."
            )
        if buffer:
            pending.append({"_id": chunk_id(generation, written), "data": Binary(buffer)})
        await flush()
        return length

    async def _discard(self, key: str, generation: str) -> None:
        await self._drop_generation(generation)
        await self._files.update_one({"_id": key}, {"$pull": {"pending": generation}})

    async def _drop_generation(self, generation: str) -> None:
        # Chunks run contiguously from 0, so deleting batch after batch of computed ids
        # until one comes up short finds them all without a (full-scan) prefix query.
        start = 0
        while True:
            ids = [chunk_id(generation, n) for n in range(start, start + _DELETE_BATCH)]
            result = await self._chunks.delete_many({"_id": {"$in": ids}})
            if result.deleted_count < _DELETE_BATCH:
                return
            start += _DELETE_BATCH
