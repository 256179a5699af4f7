"""The Docker engine, through the `docker` SDK, with every blocking call in this module's
own thread pool (a running container holds one thread while its log streams, so the
loop's small default pool would starve at capacity).

Docker errors are translated here: `ImageError` (pull/load: the run fails) and
`ContainerError` (create/start: the run fails). Containers carry the worker's label so
leftovers from a crash are found and removed when the worker starts.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import logging
import random
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

log = logging.getLogger(__name__)

T = TypeVar("T")
WORKER_LABEL = "org.flotilla.docker-worker"
RUN_LABEL = "org.flotilla.task-run"


class ImageError(Exception):
    """The image could not be found, pulled or loaded."""


class ContainerError(Exception):
    """Docker refused to create or start the container."""


@dataclass
class ContainerSpec:
    image: str
    command: list[str]
    env: list[str]
    labels: dict[str, str]
    binds: dict[str, dict[str, str]] = field(default_factory=dict)
    privileged: bool = False


class Docker:
    def __init__(self, base_url: str, *, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="docker")
        self.client = docker.DockerClient(base_url=base_url, timeout=120, max_pool_size=threads)
        self._image_lock = asyncio.Lock()  # one pull or load at a time, as upstream

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run another blocking step (artifact extraction, ...) on this pool."""
        return await self._call(fn, *args)

    def close(self) -> None:
        self.client.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def ping(self) -> None:
        await self._call(self.client.ping)

    # images

    async def ensure_image(self, name: str, *, attempts: int, backoff_s: float) -> str:
        """The image id of `name`, pulling it (serialized, with retries) when missing."""
        async with self._image_lock:
            try:
                return (await self._call(self.client.images.get, name)).id
            except docker.errors.ImageNotFound:
                pass
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                raise ImageError(f"inspecting image {name} failed: {exc}") from exc
            last = ""
            for attempt in range(1, attempts + 1):
                try:
                    return (await self._call(self.client.images.pull, name)).id
                except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                    last = str(exc)
                if attempt < attempts:
                    delay = backoff_s * 2 ** (attempt - 1) * random.uniform(0.75, 1.25)
                    await asyncio.sleep(delay)
            raise ImageError(f"pulling image {name} failed after {attempts} attempts: {last}")

    async def load_image(self, tarball: Path, tag: str) -> str:
        """`docker load` a one-image tarball under `tag` (its own tags are replaced)."""
        async with self._image_lock:
            try:
                return await self._call(self._load, tarball, tag)
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                raise ImageError(f"loading the image tarball failed: {exc}") from exc

    def _load(self, tarball: Path, tag: str) -> str:
        retagged = tarball.with_suffix(".retagged.tar")
        retag_tarball(tarball, retagged, tag)
        with retagged.open("rb") as data:
            images = self.client.images.load(data)
        retagged.unlink(missing_ok=True)
        if len(images) != 1:
            raise ImageError(f"the tarball must hold exactly one image, it holds {len(images)}")
        return images[0].id

    # containers

    async def create(self, spec: ContainerSpec) -> Any:
        try:
            return await self._call(
                self.client.containers.create,
                spec.image,
                command=spec.command or None,
                environment=spec.env,
                labels=spec.labels,
                volumes=spec.binds,
                privileged=spec.privileged,
                extra_hosts={"localhost.localdomain": "127.0.0.1"},
                tty=False,
            )
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ContainerError(f"creating the container failed: {exc}") from exc

    async def start(self, container: Any) -> None:
        try:
            await self._call(container.start)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ContainerError(f"starting the container failed: {exc}") from exc

    async def stream_output(self, container: Any, sink: Callable[[bytes], None]) -> None:
        """Feed the container's stdout+stderr to `sink` (on the loop) until it exits."""
        loop = asyncio.get_running_loop()

        def pump() -> None:
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                loop.call_soon_threadsafe(sink, chunk)

        await self._call(pump)

    async def wait(self, container: Any) -> int:
        result = await self._call(container.wait)
        return int(result.get("StatusCode", -1))

    async def kill(self, container: Any) -> None:
        try:
            await self._call(container.kill)
        except docker.errors.APIError as exc:  # already stopped: fine
            log.debug("kill refused", extra={"container": container.id, "error": str(exc)})

    async def remove(self, container_id: str) -> None:
        """Remove a container and its anonymous volumes (force; a few retries, then give up)."""
        for attempt in range(5):
            try:
                await self._call(self.client.api.remove_container, container_id, v=True, force=True)
                return
            except docker.errors.NotFound:
                return
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                log.warning(
                    "container removal failed",
                    extra={"container": container_id, "attempt": attempt, "error": str(exc)},
                )
                await asyncio.sleep(0.5 * 2**attempt)

    async def running_ids(self, worker_key: str) -> list[str]:
        found = await self._call(
            self.client.containers.list, all=True, filters={"label": f"{WORKER_LABEL}={worker_key}"}
        )
        return [container.id for container in found]

    async def remove_leftovers(self, worker_key: str) -> int:
        ids = await self.running_ids(worker_key)
        for container_id in ids:
            await self.remove(container_id)
        if ids:
            log.info("removed leftover containers", extra={"count": len(ids)})
        return len(ids)


def image_tag(task_id: str, path: str) -> str:
    """Upstream's name for an artifact image: md5(taskId + path):latest."""
    return hashlib.md5((task_id + path).encode()).hexdigest() + ":latest"  # noqa: S324


def retag_tarball(source: Path, target: Path, tag: str) -> None:
    """Copy a `docker save` tarball, setting its one image's RepoTags to `tag` (and dropping
    the legacy `repositories` file) so loading it cannot overwrite another image's tag."""
    with tarfile.open(source, "r:") as src, tarfile.open(target, "w:") as dst:
        for member in src:
            if member.name in ("repositories", "./repositories"):
                continue
            data = src.extractfile(member) if member.isfile() else None
            if member.name.lstrip("./") == "manifest.json" and data is not None:
                manifest = json.load(data)
                if len(manifest) != 1:
                    raise ImageError(
                        f"the tarball must hold exactly one image, it holds {len(manifest)}"
                    )
                manifest[0]["RepoTags"] = [tag]
                body = json.dumps(manifest).encode()
                member.size = len(body)
                dst.addfile(member, io.BytesIO(body))
            else:
                dst.addfile(member, data)
