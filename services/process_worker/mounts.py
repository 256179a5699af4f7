"""Mount contents (reference §6 `mounts`): fetched into the run's work directory, checked
against `sha256` when given, then placed: a file (optionally decompressed), or an archive
extracted into a directory. Task artifacts are fetched through the queue with the run's
own credentials (so the task's scopes decide, as upstream: `queue:get-artifact:<name>`
for a non-public one); `Content-Encoding: gzip` is decoded.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import aiohttp

from services.process_worker.payload import (
    ArtifactContent,
    Base64Content,
    Content,
    RawContent,
    UrlContent,
)


class MountError(Exception):
    """The content could not be fetched or placed (the run fails, with this message)."""


def describe(content: Content) -> str:
    if isinstance(content, ArtifactContent):
        return f"artifact {content.artifact} of task {content.taskId}"
    if isinstance(content, UrlContent):
        return f"url {content.url}"
    return "inline content"


async def fetch(content: Content, queue: Any, session: aiohttp.ClientSession, work: Path) -> Path:
    """The content's bytes in a new file under `work`."""
    target = work / f"mount-{uuid.uuid4().hex}"
    if isinstance(content, RawContent):
        target.write_text(content.raw)
        return target
    if isinstance(content, Base64Content):
        target.write_bytes(base64.b64decode(content.base64))
        return target
    if isinstance(content, ArtifactContent):
        url = queue.buildSignedUrl("getLatestArtifact", content.taskId, content.artifact)
    else:
        url = content.url
    digest = hashlib.sha256()
    try:
        async with session.get(url) as response:
            if response.status != 200:
                raise MountError(f"fetching {describe(content)} answered HTTP {response.status}")
            with target.open("wb") as out:
                async for chunk in response.content.iter_chunked(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    except aiohttp.ClientError as exc:
        raise MountError(f"fetching {describe(content)} failed: {exc!r}") from exc
    expected = getattr(content, "sha256", None)
    if expected and digest.hexdigest() != expected:
        raise MountError(
            f"{describe(content)} has sha256 {digest.hexdigest()}, the payload says {expected}"
        )
    return target


def inside(task_dir: Path, relative: str) -> Path:
    """`relative` resolved in the task directory; never outside it."""
    path = (task_dir / relative).resolve()
    if path != task_dir.resolve() and task_dir.resolve() not in path.parents:
        raise MountError(f"{relative} is outside the task directory")
    return path


def place_file(source: Path, target: Path, compression: str | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    opener = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(compression or "")
    try:
        if opener is None:
            shutil.move(source, target)
        else:
            with opener(source, "rb") as raw, target.open("wb") as out:
                shutil.copyfileobj(raw, out)
    except OSError as exc:
        raise MountError(f"cannot place {target.name}: {exc}") from exc
    read_only(target)


def extract(archive: Path, target: Path, fmt: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "zip":
            with zipfile.ZipFile(archive) as source:
                for member in source.namelist():
                    inside(target, member)  # no path escapes
                source.extractall(target)
        else:
            mode = {"tar": "r:", "tar.gz": "r:gz", "tar.bz2": "r:bz2", "tar.xz": "r:xz"}[fmt]
            with tarfile.open(archive, mode) as source:
                source.extractall(target, filter="data")
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError, lzma.LZMAError) as exc:
        raise MountError(f"cannot extract the {fmt} archive: {exc}") from exc


def read_only(path: Path) -> None:
    """Best effort (the insecure engine runs tasks as the worker's user, who could undo it)."""
    mask = ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in files + dirs:
                entry = Path(root) / name
                entry.chmod(entry.stat().st_mode & mask)
    path.chmod(path.stat().st_mode & mask)


def writable(path: Path) -> None:
    """Undo `read_only` so the run's directory can be deleted."""
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            entry = Path(root) / name
            entry.chmod(entry.stat().st_mode | stat.S_IWUSR)
    if path.exists():
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
