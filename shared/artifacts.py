"""Artifacts (reference §6): the request models, the stored record and upstream's rules,
as pure functions. The queue's handlers (services/queue/artifacts_api.py) do the I/O.

Storage types: `s3` (bytes behind a signed upload URL, in the configured byte store),
`reference` (a redirect to a URL), `link` (an alias of another artifact of the same run)
`error` (a reason, nothing to download) and `object` (bytes in the object service, named
`t/<taskId>/<runId>/<name>`; not `present` until finishArtifact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AnyUrl, BaseModel, ConfigDict, Field

from shared import errors
from shared.models import Run, RunState, Timestamp
from shared.timeutil import format_ts

COLLECTION = "artifacts"  # one per artifact, `_id` = "<taskId>/<runId>/<name>"
RUN_INDEX = "artifact_runs"  # per run, the names of its artifacts (listing by `_id` only)
EXPIRES_SLACK = timedelta(minutes=15)  # `expires` may lie this far in the past
EXCEPTION_GRACE = timedelta(minutes=25)  # artifacts after an exception, as upstream
UPLOAD_URL_TTL = timedelta(minutes=45)
DOWNLOAD_URL_TTL = timedelta(hours=1)
NAME_PATTERN = r"^[\x20-\x7e]+$"
MAX_NAME = 1024


class ErrorReason(StrEnum):
    FILE_MISSING = "file-missing-on-worker"
    INVALID_RESOURCE = "invalid-resource-on-worker"
    TOO_LARGE = "too-large-file-on-worker"
    NOT_READABLE = "file-not-readable-on-worker"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires: Timestamp


class S3Request(_Request):
    storageType: Literal["s3"]
    contentType: Annotated[str, Field(max_length=255)]
    contentLength: Annotated[int, Field(ge=0)] | None = None


class ObjectRequest(_Request):
    storageType: Literal["object"]
    contentType: Annotated[str, Field(max_length=255)]
    contentLength: Annotated[int, Field(ge=0)] | None = None


class ReferenceRequest(_Request):
    storageType: Literal["reference"]
    url: AnyUrl
    contentType: Annotated[str, Field(max_length=255)]


class LinkRequest(_Request):
    storageType: Literal["link"]
    artifact: Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=NAME_PATTERN)]
    contentType: Annotated[str, Field(max_length=255)] | None = None


class ErrorRequest(_Request):
    storageType: Literal["error"]
    reason: ErrorReason
    message: Annotated[str, Field(max_length=4096)]


ArtifactRequest = Annotated[
    S3Request | ObjectRequest | ReferenceRequest | LinkRequest | ErrorRequest,
    Field(discriminator="storageType"),
]


class CreateArtifactRequest(BaseModel):
    """The body of createArtifact (a oneOf by storageType)."""

    model_config = ConfigDict(extra="forbid")
    request: ArtifactRequest

    @classmethod
    def wrap(cls, payload: Any) -> CreateArtifactRequest:
        return cls.model_validate({"request": payload})


class FinishArtifactRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uploadId: str


@dataclass(frozen=True)
class Artifact:
    """An artifact as stored."""

    task_id: str
    run_id: int
    name: str
    storage_type: str
    content_type: str
    expires: datetime
    details: dict[str, Any]  # url (reference), artifact (link), reason+message (error), ...
    # False for an object artifact until finishArtifact; not part of equality, so an
    # identical re-create of a finished one is still identical.
    present: bool = field(default=True, compare=False)

    @property
    def key(self) -> str:
        """Where an s3 artifact's bytes live in the byte store."""
        return byte_key(self.task_id, self.run_id, self.name)

    def info(self) -> dict[str, Any]:
        """listArtifacts / artifactInfo: never the details."""
        body = {
            "storageType": self.storage_type,
            "name": self.name,
            "expires": format_ts(self.expires),
            "contentType": self.content_type,
        }
        if self.details.get("contentLength") is not None:
            body["contentLength"] = self.details["contentLength"]
        return body

    def event_body(self) -> dict[str, Any]:
        """The `artifact` of an artifact-created message."""
        return {
            "storageType": self.storage_type,
            "name": self.name,
            "expires": format_ts(self.expires),
            "contentType": self.content_type,
        }


def artifact_id(task_id: str, run_id: int, name: str) -> str:
    return f"{task_id}/{run_id}/{name}"


def byte_key(task_id: str, run_id: int, name: str) -> str:
    return f"t/{task_id}/{run_id}/{name}"


def to_document(artifact: Artifact) -> dict[str, Any]:
    return {
        "_id": artifact_id(artifact.task_id, artifact.run_id, artifact.name),
        "taskId": artifact.task_id,
        "runId": artifact.run_id,
        "name": artifact.name,
        "storageType": artifact.storage_type,
        "contentType": artifact.content_type,
        "expires": artifact.expires,
        "details": artifact.details,
        "present": artifact.present,
    }


def from_document(document: dict[str, Any]) -> Artifact:
    return Artifact(
        document["taskId"],
        document["runId"],
        document["name"],
        document["storageType"],
        document["contentType"],
        document["expires"],
        dict(document.get("details") or {}),
        document.get("present", True),
    )


