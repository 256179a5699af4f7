"""Object records in MongoDB: collection `objects`, `_id` = the object's name, so every
read and write is by `_id`. Each change is one conditional update on the fields it
depends on, so concurrent calls and retries after a crash settle on one outcome."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from pymongo.errors import DuplicateKeyError

from services.object.rules import ObjectRecord
from shared import errors
from shared.db import Database

COLLECTION = "objects"

_FIELDS = {
    "project_id": "projectId",
    "upload_id": "uploadId",
    "expires": "expires",
    "upload_expires": "uploadExpires",
    "hashes": "hashes",
    "finished": "finished",
    "content_type": "contentType",
    "content_length": "contentLength",
    "version": "version",  # bumped by every update: the condition of the next one
}


def to_document(record: ObjectRecord) -> dict[str, Any]:
    values = asdict(record)
    return {"_id": record.name, **{_FIELDS[k]: values[k] for k in _FIELDS}}


def from_document(document: dict[str, Any]) -> ObjectRecord:
    values = {k: document.get(v) for k, v in _FIELDS.items()}
    values["version"] = values["version"] or 0
    values["finished"] = bool(values["finished"])
    return ObjectRecord(name=document["_id"], **values)


class ObjectRecords:
    def __init__(self, db: Database) -> None:
        self._objects = db[COLLECTION]

    async def get(self, name: str) -> ObjectRecord | None:
        document = await self._objects.find_one({"_id": name})
        return None if document is None else from_document(document)

    async def insert(self, record: ObjectRecord) -> bool:
        """False if an object of that name exists already (the caller re-reads it)."""
        try:
            await self._objects.insert_one(to_document(record))
        except DuplicateKeyError:
            return False
        return True

    async def update(self, before: ObjectRecord, after: ObjectRecord) -> ObjectRecord:
        """Store `after` if the object is still `before` (no update since it was read);
        otherwise another call changed it meanwhile: 409, the client may retry."""
        if before == after:
            return before
        result = await self._objects.update_one(
            {"_id": before.name, "version": before.version},
            {
                "$set": {
                    **{k: v for k, v in to_document(after).items() if k != "_id"},
                    "version": before.version + 1,
                }
            },
        )
        if result.matched_count == 0:
            raise errors.RequestConflict(f"Object {before.name} changed meanwhile; try again")
        return replace(after, version=before.version + 1)

    async def describe(
        self, record: ObjectRecord, content_type: str, length: int, hashes: dict[str, str]
    ) -> None:
        """Record what an upload method carries. Last writer wins (identical repeats are
        the norm), so concurrent repeats of one createUpload do not conflict; `hashes`
        are computed ones, already checked against the declared."""
        result = await self._objects.update_one(
            {"_id": record.name, "uploadId": record.upload_id, "finished": False},
            {
                "$set": {
                    "contentType": content_type,
                    "contentLength": length,
                    **{f"hashes.{algorithm}": digest for algorithm, digest in hashes.items()},
                },
                "$inc": {"version": 1},
            },
        )
        if result.matched_count == 0:
            raise errors.RequestConflict(f"Object {record.name} changed meanwhile; try again")
