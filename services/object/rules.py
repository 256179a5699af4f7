"""The object service's models and upstream's rules (reference taskcluster-services §4.1),
as pure functions: request bodies, the lock-in of an upload, hashes, and the choice of
upload and download method. The handlers (api.py) do the I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared import errors
from shared.ids import SLUGID_PATTERN
from shared.models.common import ProjectId, Timestamp
from shared.timeutil import format_ts

NAME_PATTERN = r"^[\x20-\x7e]+$"  # printable ASCII, as upstream
DATA_INLINE_MAX_BYTES = 8192
UPLOAD_DEADLINE = timedelta(days=1)  # an unfinished upload is abandoned after this
PUT_URL_TTL = timedelta(minutes=45)
GET_URL_TTL = timedelta(seconds=60)  # the client must start at once ...
GET_URL_SIGNATURE_TTL = timedelta(seconds=120)  # ... and the signature outlives that a bit
SIMPLE_URL_TTL = timedelta(minutes=30)
# Known algorithms are checked for shape; unknown ones are accepted, as upstream does.
_HASH_SHAPES = {"sha256": re.compile(r"[a-z0-9]{64}"), "sha512": re.compile(r"[a-z0-9]{128}")}

UploadId = Annotated[str, StringConstraints(strict=True, pattern=SLUGID_PATTERN)]
ContentType = Annotated[str, StringConstraints(strict=True, max_length=255)]


class NoMatchingMethod(errors.ApiError):
    code, status = "NoMatchingMethod", 406


def _check_hashes(value: dict[str, str]) -> dict[str, str]:
    for algorithm, digest in value.items():
        shape = _HASH_SHAPES.get(algorithm)
        if shape is not None and not shape.fullmatch(digest):
            raise ValueError(f"{algorithm} must be {shape.pattern}")
    return value


class DataInline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    contentType: ContentType
    objectData: str


class PutUrl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    contentType: ContentType
    contentLength: Annotated[int, Field(strict=True, ge=0)]


class ProposedUploadMethods(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataInline: DataInline | None = None
    putUrl: PutUrl | None = None


class CreateUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    projectId: ProjectId
    uploadId: UploadId
    expires: Timestamp
    hashes: dict[str, str] = {}
    proposedUploadMethods: ProposedUploadMethods

    _hashes = field_validator("hashes")(_check_hashes)


class FinishUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    projectId: ProjectId
    uploadId: UploadId
    hashes: dict[str, str] = {}

    _hashes = field_validator("hashes")(_check_hashes)


class AcceptDownloadMethods(BaseModel):
    # Methods this service does not know (newer clients) are ignored, never refused.
    model_config = ConfigDict(extra="allow")
    simple: Literal[True] | None = None
    getUrl: Literal[True] | None = None


class StartDownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    acceptDownloadMethods: AcceptDownloadMethods


@dataclass(frozen=True)
class ObjectRecord:
    """An object as stored: locked to its first (uploadId, projectId, expires)."""

    name: str
    project_id: str
    upload_id: str
    expires: datetime
    upload_expires: datetime
    hashes: dict[str, str]
    finished: bool = False
    content_type: str | None = None
    content_length: int | None = None
    version: int = 0  # of the stored document (records.py)

    def metadata(self) -> dict[str, Any]:
        return {
            "projectId": self.project_id,
            "expires": format_ts(self.expires),
            "hashes": self.hashes,
        }


def store_key(name: str) -> str:
    """Where an object's bytes live in the byte store: apart from the queue's `t/...` keys
    of `s3` artifacts, although object artifacts are named `t/...` as upstream."""
    return f"objects/{name}"


def new_record(name: str, request: CreateUploadRequest, now: datetime) -> ObjectRecord:
    return ObjectRecord(
        name=name,
        project_id=request.projectId,
        upload_id=request.uploadId,
        expires=request.expires,
        upload_expires=now + UPLOAD_DEADLINE,
        hashes=dict(request.hashes),
    )


def merge_hashes(stored: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    """Later calls may add hashes but never change one (409)."""
    changed = sorted(a for a, d in new.items() if a in stored and stored[a] != d)
    if changed:
        raise errors.RequestConflict(
            f"Hashes ({', '.join(changed)}) differ from those given earlier for this object"
        )
    return {**stored, **new}


def relock(record: ObjectRecord, request: CreateUploadRequest) -> ObjectRecord:
    """A createUpload for an object that exists: an identical repeat is fine (and may add
    hashes); a different uploadId, projectId or expires, or a finished object, is 409."""
    if record.finished:
        raise errors.RequestConflict(f"Object {record.name} is already uploaded and immutable")
    if (record.upload_id, record.project_id, record.expires) != (
        request.uploadId,
        request.projectId,
        request.expires,
    ):
        raise errors.RequestConflict(
            f"Object {record.name} is being uploaded with another uploadId, projectId or "
            "expires; a repeat must give the same ones"
        )
    return replace(record, hashes=merge_hashes(record.hashes, request.hashes))


def decode_inline(data: DataInline) -> bytes:
    try:
        raw = base64.b64decode(data.objectData, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.InputError(f"dataInline.objectData is not valid base64: {exc}") from exc
    if len(raw) > DATA_INLINE_MAX_BYTES:
        raise errors.InputError(
            f"dataInline carries {len(raw)} bytes; at most {DATA_INLINE_MAX_BYTES} are allowed "
            "(use putUrl)"
        )
    return raw


def hashes_of(data: bytes) -> dict[str, str]:
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "sha512": hashlib.sha512(data).hexdigest(),
    }


def check_inline_hashes(declared: dict[str, str], data: bytes) -> dict[str, str]:
    """Inline data is in hand, so its hashes are known: declared ones must match (400),
    and the computed ones are recorded (downloads need sha256 or sha512)."""
    actual = hashes_of(data)
    wrong = sorted(a for a in actual if a in declared and declared[a] != actual[a])
    if wrong:
        raise errors.InputError(
            f"The declared {', '.join(wrong)} hash does not match the dataInline data"
        )
    return actual


def choose_upload_method(methods: ProposedUploadMethods) -> str | None:
    """The server's preference, as upstream: dataInline, then putUrl; None replies `{}`."""
    if methods.dataInline is not None:
        return "dataInline"
    if methods.putUrl is not None:
        return "putUrl"
    return None


