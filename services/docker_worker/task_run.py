"""One claimed run, start to finish (reference §2.3):

header → features → schema → scopes → image → caches → container → wait (maxRunTime,
or a stop: cancel / shutdown / lost claim) → artifacts → footer → logs → report → cleanup.

The steps before the report decide an `Outcome`; `results.decide` turns it into the report.
Clean-up (container and volumes removed, caches released, live log withdrawn, temp files
deleted) always runs, shielded from cancellation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from taskcluster.exceptions import TaskclusterRestFailure

from services.docker_worker import results
from services.docker_worker.artifacts import (
    ErrorArtifact,
    FileArtifact,
    Uploader,
    UploadError,
    collect,
)
from services.docker_worker.caches import CacheInstance, Caches, PurgeChecker
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
from services.docker_worker.livelog import CONTENT_TYPE, LiveLogServer, TaskLog
from services.docker_worker.payload import (
    DEFAULT_LOG_NAME,
    Payload,
    TaskImage,
    backing_log_name,
    feature_errors,
    parse_payload,
    scope_errors,
)
from services.docker_worker.results import Ending, Outcome, Report
from services.docker_worker.supervision import RunClaim, probe_loop, reclaim_loop
from shared.timeutil import format_ts

log = logging.getLogger(__name__)

WORKER_VERSION = "flotilla-docker-worker 0.1"


@dataclass(frozen=True)
class RunDeps:
    """What every run needs from the worker (built once, in the composition root)."""

    config: WorkerConfig
    docker: Docker
    caches: Caches
    live_logs: LiveLogServer
    uploader: Uploader
    session: aiohttp.ClientSession
    queue_for: Callable[[dict[str, str]], Any]  # credentials → taskcluster.aio.Queue
    worker_queue: Any  # the worker's own client (claimWork, status probes)
    purges: PurgeChecker | None = None  # asks purge-cache before caches are mounted


@dataclass
class Timeline:
    """Monotonic-clock seconds of a run's milestones (the benchmark reads them)."""

    claimed: float = field(default_factory=time.monotonic)
    container_started: float | None = None
    container_exited: float | None = None
    resolved: float | None = None


