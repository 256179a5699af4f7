"""Declared artifacts (reference §2.7): read from the stopped container with
`get_archive`, one artifact per regular file, content type from the extension, gzip
except for already-compressed types; `error` artifacts for missing paths or a file where
a directory was declared (and back); uploads retried with backoff.

`collect` is blocking (tar and the Docker SDK): the caller runs it in a thread.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import mimetypes
import posixpath
import shutil
import tarfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import docker.errors

from services.docker_worker.payload import ArtifactSpec

log = logging.getLogger(__name__)

# Upstream's list: these are stored as they are, without a gzip content-encoding.
SKIP_COMPRESSION = frozenset(
    ".7z .bz2 .deb .dmg .flv .gif .gz .jpeg .jpg .png .swf .tbz .tgz .webp .whl .woff .woff2 "
    ".xz .zip .zst .lz4".split()
)
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def content_type_for(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE


def should_gzip(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() not in SKIP_COMPRESSION


def member_artifact_name(declared: str, kind: str, member: str) -> str:
    """A tar member's artifact name: the declared name for a file; for a directory the
    declared name plus the member's path below the archived directory."""
    if kind == "file":
        return declared
    relative = member.split("/", 1)[1] if "/" in member else ""
    return f"{declared.rstrip('/')}/{relative}".rstrip("/")


@dataclass(frozen=True)
class FileArtifact:
    name: str
    path: Path  # the bytes to PUT (already gzip-compressed when encoding is "gzip")
    content_type: str
    encoding: str | None
    expires: str
    size: int  # bytes to PUT


@dataclass(frozen=True)
class ErrorArtifact:
    name: str
    reason: str  # "file-missing-on-worker" | "invalid-resource-on-worker"
    message: str
    expires: str


Collected = FileArtifact | ErrorArtifact


def collect(
    docker_client: Any,
    container_id: str,
    name: str,
    spec: ArtifactSpec,
    expires: str,
    work_dir: Path,
) -> list[Collected]:
    """Copy one declared artifact out of the container into `work_dir`."""
    tar_path = work_dir / f"archive-{uuid.uuid4().hex}.tar"
    try:
        stream, _stat = docker_client.api.get_archive(container_id, spec.path)
        with tar_path.open("wb") as out:
            for chunk in stream:
                out.write(chunk)
    except docker.errors.NotFound:
        message = f"Artifact {name!r} not found at {spec.path}"
        return [ErrorArtifact(name, "file-missing-on-worker", message, expires)]
    try:
        with tarfile.open(tar_path, "r:") as archive:
            return list(_extract(archive, name, spec, expires, work_dir))
    finally:
        tar_path.unlink(missing_ok=True)


def _extract(
    archive: tarfile.TarFile, name: str, spec: ArtifactSpec, expires: str, work_dir: Path
) -> Iterable[Collected]:
    first = archive.next()
    found = "directory" if first is not None and first.isdir() else "file"
    if first is None or found != spec.type:
        message = f"{spec.path} is a {found}, but the artifact {name!r} is a {spec.type}"
        yield ErrorArtifact(name, "invalid-resource-on-worker", message, expires)
        return
    member: tarfile.TarInfo | None = first
    while member is not None:
        if member.isfile():
            artifact_name = member_artifact_name(name, spec.type, member.name)
            yield _spool(archive, member, artifact_name, expires, work_dir)
        member = archive.next()


def _spool(
    archive: tarfile.TarFile, member: tarfile.TarInfo, name: str, expires: str, work_dir: Path
) -> FileArtifact:
    source = archive.extractfile(member)
    assert source is not None  # a regular file always has contents
    target = work_dir / f"artifact-{uuid.uuid4().hex}"
    compress = should_gzip(name)
    with source, gzip.open(target, "wb", 6) if compress else target.open("wb") as out:
        shutil.copyfileobj(source, out)
    encoding = "gzip" if compress else None
    size = target.stat().st_size
    return FileArtifact(name, target, content_type_for(name), encoding, expires, size)


class UploadError(Exception):
    """An artifact could not be stored, even after retries."""


class Uploader:
    """Creates artifacts on the queue (with the run's current client) and PUTs the bytes."""

    def __init__(self, session: aiohttp.ClientSession, attempts: int, backoff_s: float) -> None:
        self._session, self._attempts, self._backoff_s = session, attempts, backoff_s

    async def upload(self, queue: Any, task_id: str, run_id: int, item: FileArtifact) -> None:
        body = {"storageType": "s3", "contentType": item.content_type, "expires": item.expires}
        created = await queue.createArtifact(task_id, str(run_id), item.name, body)
        headers = {"Content-Type": item.content_type}
        if item.encoding:
            headers["Content-Encoding"] = item.encoding
        await self._put(created["putUrl"], item, headers)

    async def error(self, queue: Any, task_id: str, run_id: int, item: ErrorArtifact) -> None:
        body = {
            "storageType": "error",
            "reason": item.reason,
            "message": item.message,
            "expires": item.expires,
        }
        await queue.createArtifact(task_id, str(run_id), item.name, body)

    async def _put(self, url: str, item: FileArtifact, headers: dict[str, str]) -> None:
        path, name, size = item.path, item.name, item.size
        last_error = ""
        for attempt in range(1, self._attempts + 1):
            try:
                with path.open("rb") as body:
                    async with self._session.put(
                        url,
                        data=body,
                        headers={**headers, "Content-Length": str(size)},
                        timeout=aiohttp.ClientTimeout(total=300),
                    ) as response:
                        if response.status == 200:
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