def check_finish(record: ObjectRecord, request: FinishUploadRequest) -> ObjectRecord:
    """finishUpload: for an unfinished object a wrong projectId is 400 and a wrong
    uploadId 409; a finished one accepts a repeat whose hashes it already holds."""
    if record.finished:
        if any(record.hashes.get(a) != d for a, d in request.hashes.items()):
            raise errors.RequestConflict(
                f"Object {record.name} is finished with other hashes than these"
            )
        return record
    if request.projectId != record.project_id:
        raise errors.InputError(
            f"Object {record.name} belongs to project {record.project_id!r}, "
            f"not {request.projectId!r}"
        )
    if request.uploadId != record.upload_id:
        raise errors.RequestConflict(
            f"Object {record.name} is being uploaded with another uploadId"
        )
    return replace(record, hashes=merge_hashes(record.hashes, request.hashes), finished=True)


def check_uploaded_length(record: ObjectRecord, stored_length: int | None) -> None:
    if stored_length is None:
        raise errors.InputError(
            f"No data was uploaded for object {record.name}; upload it before finishUpload"
        )
    if record.content_length is not None and stored_length != record.content_length:
        raise errors.InputError(
            f"Object {record.name} has {stored_length} bytes but contentLength "
            f"{record.content_length} was declared"
        )


def choose_download_method(accept: AcceptDownloadMethods) -> str:
    """getUrl first (the client helpers), then simple (the queue); no overlap is 406."""
    if accept.getUrl:
        return "getUrl"
    if accept.simple:
        return "simple"
    raise NoMatchingMethod("None of the accepted download methods is supported (getUrl, simple)")


def downloadable(record: ObjectRecord | None, name: str, now: datetime) -> ObjectRecord:
    if record is None or not record.finished or record.expires <= now:
        raise errors.ResourceNotFound(f"Object {name} not found")
    return record