class TaskRun:
    def __init__(self, claim: dict[str, Any], deps: RunDeps) -> None:
        self.claim = RunClaim(claim, deps.queue_for)
        self.deps = deps
        self.timeline = Timeline()
        self.payload: Payload | None = None
        self.container: Any = None
        self.report: Report | None = None
        self._stop_reason: Ending | None = None
        self._stopped = asyncio.Event()
        self._caches: list[CacheInstance] = []
        self._purge_caches = False
        self._live_url: str | None = None
        self._supervisors: list[asyncio.Task[None]] = []
        self._work = Path(tempfile.mkdtemp(prefix="run-", dir=deps.config.work_root))
        self.log = TaskLog(self._work / "live.log")

    @property
    def ids(self) -> dict[str, Any]:
        return self.claim.ids

    def stop(self, ending: Ending, why: str = "") -> None:
        """Ask the run to end now (cancel, shutdown, lost claim); the first reason wins."""
        if self._stop_reason is None:
            self._stop_reason = ending
            self._stopped.set()
            log.info("stopping run", extra={**self.ids, "ending": ending.value, "why": why})

    async def run(self) -> Report | None:
        cfg = self.deps.config
        self._supervisors = [
            asyncio.create_task(reclaim_loop(self.claim, cfg.reclaim_divisor, self.stop)),
            asyncio.create_task(
                probe_loop(
                    self.claim, self.deps.worker_queue, cfg.status_probe_interval_s, self.stop
                )
            ),
        ]
        try:
            try:
                outcome = await self._execute()
            except Exception:
                log.exception("run failed unexpectedly", extra=self.ids)
                self.log.error("The worker failed while running this task (internal error).")
                outcome = Outcome(Ending.INTERNAL_ERROR)
            await asyncio.shield(self._finish(outcome))
        finally:
            self._stop_supervisors()
            await asyncio.shield(self._cleanup())
        return self.report

    # deciding the outcome

    async def _execute(self) -> Outcome:
        cfg, task, raw = self.deps.config, self.claim.task, self.claim.task.get("payload")
        self._write_header()
        await self._publish_live_log(raw)
        errors = feature_errors(raw, cfg.features)
        if errors:
            for error in errors:
                self.log.error(error)
            return Outcome(Ending.SETUP_FAILED)
        parsed = parse_payload(raw)
        if isinstance(parsed, list):
            self.log.error("Task payload is malformed:\n" + json.dumps(parsed, indent=2))
            return Outcome(Ending.MALFORMED)
        self.payload = payload = parsed
        pool = cfg.task_queue_id
        errors = scope_errors(
            payload, task.get("scopes", []), pool, allow_privileged=cfg.allow_privileged
        )
        if errors:
            self.log.error("Docker configuration could not be created: " + "; ".join(errors))
            return Outcome(Ending.SETUP_FAILED)
        try:
            image = await self._until_stopped(self._image(payload))
        except ImageError as exc:
            self.log.error(f"Pulling docker image has failed. {exc}")
            return Outcome(Ending.SETUP_FAILED)
        if image is None:
            return self._stopped_outcome()
        if payload.cache and self.deps.purges is not None:
            await self._honour_purge_requests(self.deps.purges)
        spec = self._container_spec(payload, image)
        try:
            self.container = await self.deps.docker.create(spec)
            if self._stop_reason is not None:
                return self._stopped_outcome()
            self.log.info("=== Task Starting ===")
            await self.deps.docker.start(self.container)
        except ContainerError as exc:
            self.log.error(str(exc))
            return Outcome(Ending.SETUP_FAILED)
        self.timeline.container_started = time.monotonic()
        return await self._wait_for_exit(payload.maxRunTime)

    def _stopped_outcome(self) -> Outcome:
        assert self._stop_reason is not None
        return Outcome(self._stop_reason)

    async def _until_stopped(self, step: Any) -> Any:
        """Await `step` unless the run is stopped first (then None)."""
        work = asyncio.ensure_future(step)
        stopped = asyncio.create_task(self._stopped.wait())
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if work.done():
            return work.result()
        work.cancel()
        return None

    async def _wait_for_exit(self, max_run_time_s: int) -> Outcome:
        docker = self.deps.docker
        exited = asyncio.create_task(self._exit_code())
        stopped = asyncio.create_task(self._stopped.wait())
        done, _ = await asyncio.wait(
            {exited, stopped}, timeout=max_run_time_s, return_when=asyncio.FIRST_COMPLETED
        )
        stopped.cancel()
        if exited in done:
            self.timeline.container_exited = time.monotonic()
            self.log.info("=== Task Finished ===")
            return Outcome(Ending.EXITED, exit_code=exited.result())
        if stopped in done:
            ending = self._stop_reason or Ending.INTERNAL_ERROR
        else:
            ending = Ending.TIMED_OUT
            self.log.info(f"Task timeout after {max_run_time_s} seconds. Force killing container.")
        await docker.kill(self.container)
        await asyncio.wait({exited}, timeout=10)  # let the output drain
        self.timeline.container_exited = time.monotonic()
        if ending is Ending.SHUTDOWN:
            self.log.error("The worker is shutting down: the task was stopped.")
        self.log.info("=== Task Finished ===")
        return Outcome(ending)

    async def _exit_code(self) -> int:
        await self.deps.docker.stream_output(self.container, self.log.write)
        return await self.deps.docker.wait(self.container)

    # the steps

    def _write_header(self) -> None:
        cfg = self.deps.config
        self.log.info(f"Task ID: {self.claim.task_id}")
        self.log.info(f"Worker ID: {cfg.worker_id}")
        self.log.info(f"Worker Group: {cfg.worker_group}")
        self.log.info(f"Worker Node Type: {cfg.worker_node_type}")
        self.log.info(f"Worker Pool: {cfg.task_queue_id}")
        self.log.info(f"Worker Version: {WORKER_VERSION}")
        self.log.info(f"Public IP: {cfg.live_log_public_hostname}")
        self.log.info(f"Hostname: {platform.node()}")

    def _log_names(self, raw: Any) -> tuple[str, bool]:
        """The live log's name and whether it is used, read leniently from the raw payload
        (a malformed payload still gets its log, which says why)."""
        raw = raw if isinstance(raw, dict) else {}
        name = raw.get("log") if isinstance(raw.get("log"), str) and raw.get("log") else None
        features = raw.get("features") if isinstance(raw.get("features"), dict) else {}
        wanted = features.get("localLiveLog", True) is not False
        return name or DEFAULT_LOG_NAME, wanted and "localLiveLog" in self.deps.config.features

    async def _publish_live_log(self, raw: Any) -> None:
        name, used = self._log_names(raw)
        if not used:
            return
        self._live_url = self.deps.live_logs.publish(self.log)
        body = {
            "storageType": "reference",
            "url": self._live_url,
            "contentType": CONTENT_TYPE,
            "expires": self.claim.task["expires"],
        }
        try:
            await self.claim.queue.createArtifact(
                self.claim.task_id, str(self.claim.run_id), name, body
            )
        except Exception as exc:
            log.warning("live log artifact not created", extra={**self.ids, "error": repr(exc)})

    async def _image(self, payload: Payload) -> str:
        cfg = self.deps.config
        if isinstance(payload.image, TaskImage):
            return await self._task_image(payload.image)
        name = payload.image_name()
        assert name is not None  # indexed-image was refused as malformed
        self.log.info(f"Using image {name}")
        return await self.deps.docker.ensure_image(
            name, attempts=cfg.pull_attempts, backoff_s=cfg.pull_backoff_s
        )

    async def _task_image(self, image: TaskImage) -> str:
        if not image.path.endswith(".tar"):
            raise ImageError(f"image artifact {image.path} must be a .tar (lz4/zst unsupported)")
        self.log.info(f"Loading image from task {image.taskId} artifact {image.path}")
        url = self.claim.queue.buildSignedUrl("getLatestArtifact", image.taskId, image.path)
        target = self._work / "image.tar"
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

    async def _honour_purge_requests(self, purges: PurgeChecker) -> None:
        try:
            for name in await purges.check():
                self.log.info(f'cache "{name}" was purged: starting it empty')
        except Exception as exc:  # as generic-worker: warn, keep the caches, run the task
            self.log.info(f"[warning] could not ask purge-cache for purge requests: {exc}")

    def _container_spec(self, payload: Payload, image: str) -> ContainerSpec:
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
        env = container_env(
            payload.env, worker_variables(identity, self.claim.task_id, self.claim.run_id)
        )
        binds = {}
        for name, mount in payload.cache.items():
            instance = self.deps.caches.acquire(name)
            self._caches.append(instance)
            binds[str(instance.path)] = {"bind": mount, "mode": "rw"}
            self.log.info(f'using cache "{name}" -> {instance.path}')
        return ContainerSpec(
            image=image,
            command=payload.command,
            env=as_docker_list(env),
            labels={
                WORKER_LABEL: cfg.worker_key,
                RUN_LABEL: f"{self.claim.task_id}/{self.claim.run_id}",
            },
            binds=binds,
            privileged=payload.capabilities.privileged,
        )

    # after the container

    async def _finish(self, outcome: Outcome) -> None:
        payload, cfg = self.payload, self.deps.config
        if (
            results.uploads_artifacts(outcome.ending)
            and payload is not None
            and payload.artifacts
            and payload.uses("artifacts", cfg.features)
        ):
            failed = await self._upload_artifacts(payload)
            outcome = replace(outcome, artifacts_failed=failed)
        report = results.decide(outcome, payload.onExitStatus if payload else None)
        self._purge_caches = report.purge_caches
        if results.uploads_logs(outcome.ending):
            seconds = time.monotonic() - self.timeline.claimed
            verdict = "Successful" if report.successful else "Unsuccessful"
            self.log.info(
                f"{verdict} task run with exit code: {results.footer_exit_code(outcome)} "
                f"completed in {seconds:.3f} seconds"
            )
            self.log.close()
            if self._live_url is not None:
                await self._upload_logs()
        self.log.close()
        self._stop_supervisors()
        self.report = report
        if report.kind is not None:
            await self._report(report)
        self.timeline.resolved = time.monotonic()
        log.info(
            "run finished",
            extra={
                **self.ids,
                "ending": outcome.ending.value,
                "exitCode": outcome.exit_code,
                "report": report.kind,
                "reason": report.reason,
            },
        )

    def _expires(self, explicit: Any) -> str:
        return format_ts(explicit) if explicit is not None else self.claim.task["expires"]

    async def _upload_artifacts(self, payload: Payload) -> bool:
        """Upload every declared artifact (in parallel); True when any upload failed."""
        outcomes = await asyncio.gather(
            *(self._upload_one(name, spec) for name, spec in payload.artifacts.items()),
            return_exceptions=True,
        )
        failed = False
        for name, outcome in zip(payload.artifacts, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failed = True
                self.log.error(f"Uploading artifact {name} failed: {outcome}")
                log.warning(
                    "artifact upload failed",
                    extra={**self.ids, "artifact": name, "error": str(outcome)},
                )
        return failed

    async def _upload_one(self, name: str, spec: Any) -> None:
        docker = self.deps.docker
        items = await docker.run_blocking(
            collect,
            docker.client,
            self.container.id,
            name,
            spec,
            self._expires(spec.expires),
            self._work,
        )
        for item in items:
            if isinstance(item, ErrorArtifact):
                self.log.info(f"{item.message} ({item.reason})")
                await self.deps.uploader.error(
                    self.claim.queue, self.claim.task_id, self.claim.run_id, item
                )
            else:
                assert isinstance(item, FileArtifact)
                await self.deps.uploader.upload(
                    self.claim.queue, self.claim.task_id, self.claim.run_id, item
                )
                item.path.unlink(missing_ok=True)

    async def _upload_logs(self) -> None:
        live_name, _ = self._log_names(self.claim.task.get("payload"))
        backing = backing_log_name(live_name)
        gz = self._work / "live_backing.log.gz"
        expires = self.claim.task["expires"]
        try:
            size = await self.deps.docker.run_blocking(self.log.gzip_to, gz)
            item = FileArtifact(backing, gz, CONTENT_TYPE, "gzip", expires, size)
            await self.deps.uploader.upload(
                self.claim.queue, self.claim.task_id, self.claim.run_id, item
            )
            link = {
                "storageType": "link",
                "artifact": backing,
                "contentType": CONTENT_TYPE,
                "expires": expires,
            }
            await self.claim.queue.createArtifact(
                self.claim.task_id, str(self.claim.run_id), live_name, link
            )
        except (UploadError, TaskclusterRestFailure, aiohttp.ClientError, OSError) as exc:
            log.warning("log upload failed", extra={**self.ids, "error": str(exc)})

    async def _report(self, report: Report) -> None:
        queue, task_id, run_id = self.claim.queue, self.claim.task_id, str(self.claim.run_id)
        try:
            if report.kind == "completed":
                await queue.reportCompleted(task_id, run_id)
            elif report.kind == "failed":
                await queue.reportFailed(task_id, run_id)
            else:
                await queue.reportException(task_id, run_id, {"reason": report.reason})
        except TaskclusterRestFailure as exc:
            if exc.status_code == 409:
                log.info("run was already resolved", extra={**self.ids, "error": str(exc)})
            else:  # the claim will expire and the queue retry the task
                log.error("report failed", extra={**self.ids, "error": str(exc)})
        except Exception as exc:
            log.error("report failed", extra={**self.ids, "error": repr(exc)})

    def _stop_supervisors(self) -> None:
        for supervisor in self._supervisors:
            supervisor.cancel()

    async def _cleanup(self) -> None:
        if self.container is not None:
            await self.deps.docker.remove(self.container.id)
        for instance in self._caches:
            self.deps.caches.release(instance, purge=self._purge_caches)
        if self._live_url is not None:
            self.deps.live_logs.withdraw(self._live_url)
        self.log.close()
        shutil.rmtree(self._work, ignore_errors=True)