def from_request(
    task_id: str, run_id: int, name: str, request: Any, *, upload_id: str | None = None
) -> Artifact:
    """The record a createArtifact request describes (an `object` one needs its
    `upload_id`, and is not present until finished)."""
    details: dict[str, Any] = {}
    content_type = "application/json"
    if isinstance(request, ObjectRequest):
        if upload_id is None:
            raise ValueError("an object artifact needs its uploadId")
        details = {"contentLength": request.contentLength, "uploadId": upload_id}
        return Artifact(
            task_id, run_id, name, "object", request.contentType, request.expires, details, False
        )
    if isinstance(request, S3Request):
        content_type, details["contentLength"] = request.contentType, request.contentLength
    elif isinstance(request, ReferenceRequest):
        content_type, details["url"] = request.contentType, str(request.url)
    elif isinstance(request, LinkRequest):
        details["artifact"] = request.artifact
        content_type = request.contentType or "application/octet-stream"
    else:
        details["reason"], details["message"] = str(request.reason), request.message
    return Artifact(
        task_id, run_id, name, request.storageType, content_type, request.expires, details
    )


def check_length(request: Any, max_bytes: int | None) -> None:
    """A declared contentLength above the per-artifact maximum is refused up front."""
    length = getattr(request, "contentLength", None)
    if length is not None and max_bytes is not None and length > max_bytes:
        raise errors.InputError(
            f"contentLength {length} is more than the {max_bytes} bytes an artifact may hold"
        )


def check_create(request_expires: datetime, run: Run | None, now: datetime) -> Run:
    """createArtifact's first checks, in upstream's order (the scope check comes next,
    then `check_run_open`)."""
    if request_expires < now - EXPIRES_SLACK:
        raise errors.InputError("Artifact expires must not be more than 15 minutes in the past")
    if run is None:
        raise errors.InputError("Task run does not exist")
    if run.workerGroup is None or run.workerId is None:
        raise errors.InputError("Artifacts cannot be created for a run that was never claimed")
    return run


def check_run_open(
    request_expires: datetime, task_expires: datetime, run: Run, now: datetime
) -> None:
    if request_expires > task_expires:
        raise errors.InputError(
            f"Artifact expires ({format_ts(request_expires)}) after the task expiration "
            f"{format_ts(task_expires)}"
        )
    if run.state == RunState.RUNNING:
        return
    if (
        run.state == RunState.EXCEPTION
        and run.resolved is not None
        and now - run.resolved <= EXCEPTION_GRACE
    ):
        return
    raise errors.RequestConflict(
        f"Artifacts cannot be created for a run that is {run.state} (only while it is "
        "running, or within 25 minutes of an exception)"
    )


def check_replace(existing: Artifact, new: Artifact) -> None:
    """Re-creating an artifact: identical is fine (a client refreshing its upload URL);
    `expires` may only grow; a reference may become another reference or a link; the
    content type may change only for a link. Anything else: 409."""
    if new.expires < existing.expires:
        raise errors.RequestConflict("An artifact's expires can only be extended")
    if existing.storage_type == "object" and new.expires != existing.expires:
        # The object service locks an upload to its first expires.
        raise errors.RequestConflict("An object artifact's expires cannot change")
    kind_ok = new.storage_type == existing.storage_type or (
        existing.storage_type == "reference" and new.storage_type in ("reference", "link")
    )
    if not kind_ok:
        raise errors.RequestConflict(
            f"Artifact {new.name} already exists as {existing.storage_type}; it cannot become "
            f"{new.storage_type}"
        )
    if new.storage_type != "link" and new.content_type != existing.content_type:
        raise errors.RequestConflict(f"Artifact {new.name} exists with another contentType")
    if new.storage_type == existing.storage_type != "reference" and new.details != existing.details:
        raise errors.RequestConflict(f"Artifact {new.name} exists with other properties")


def upload_expiry(now: datetime, artifact_expires: datetime) -> datetime:
    return min(now + UPLOAD_URL_TTL, max(artifact_expires, now + timedelta(minutes=1)))


def next_hop(artifact: Artifact, seen: list[str]) -> str | None:
    """The name a link leads to, or None for a final artifact; a cycle is the caller's
    error (400, as upstream). Pure."""
    if artifact.storage_type != "link":
        return None
    target = str(artifact.details["artifact"])
    if target in seen:
        raise errors.InputError(f"Artifact link cycle: {' -> '.join([*seen, target])}")
    return target


def is_expired(artifact: Artifact, now: datetime) -> bool:
    return artifact.expires <= now


def reference_url(artifact: Artifact) -> str:
    return str(artifact.details["url"])


def error_body(artifact: Artifact) -> dict[str, str]:
    return {"reason": artifact.details["reason"], "message": artifact.details["message"]}


def object_name(artifact: Artifact) -> str:
    """The object service's name for an object artifact, as upstream."""
    return byte_key(artifact.task_id, artifact.run_id, artifact.name)
