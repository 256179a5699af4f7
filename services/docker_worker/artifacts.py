"""Declared artifacts (reference §2.7): read from the stopped container with
`get_archive`, one artifact per regular file, content type from the extension; `error`
artifacts for missing paths or a file where a directory was declared (and back). The
worker kit uploads them (and decides their content encoding: gzip for text-like types
only).

`collect` is blocking (tar and the Docker SDK): the caller runs it in a thread.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import docker.errors

from flotilla_worker.artifacts import Collected, ErrorArtifact, FileArtifact, content_type_for
from services.docker_worker.payload import ArtifactSpec

log = logging.getLogger(__name__)


def member_artifact_name(declared: str, kind: str, member: str) -> str:
    """A tar member's artifact name: the declared name for a file; for a directory the
    declared name plus the member's path below the archived directory."""
    if kind == "file":
        return declared
    relative = member.split("/", 1)[1] if "/" in member else ""
    return f"{declared.rstrip('/')}/{relative}".rstrip("/")


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
    with source, target.open("wb") as out:
        shutil.copyfileobj(source, out)
    return FileArtifact(name, target, content_type_for(name), expires)
