"""The process engine's task handler (a `flotilla_worker` handler): generic-worker's
insecure engine, in brief —

payload → task directory (`<run>/task`) → mounts (files, read-only directories, caches)
→ each command in turn as a native process (its own session; output into the live log;
the first non-zero exit stops) → artifacts (also after a failure) → exit code.

`maxRunTime`, cancellation and shutdown come from the kit, which cancels this coroutine:
the running command's whole process group is killed. The exit code and
`onExitStatus` decide the report (kit's `results.decide`): `retry` codes become
`exception/intermittent-task`, `purgeCaches` codes purge the run's caches.

Environment: the task sees PATH/LANG/LC_ALL/TZ of the worker (never its credentials),
`HOME` and `TASK_WORKDIR` = the task directory, the payload's `env`, then upstream's
variables (`TASK_ID`, `RUN_ID`, `TASK_GROUP_ID`, `TASKCLUSTER_ROOT_URL`, ...), which win.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from flotilla_worker import MalformedPayload, TaskContext, TaskFailed
from flotilla_worker.artifacts import content_type_for
from flotilla_worker.timeutil import format_ts
from services.process_worker import mounts
from services.process_worker.caches import CacheInstance, Caches
from services.process_worker.payload import (
    Artifact,
    FileMount,
    Payload,
    ReadOnlyDirectory,
    WritableDirectoryCache,
    parse_payload,
)

INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class EngineDeps:
    caches: Caches
    session: aiohttp.ClientSession  # decodes Content-Encoding (mount downloads)
    purge_cache: Any  # taskcluster.aio.PurgeCache, or None
    max_run_time_s: int
    worker_env: Mapping[str, str]


def task_environment(
    worker_env: Mapping[str, str], task_env: Mapping[str, str], upstream: Mapping[str, str]
) -> dict[str, str]:
    """What a command sees (see the module's note). Pure."""
    base = {k: worker_env[k] for k in INHERITED_ENV if k in worker_env}
    return {**base, **task_env, **upstream}


def upstream_variables(task: TaskContext, task_dir: Path) -> dict[str, str]:
    settings = task.settings
    return {
        "TASK_ID": task.task_id,
        "RUN_ID": str(task.run_id),
        "TASK_GROUP_ID": str(task.task.get("taskGroupId", task.task_id)),
        "TASK_WORKDIR": str(task_dir),
        "HOME": str(task_dir),
        "TASKCLUSTER_ROOT_URL": settings.root_url,
        "TASKCLUSTER_WORKER_POOL": settings.task_queue_id,
        "TASKCLUSTER_WORKER_GROUP": settings.worker_group,
        "TASKCLUSTER_INSTANCE_TYPE": settings.worker_node_type,
        "TASKCLUSTER_WORKER_LOCATION": '{"cloud":"static"}',
    }


def live_log_name(task: Mapping[str, Any]) -> str | None:
    """generic-worker's `logs.live` (default `public/logs/live.log`), or None when the task
    turns `features.liveLog` off. Read leniently: a malformed payload still gets its log."""
    payload = task.get("payload") if isinstance(task.get("payload"), dict) else {}
    features = payload.get("features") if isinstance(payload.get("features"), dict) else {}
    if features.get("liveLog", True) is False:
        return None
    logs = payload.get("logs") if isinstance(payload.get("logs"), dict) else {}
    live = logs.get("live")
    return live if isinstance(live, str) and live else "public/logs/live.log"


class ProcessEngine:
    def __init__(self, deps: EngineDeps) -> None:
        self.deps = deps

    async def __call__(self, task: TaskContext) -> int:
        parsed = parse_payload(task.payload, self.deps.max_run_time_s)
        if isinstance(parsed, list):
            raise MalformedPayload("\n" + "\n".join(parsed))
        payload = parsed
        task.on_exit_status = payload.onExitStatus
        task_dir = task.work_dir / "task"
        task_dir.mkdir()
        task.add_cleanup(lambda _report: mounts.writable(task_dir))
        await self._mount(task, payload, task_dir)
        env = task_environment(
            self.deps.worker_env, payload.env, upstream_variables(task, task_dir)
        )
        exit_code = 0
        for index, command in enumerate(payload.command):
            task.log.info(f"Executing command {index}: {shlex.join(command)}")
            exit_code = await self._run(task, command, task_dir, env)
            task.log.info(f"Exit Code: {exit_code}")
            if exit_code != 0:
                break
        missing = self._artifacts(task, payload, task_dir)
        if exit_code == 0 and missing:
            raise TaskFailed(f"Required artifacts missing: {', '.join(missing)}")
        return exit_code

    # mounts

    async def _mount(self, task: TaskContext, payload: Payload, task_dir: Path) -> None:
        caches = self.deps.caches
        if self.deps.purge_cache is not None and any(
            isinstance(m, WritableDirectoryCache) for m in payload.mounts
        ):
            await caches.apply_purge_requests(self.deps.purge_cache, task.settings.pool_id)
        held: list[CacheInstance] = []

        def release(report: Any) -> None:
            purge = bool(report is not None and report.purge_caches)
            for instance in held:
                caches.release(instance, purge=purge)

        task.add_cleanup(release)
        try:
            for mount in payload.mounts:
                if isinstance(mount, WritableDirectoryCache):
                    instance = caches.acquire(mount.cacheName)
                    held.append(instance)
                    target = mounts.inside(task_dir, mount.directory)
                    if instance.new and mount.content is not None:
                        archive = await mounts.fetch(
                            mount.content, task.queue, self.deps.session, task.work_dir
                        )
                        await asyncio.to_thread(
                            mounts.extract, archive, instance.path, mount.format or "tar"
                        )
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(instance.path, target_is_directory=True)
                    state = "new" if instance.new else "kept"
                    task.log.info(f'cache "{mount.cacheName}" ({state}) -> {mount.directory}')
                elif isinstance(mount, ReadOnlyDirectory):
                    archive = await mounts.fetch(
                        mount.content, task.queue, self.deps.session, task.work_dir
                    )
                    target = mounts.inside(task_dir, mount.directory)
                    await asyncio.to_thread(mounts.extract, archive, target, mount.format)
                    mounts.read_only(target)
                    task.log.info(f"{mounts.describe(mount.content)} -> {mount.directory}/")
                else:
                    assert isinstance(mount, FileMount)
                    source = await mounts.fetch(
                        mount.content, task.queue, self.deps.session, task.work_dir
                    )
                    target = mounts.inside(task_dir, mount.file)
                    await asyncio.to_thread(mounts.place_file, source, target, mount.format)
                    task.log.info(f"{mounts.describe(mount.content)} -> {mount.file}")
        except mounts.MountError as exc:
            raise TaskFailed(f"Mounting failed: {exc}") from exc

    # commands

    async def _run(
        self, task: TaskContext, command: list[str], cwd: Path, env: dict[str, str]
    ) -> int:
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole
            )
        except OSError as exc:
            task.log.error(f"Cannot start {command[0]!r}: {exc.strerror or exc}")
            return -1
        try:
            assert process.stdout is not None
            while chunk := await process.stdout.read(READ_CHUNK):
                task.log.write(chunk)
            return await process.wait()
        finally:
            if process.returncode is None:  # cancelled: maxRunTime, cancel, shutdown
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.shield(process.wait())

    # artifacts

    def _artifacts(self, task: TaskContext, payload: Payload, task_dir: Path) -> list[str]:
        """Register the declared artifacts; the names of missing required ones."""
        missing = []
        for artifact in payload.artifacts:
            name = artifact.name or artifact.path
            expires = format_ts(artifact.expires) if artifact.expires else None
            path = Path(artifact.path)
            path = path if path.is_absolute() else task_dir / path
            found = path.is_file() if artifact.type == "file" else path.is_dir()
            if not found:
                message = f"Artifact {name!r}: no {artifact.type} at {artifact.path}"
                task.add_error_artifact(name, "file-missing-on-worker", message, expires=expires)
                if not artifact.optional:
                    missing.append(name)
                continue
            files = [path] if artifact.type == "file" else sorted(path.rglob("*"))
            for file in files:
                if not file.is_file():
                    continue
                member = (
                    name
                    if artifact.type == "file"
                    else (f"{name.rstrip('/')}/{file.relative_to(path).as_posix()}")
                )
                self._add(task, artifact, member, file, expires)
        return missing

    @staticmethod
    def _add(task: TaskContext, spec: Artifact, name: str, file: Path, expires: str | None) -> None:
        task.add_artifact(
            name,
            file,
            content_type=spec.contentType or content_type_for(name),
            expires=expires,
            encoding=spec.contentEncoding,
        )
