"""The object service's expiry pass, on the real database and embedded byte store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.object import rules
from services.object.expiry import expire_objects
from services.object.records import ObjectRecords
from services.object.rules import CreateUploadRequest, FinishUploadRequest
from shared import db as dbmod
from shared.artifact_bytes import open_store
from shared.config import Settings
from shared.timeutil import format_ts, utcnow

pytestmark = pytest.mark.timeout(60)

UPLOAD = "dLsvnP8gR7OiEWTJwP7ZXw"


async def test_expired_objects_and_abandoned_uploads_go_with_their_bytes(
    settings: Settings, mongo_db: dbmod.Database
) -> None:
    store = open_store(settings, mongo_db)
    records = ObjectRecords(mongo_db)
    now = utcnow()

    async def put(name: str, expires_in: timedelta, *, finished: bool) -> None:
        request = CreateUploadRequest.model_validate(
            {
                "projectId": "p",
                "uploadId": UPLOAD,
                "expires": format_ts(now + expires_in),
                "proposedUploadMethods": {},
            }
        )
        record = rules.new_record(name, request, now)
        if finished:
            done = FinishUploadRequest(projectId="p", uploadId=UPLOAD)
            record = rules.check_finish(record, done)
        assert await records.insert(record)
        await store.put(rules.store_key(name), name.encode(), content_type="text/plain")

    await put("old", timedelta(hours=1), finished=True)
    await put("young", timedelta(days=30), finished=True)
    await put("abandoned", timedelta(days=30), finished=False)
    await put("unfinished", timedelta(days=30), finished=False)
    # two hours on: "old" has expired; a day and more on: "abandoned" was never finished
    assert await expire_objects(mongo_db, store, now + timedelta(hours=2)) == 1
    assert await records.get("old") is None
    assert await store.stat(rules.store_key("old")) is None
    assert await expire_objects(mongo_db, store, now + timedelta(days=2)) == 2
    for gone in ("abandoned", "unfinished"):
        assert await records.get(gone) is None
    assert (await records.get("young")) is not None
    assert await store.stat(rules.store_key("young")) == len(b"young")
    assert await expire_objects(mongo_db, store, now + timedelta(days=2)) == 0
