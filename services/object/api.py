"""The Object API (reference taskcluster-services §4.1): createUpload (dataInline and
putUrl), finishUpload, startDownload (getUrl and simple), object metadata and download,
plus the scope-free monitoring endpoints. Bytes go to the configured byte store, by the
object's `store_key`."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from aiohttp import web

from services.object import rules
from services.object.records import ObjectRecords
from services.object.rules import (
    CreateUploadRequest,
    DataInline,
    FinishUploadRequest,
    ObjectRecord,
    PutUrl,
    StartDownloadRequest,
)
from shared import artifacts, errors
from shared.api import Call, declare, json_response
from shared.artifact_bytes.base import ByteStore
from shared.timeutil import format_ts, utcnow

NAME = {"name": rules.NAME_PATTERN}
UPLOAD_SCOPE = "object:upload:<projectId>:<name>"
DOWNLOAD_SCOPE = "object:download:<name>"
_LOCK_ATTEMPTS = 3  # concurrent first calls: the loser re-reads the winner's record
_STARTED = time.monotonic()


class ObjectApi:
    def __init__(
        self, records: ObjectRecords, byte_store: ByteStore, *, max_bytes: int | None = None
    ) -> None:
        self.records = records
        self.bytes = byte_store
        self.max_bytes = max_bytes  # FLOTILLA_ARTIFACT_MAX_BYTES, as at the queue

    # --- uploading ------------------------------------------------------------------------

    @declare(
        "createUpload",
        "PUT",
        "/upload/<name>",
        title="Begin upload of a new object",
        scopes=UPLOAD_SCOPE,
        input=CreateUploadRequest,
        params=NAME,
        scopes_from_params=False,  # projectId comes from the body
    )
    async def create_upload(self, call: Call) -> dict[str, Any]:
        request: CreateUploadRequest = call.body
        name = call.params["name"]
        call.authorize(projectId=request.projectId)
        now = utcnow()
        methods = request.proposedUploadMethods
        method = rules.choose_upload_method(methods)
        inline: tuple[DataInline, bytes, dict[str, str]] | None = None
        if method == "dataInline" and methods.dataInline is not None:
            # Bad inline data is refused before anything is locked or stored.
            data = rules.decode_inline(methods.dataInline)
            inline = (methods.dataInline, data, rules.check_inline_hashes(request.hashes, data))
        if method == "putUrl" and methods.putUrl is not None:
            # Refused before anything is locked: S3 would accept the signed length.
            artifacts.check_length(methods.putUrl, self.max_bytes)
        record = await self._lock(name, request, now)
        upload_method: dict[str, Any] = {}
        if inline is not None:
            await self._store_inline(record, *inline)
            upload_method = {"dataInline": True}
        elif method == "putUrl" and methods.putUrl is not None:
            upload_method = {"putUrl": await self._put_url(record, methods.putUrl, now)}
        return {
            "projectId": request.projectId,
            "uploadId": request.uploadId,
            "expires": format_ts(request.expires),
            "uploadMethod": upload_method,
        }

    async def _store_inline(
        self, record: ObjectRecord, inline: DataInline, data: bytes, hashes: dict[str, str]
    ) -> None:
        rules.merge_hashes(record.hashes, hashes)  # 409 if they contradict earlier ones
        # Bytes first, then the record: a crash in between is repaired by the retry.
        await self.bytes.put(rules.store_key(record.name), data, content_type=inline.contentType)
        await self.records.describe(record, inline.contentType, len(data), hashes)

    async def _put_url(self, record: ObjectRecord, put: PutUrl, now: datetime) -> dict[str, Any]:
        await self.records.describe(record, put.contentType, put.contentLength, {})
        expires = now + rules.PUT_URL_TTL
        key = rules.store_key(record.name)
        return {
            # The declared length is signed in: the embedded store refuses any other.
            "url": self.bytes.upload_url(
                key, content_type=put.contentType, expires=expires, length=put.contentLength
            ),
            "expires": format_ts(expires),
            # Sent verbatim by the client: the store checks both.
            "headers": {
                "Content-Type": put.contentType,
                "Content-Length": str(put.contentLength),
            },
        }

    async def _lock(self, name: str, request: CreateUploadRequest, now: datetime) -> ObjectRecord:
        """The first createUpload fixes uploadId, projectId and expires; repeats must match."""
        for _attempt in range(_LOCK_ATTEMPTS):
            existing = await self.records.get(name)
            if existing is None:
                record = rules.new_record(name, request, now)
                if await self.records.insert(record):
                    return record
                continue
            return await self.records.update(existing, rules.relock(existing, request))
        raise errors.RequestConflict(f"Object {name} is changing under concurrent calls; retry")

    @declare(
        "finishUpload",
        "POST",
        "/finish-upload/<name>",
        title="Mark an upload as complete.",
        scopes=UPLOAD_SCOPE,
        input=FinishUploadRequest,
        params=NAME,
        scopes_from_params=False,
    )
    async def finish_upload(self, call: Call) -> dict[str, Any]:
        request: FinishUploadRequest = call.body
        name = call.params["name"]
        call.authorize(projectId=request.projectId)
        record = await self.records.get(name)
        if record is None:
            raise errors.ResourceNotFound(f"Object {name} not found; call createUpload first")
        finished = rules.check_finish(record, request)
        if finished is not record:  # not a repeat of a finished upload
            key = rules.store_key(name)
            stored_length = await self.bytes.stat(key)
            try:
                rules.check_uploaded_length(record, stored_length)
            except errors.InputError:
                # Bytes of another length than declared (an S3 that ignores the signed
                # length let them through) are dropped: only a correct upload finishes.
                if stored_length is not None:
                    await self.bytes.delete([key])
                raise
            await self.records.update(record, finished)
        return {}

    # --- downloading ----------------------------------------------------------------------

    async def _downloadable(self, call: Call) -> ObjectRecord:
        name = call.params["name"]
        return rules.downloadable(await self.records.get(name), name, utcnow())

    @declare(
        "startDownload",
        "PUT",
        "/start-download/<name>",
        title="Download object data",
        scopes=DOWNLOAD_SCOPE,
        input=StartDownloadRequest,
        params=NAME,
    )
    async def start_download(self, call: Call) -> dict[str, Any]:
        request: StartDownloadRequest = call.body
        record = await self._downloadable(call)
        method = rules.choose_download_method(request.acceptDownloadMethods)
        now = utcnow()
        key = rules.store_key(record.name)
        if method == "getUrl":
            return {
                "method": "getUrl",
                "url": self.bytes.download_url(key, expires=now + rules.GET_URL_SIGNATURE_TTL),
                "expires": format_ts(now + rules.GET_URL_TTL),
                "hashes": record.hashes,
            }
        return {"method": "simple", "url": self._simple_url(record, now)}

    @declare(
        "object",
        "GET",
        "/metadata/<name>",
        title="Get an object's metadata",
        scopes=DOWNLOAD_SCOPE,
        params=NAME,
    )
    async def metadata(self, call: Call) -> dict[str, Any]:
        return (await self._downloadable(call)).metadata()

    @declare(
        "download",
        "GET",
        "/download/<name>",
        title="Get an object's data",
        scopes=DOWNLOAD_SCOPE,
        params=NAME,
    )
    async def download(self, call: Call) -> web.Response:
        record = await self._downloadable(call)
        url = self._simple_url(record, utcnow())
        return json_response({"method": "simple", "url": url}, 303, {"Location": url})

    def _simple_url(self, record: ObjectRecord, now: datetime) -> str:
        return self.bytes.download_url(
            rules.store_key(record.name), expires=now + rules.SIMPLE_URL_TTL
        )
