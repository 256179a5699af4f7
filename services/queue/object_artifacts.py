"""`object` artifacts (reference taskcluster-queue §6, taskcluster-services §4.2): what the
queue asks of the object service, and the credentials it hands to uploaders and readers.

The queue names the object `t/<taskId>/<runId>/<name>`, locks it in with createUpload
(no upload method proposed) under an uploadId derived from that name, so a createArtifact
retried after a crash locks the same upload again instead of being refused. The bytes
never pass through the queue: the uploader talks to the object service with the
credentials returned here, and readers download from it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import taskcluster.aio
from taskcluster.exceptions import TaskclusterFailure, TaskclusterRestFailure

from services.queue.context import Issuer
from shared import errors
from shared.auth.certificates import create_temporary_credentials
from shared.timeutil import format_ts

UPLOAD_CREDENTIALS_TTL = timedelta(hours=24)
DOWNLOAD_CREDENTIALS_TTL = timedelta(hours=1)
_MIN_CREDENTIALS_TTL = timedelta(minutes=1)
_CLIENT_ID_UNSAFE = re.compile(r"[^A-Za-z0-9!@/:.+|_-]")  # upstream's clientId alphabet


def upload_id_for(object_name: str) -> str:
    """A v4-shaped slugid derived from the object's name: the same for every repeat."""
    raw = bytearray(hashlib.sha256(object_name.encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    raw[0] &= 0x7F  # "nice": never starts with '-'
    return base64.urlsafe_b64encode(bytes(raw)).decode("ascii")[:22]


def _credentials(
    issuer: Issuer, name: str, scopes: list[str], now: datetime, expiry: datetime
) -> dict[str, str]:
    expiry = max(expiry, now + _MIN_CREDENTIALS_TTL)
    # A clientId is a Hawk id: characters outside its alphabet (spaces in an artifact
    # name) would make the Authorization header unparsable, so they become '_'.
    return create_temporary_credentials(
        issuer.client_id,
        issuer.access_token,
        now,
        expiry,
        scopes,
        name=_CLIENT_ID_UNSAFE.sub("_", name),
    )


def upload_credentials(
    issuer: Issuer,
    *,
    task_id: str,
    run_id: int,
    worker_group: str,
    worker_id: str,
    project_id: str,
    object_name: str,
    expires: datetime,
    now: datetime,
) -> dict[str, str]:
    return _credentials(
        issuer,
        f"artifact-upload/{task_id}/{run_id}/on/{worker_group}/{worker_id}",
        [f"object:upload:{project_id}:{object_name}"],
        now,
        min(expires, now + UPLOAD_CREDENTIALS_TTL),
    )


def download_credentials(
    issuer: Issuer, *, task_id: str, run_id: int, name: str, object_name: str, now: datetime
) -> dict[str, str]:
    return _credentials(
        issuer,
        f"artifact-download/{task_id}/{run_id}/{name}",
        [f"object:download:{object_name}"],
        now,
        now + DOWNLOAD_CREDENTIALS_TTL,
    )


class ObjectServiceClient:
    """The object service as the queue calls it: the official client with the queue's own
    (root) credentials. Its errors become ours: a refusal keeps its meaning, anything else
    is a 500 the caller may retry."""

    def __init__(self, root_url: str, issuer: Issuer, *, max_retries: int = 2) -> None:
        self._options: dict[str, Any] = {
            "rootUrl": root_url,
            "credentials": {"clientId": issuer.client_id, "accessToken": issuer.access_token},
            "maxRetries": max_retries,
        }
        self._session: aiohttp.ClientSession | None = None
        self._client: Any = None

    async def start(self) -> None:
        self._session = taskcluster.aio.createSession()
        self._client = taskcluster.aio.Object(self._options, session=self._session)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def create_upload(
        self, name: str, *, project_id: str, upload_id: str, expires: datetime
    ) -> None:
        payload = {
            "projectId": project_id,
            "uploadId": upload_id,
            "expires": format_ts(expires),
            "proposedUploadMethods": {},
        }
        await self._call("createUpload", name, payload)

    async def is_finished(self, name: str) -> bool:
        try:
            await self._call("object", name)
        except errors.ResourceNotFound:
            return False
        return True

    async def simple_url(self, name: str) -> str:
        reply = await self._call("startDownload", name, {"acceptDownloadMethods": {"simple": True}})
        return str(reply["url"])

    async def _call(self, method: str, *args: Any) -> Any:
        if self._client is None:
            raise RuntimeError("object service client used before start()")
        try:
            return await getattr(self._client, method)(*args)
        except TaskclusterRestFailure as exc:
            raise _translate(method, exc) from exc
        except (TaskclusterFailure, aiohttp.ClientError) as exc:
            raise errors.ApiError(f"The object service did not answer {method}: {exc}") from exc


def _translate(method: str, exc: TaskclusterRestFailure) -> errors.ApiError:
    message = f"The object service refused {method}: {_first_line(exc)}"
    by_status: dict[int, type[errors.ApiError]] = {
        400: errors.InputError,
        404: errors.ResourceNotFound,
        409: errors.RequestConflict,
    }
    return by_status.get(exc.status_code or 500, errors.ApiError)(message)


def _first_line(exc: TaskclusterRestFailure) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or exc).split("\n\n---", 1)[0]
