"""Artifact upload: content type from the name, gzip only for what compresses, `s3` or
`object` storage, the bytes streamed from a file with retries; `error` artifacts.

**Content-Encoding** (issue 20): a file is stored gzip-encoded only when its content type
is text-like (`text/*`, JSON, XML, JavaScript, YAML, SVG, shell, tar) and its name does
not end in one of upstream's already-compressed extensions. Everything else (images,
archives, `.bin`, unknown types) is stored as it is, so a plain GET returns the original
bytes. Upstream's workers gzip every file except a list of compressed extensions; we
narrow that to what actually compresses. Clients should still honour `Content-Encoding`
(`curl --compressed`): the logs and text artifacts are gzip-encoded.

`object` artifacts (upstream's object service flow: createArtifact → createUpload (putUrl)
→ PUT → finishUpload → finishArtifact) are stored without a content encoding, as
upstream's object service has no such notion.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import logging
import mimetypes
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

# Upstream's list: these are stored as they are, without a gzip content-encoding.
SKIP_COMPRESSION = frozenset(
    ".7z .bz2 .deb .dmg .flv .gif .gz .jpeg .jpg .png .swf .tbz .tgz .webp .whl .woff .woff2 "
    ".xz .zip .zst .lz4".split()
)
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Types that compress well although they are not text/*.
TEXT_LIKE_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/x-javascript",
        "application/x-sh",
        "application/x-yaml",
        "application/yaml",
        "application/x-tar",
        "application/x-ndjson",
        "application/sql",
        "application/toml",
        "image/svg+xml",
    }
)
# Common text files `mimetypes` does not know on every system.
_EXTRA_TYPES = {
    ".log": "text/plain",
    ".md": "text/markdown",
    ".yml": "text/yaml",
    ".yaml": "text/yaml",
    ".toml": "application/toml",
    ".ndjson": "application/x-ndjson",
}


def content_type_for(name: str) -> str:
    extension = posixpath.splitext(name)[1].lower()
    if extension in _EXTRA_TYPES:
        return _EXTRA_TYPES[extension]
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE


def is_text_like(content_type: str) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return base.startswith("text/") or base in TEXT_LIKE_TYPES or base.endswith(("+json", "+xml"))


def should_gzip(name: str, content_type: str | None = None) -> bool:
    """Whether an artifact is stored gzip-encoded (see the module's note). Pure."""
    if posixpath.splitext(name)[1].lower() in SKIP_COMPRESSION:
        return False
    return is_text_like(content_type or content_type_for(name))


@dataclass(frozen=True)
class FileArtifact:
    """A file to store as artifact `name`. `encoding`: "gzip" / "identity" to force one,
    None to apply `should_gzip`. `precompressed`: `path` already holds the gzip bytes."""

    name: str
    path: Path
    content_type: str
    expires: str
    encoding: str | None = None
    precompressed: bool = False


@dataclass(frozen=True)
class ErrorArtifact:
    name: str
    reason: str  # "file-missing-on-worker" | "invalid-resource-on-worker" | ...
    message: str
    expires: str


Collected = FileArtifact | ErrorArtifact


class UploadError(Exception):
    """An artifact could not be stored, even after retries."""


def _gzip_file(source: Path, target: Path) -> None:
    with source.open("rb") as raw, gzip.open(target, "wb", compresslevel=6) as out:
        shutil.copyfileobj(raw, out, 1 << 20)


def _hashes(path: Path) -> dict[str, str]:
    sha256, sha512 = hashlib.sha256(), hashlib.sha512()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            sha256.update(chunk)
            sha512.update(chunk)
    return {"sha256": sha256.hexdigest(), "sha512": sha512.hexdigest()}


class Uploader:
    """Creates artifacts on the queue (with the run's current client) and PUTs the bytes.

    `storage` is "s3" (a signed PUT URL from the queue) or "object" (the object service,
    reached with `object_for(credentials)`, a `taskcluster.aio.Object` factory)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        attempts: int,
        backoff_s: float,
        *,
        storage: str = "s3",
        object_for: Any = None,
    ) -> None:
        if storage not in ("s3", "object"):
            raise ValueError(f"artifact storage must be s3 or object, not {storage!r}")
        self._session, self._attempts, self._backoff_s = session, attempts, backoff_s
        self._storage, self._object_for = storage, object_for

    async def upload(self, queue: Any, task_id: str, run_id: int, item: FileArtifact) -> None:
        if self._storage == "object":
            await self._upload_object(queue, task_id, run_id, item)
            return
        encoding = item.encoding or ("gzip" if should_gzip(item.name, item.content_type) else None)
        body_path = item.path
        if encoding == "gzip" and not item.precompressed:
            body_path = item.path.with_name(item.path.name + ".gz-upload")
            await asyncio.to_thread(_gzip_file, item.path, body_path)
        try:
            body = {"storageType": "s3", "contentType": item.content_type, "expires": item.expires}
            created = await queue.createArtifact(task_id, str(run_id), item.name, body)
            headers = {"Content-Type": item.content_type}
            if encoding == "gzip":
                headers["Content-Encoding"] = "gzip"
            await self._put(created["putUrl"], body_path, item.name, headers)
        finally:
            if body_path != item.path:
                body_path.unlink(missing_ok=True)

    async def _upload_object(self, queue: Any, task_id: str, run_id: int, item: Any) -> None:
        size = item.path.stat().st_size
        body = {
            "storageType": "object",
            "contentType": item.content_type,
            "contentLength": size,
            "expires": item.expires,
        }
        created = await queue.createArtifact(task_id, str(run_id), item.name, body)
        objects = self._object_for(created["credentials"])
        hashes = await asyncio.to_thread(_hashes, item.path)
        common = {"projectId": created["projectId"], "uploadId": created["uploadId"]}
        if size <= 8192:  # upstream's clients inline small objects
            data = base64.b64encode(item.path.read_bytes()).decode()
            method = {"dataInline": {"contentType": item.content_type, "objectData": data}}
            await objects.createUpload(
                created["name"],
                {**common, "expires": item.expires, "proposedUploadMethods": method},
            )
        else:
            method = {"putUrl": {"contentType": item.content_type, "contentLength": size}}
            answer = await objects.createUpload(
                created["name"],
                {**common, "expires": item.expires, "proposedUploadMethods": method},
            )
            put = answer["uploadMethod"]["putUrl"]
            await self._put(put["url"], item.path, item.name, dict(put.get("headers", {})))
        await objects.finishUpload(created["name"], {**common, "hashes": hashes})
        await queue.finishArtifact(
            task_id, str(run_id), item.name, {"uploadId": created["uploadId"]}
        )

    async def error(self, queue: Any, task_id: str, run_id: int, item: ErrorArtifact) -> None:
        body = {
            "storageType": "error",
            "reason": item.reason,
            "message": item.message,
            "expires": item.expires,
        }
        await queue.createArtifact(task_id, str(run_id), item.name, body)

    async def _put(self, url: str, path: Path, name: str, headers: dict[str, str]) -> None:
        size = (await asyncio.to_thread(path.stat)).st_size
        last_error = ""
        for attempt in range(1, self._attempts + 1):
            try:
                with path.open("rb") as body:  # aiohttp streams the file in chunks
                    async with self._session.put(
                        url,
                        data=body,
                        headers={**headers, "Content-Length": str(size)},
                        timeout=aiohttp.ClientTimeout(total=300),
                    ) as response:
                        if response.status in (200, 201, 204):
                            return
                        last_error = f"HTTP {response.status}: {(await response.text())[:200]}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last_error = repr(exc)
            log.warning(
                "artifact upload failed",
                extra={"artifact": name, "attempt": attempt, "error": last_error},
            )
            if attempt < self._attempts:
                await asyncio.sleep(min(self._backoff_s * 1.311 ** (attempt - 1), 30.0))
        raise UploadError(f"uploading {name} failed after {self._attempts} attempts: {last_error}")
