"""The docker-worker's task handler on the worker kit (`flotilla_worker`): what is Docker
about a run (reference §2.3) —

features → schema → scopes → image → caches → container → its exit code → artifacts
read from the stopped container.

Everything else (claims, reclaims, cancellation, maxRunTime, live and backing log,
uploads, reports, shutdown) is the kit's. When the kit stops the run (cancel, lost claim,
maxRunTime, shutdown) it cancels this coroutine: the container is killed. The container
and the caches are released after the report (the purge flag comes from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from flotilla_worker import MalformedPayload, Report, TaskContext, TaskFailed
from flotilla_worker.timeutil import format_ts
from services.docker_worker.artifacts import collect
from services.docker_worker.caches import Caches, PurgeChecker
from services.docker_worker.config import WorkerConfig
from services.docker_worker.containers import (
    RUN_LABEL,
    WORKER_LABEL,
    ContainerError,
    ContainerSpec,
    Docker,
    ImageError,
    image_tag,
)
from services.docker_worker.env import (
    WorkerIdentity,
    as_docker_list,
    container_env,
    worker_variables,
)
from services.docker_worker.payload import (
    DEFAULT_LOG_NAME,
    Payload,
    TaskImage,
    feature_errors,
    parse_payload,
    scope_errors,
)

WORKER_VERSION = "flotilla-docker-worker 0.1"
DRAIN_S = 10.0  # after a kill, how long the container's output may still arrive


def live_log_name(features: tuple[str, ...]) -> Callable[[dict[str, Any]], str | None]:
    """The live log's name (payload `log`), or None when the run does not use the
    `localLiveLog` feature. Read leniently: a malformed payload still gets its log."""

    def name_for(task: dict[str, Any]) -> str | None:
        raw = task.get("payload") if isinstance(task.get("payload"), dict) else {}
        name = raw.get("log") if isinstance(raw.get("log"), str) and raw.get("log") else None
        wanted = raw.get("features") if isinstance(raw.get("features"), dict) else {}
        used = wanted.get("localLiveLog", True) is not False and "localLiveLog" in features
        return (name or DEFAULT_LOG_NAME) if used else None

    return name_for


@dataclass(frozen=True)
class EngineDeps:
    config: WorkerConfig
    docker: Docker
    caches: Caches
    session: aiohttp.ClientSession  # task-image downloads
    purges: PurgeChecker | None = None  # asks purge-cache before caches are mounted


class DockerEngine:
    def __init__(self, deps: EngineDeps) -> None:
        self.deps = deps

    async def __call__(self, task: TaskContext) -> int:
        cfg, raw = self.deps.config, task.payload
        errors = feature_errors(raw, cfg.features)
        if errors:
            raise TaskFailed("\n".join(errors))
        parsed = parse_payload(raw)
        if isinstance(parsed, list):
            raise MalformedPayload("\n" + json.dumps(parsed, indent=2))
        payload = parsed
        task.on_exit_status = payload.onExitStatus
        errors = scope_errors(
            payload,
            task.task.get("scopes", []),
            cfg.task_queue_id,
            allow_privileged=cfg.allow_privileged,
        )
        if errors:
            raise TaskFailed("Docker configuration could not be created: " + "; ".join(errors))
        try:
            image = await self._image(task, payload)
        except ImageError as exc:
            raise TaskFailed(f"Pulling docker image has failed. {exc}") from exc
        if payload.cache and self.deps.purges is not None:
            await self._honour_purge_requests(task, self.deps.purges)
        spec = self._container_spec(task, payload, image)
        docker = self.deps.docker
        creating = asyncio.ensure_future(docker.create(spec))
        try:
            container = await asyncio.shield(creating)  # a container is never left behind
            task.add_cleanup(lambda _report: docker.remove(container.id))
            await docker.start(container)
        except ContainerError as exc:
            raise TaskFailed(str(exc)) from exc
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await docker.remove((await creating).id)
            raise
        task.timeline.started = time.monotonic()
        exited = asyncio.create_task(self._exit_code(container, task))
        try:
            exit_code = await asyncio.shield(exited)
        except asyncio.CancelledError:  # the kit stops the run: kill, let the output drain
            await docker.kill(container)
            await asyncio.wait({exited}, timeout=DRAIN_S)
            raise
        task.timeline.finished = time.monotonic()
        if payload.artifacts and payload.uses("artifacts", cfg.features):
            await self._collect_artifacts(task, payload, container)
        return exit_code

    async def _exit_code(self, container: Any, task: TaskContext) -> int:
        await self.deps.docker.stream_output(container, task.log.write)
        return await self.deps.docker.wait(container)

    async def _image(self, task: TaskContext, payload: Payload) -> str:
        cfg = self.deps.config
        if isinstance(payload.image, TaskImage):
            return await self._task_image(task, payload.image)
        name = payload.image_name()
        assert name is not None  # indexed-image was refused as malformed
        task.log.info(f"Using image {name}")
        return await self.deps.docker.ensure_image(
            name, attempts=cfg.pull_attempts, backoff_s=cfg.pull_backoff_s
        )

    async def _task_image(self, task: TaskContext, image: TaskImage) -> str:
        if not image.path.endswith(".tar"):
            raise ImageError(f"image artifact {image.path} must be a .tar (lz4/zst unsupported)")
        task.log.info(f"Loading image from task {image.taskId} artifact {image.path}")
        url = task.queue.buildSignedUrl("getLatestArtifact", image.taskId, image.path)
        target = task.work_dir / "image.tar"
        try:
            async with self.deps.session.get(url) as response:
                if response.status != 200:
                    raise ImageError(f"downloading {image.path} answered HTTP {response.status}")
                with target.open("wb") as out:
                    async for chunk in response.content.iter_chunked(1 << 20):
                        out.write(chunk)
        except aiohttp.ClientError as exc:
            raise ImageError(f"downloading {image.path} failed: {exc!r}") from exc
        return await self.deps.docker.load_image(target, image_tag(image.taskId, image.path))

    async def _honour_purge_requests(self, task: TaskContext, purges: PurgeChecker) -> None:
        try:
            for name in await purges.check():
                task.log.info(f'cache "{name}" was purged: starting it empty')
        except Exception as exc:  # as generic-worker: warn, keep the caches, run the task
            task.log.info(f"[warning] could not ask purge-cache for purge requests: {exc}")

    def _container_spec(self, task: TaskContext, payload: Payload, image: str) -> ContainerSpec:
        cfg = self.deps.config
        identity = WorkerIdentity(
            root_url=cfg.root_url,
            provisioner_id=cfg.provisioner_id,
            worker_type=cfg.worker_type,
            worker_group=cfg.worker_group,
            worker_id=cfg.worker_id,
            instance_type=cfg.worker_node_type,
            public_ip=cfg.live_log_public_hostname,
            location=cfg.worker_location,
        )
        env = container_env(payload.env, worker_variables(identity, task.task_id, task.run_id))
        caches = self.deps.caches
        held = []

        def release(report: Report | None) -> None:
            purge = report is not None and report.purge_caches
            for instance in held:
                caches.release(instance, purge=purge)

        task.add_cleanup(release)
        binds = {}
        for name, mount in payload.cache.items():
            instance = caches.acquire(name)
            held.append(instance)
            binds[str(instance.path)] = {"bind": mount, "mode": "rw"}
            task.log.info(f'using cache "{name}" -> {instance.path}')
        return ContainerSpec(
            image=image,
            command=payload.command,
            env=as_docker_list(env),
            labels={WORKER_LABEL: cfg.worker_key, RUN_LABEL: f"{task.task_id}/{task.run_id}"},
            binds=binds,
            privileged=payload.capabilities.privileged,
        )

    async def _collect_artifacts(self, task: TaskContext, payload: Payload, container: Any) -> None:
        """Copy every declared artifact out of the stopped container for the kit to upload."""
        docker = self.deps.docker

        async def one(name: str, spec: Any) -> list[Any]:
            expires = task.task["expires"] if spec.expires is None else format_ts(spec.expires)
            return await docker.run_blocking(
                collect, docker.client, container.id, name, spec, expires, task.work_dir
            )

        found = await asyncio.gather(*(one(n, s) for n, s in payload.artifacts.items()))
        for items in found:
            task.artifacts.extend(items)
