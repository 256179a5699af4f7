"""One claimed run, start to finish:

header → live log → handler (under maxRunTime; a stop — cancel, claim lost, shutdown —
cancels it) → artifacts → footer → backing log and live-log link → report → clean-ups.

The steps before the report decide an `Outcome`; `results.decide` turns it into the
report. Clean-up always runs, shielded from cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import platform
import shutil
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from taskcluster.exceptions import TaskclusterRestFailure

from flotilla_worker import results
from flotilla_worker.artifacts import ErrorArtifact, FileArtifact, Uploader, UploadError
from flotilla_worker.claim import QueueFactory, RunClaim, probe_loop, reclaim_loop
from flotilla_worker.context import (
    MalformedPayload,
    TaskContext,
    TaskException,
    TaskFailed,
    Timeline,
)
from flotilla_worker.livelog import CONTENT_TYPE, LiveLogServer, TaskLog
from flotilla_worker.results import Ending, Outcome, Report
from flotilla_worker.settings import WorkerSettings

log = logging.getLogger(__name__)

DEFAULT_LOG_NAME = "public/logs/live.log"
CANCEL_WAIT_S = 10.0  # how long a cancelled handler gets to run its `finally`

Handler = Callable[[TaskContext], Awaitable[int | None]]
LogNamer = Callable[[dict[str, Any]], str | None]


def default_log_name(task: dict[str, Any]) -> str | None:
    """The live log's name: generic-worker's `payload.logs.live`, docker-worker's
    `payload.log`, else `public/logs/live.log`. Read leniently (a malformed payload still
    gets a log saying why)."""
    payload = task.get("payload") if isinstance(task.get("payload"), dict) else {}
    logs = payload.get("logs") if isinstance(payload.get("logs"), dict) else {}
    for candidate in (logs.get("live"), payload.get("log")):
        if isinstance(candidate, str) and candidate:
            return candidate
    return DEFAULT_LOG_NAME


def backing_log_name(live_name: str) -> str:
    """`_backing` before the extension: `a/b.log.txt` → `a/b.log_backing.txt`."""
    head, sep, last = live_name.rpartition("/")
    stem, dot, ext = last.rpartition(".")
    last = f"{stem}_backing.{ext}" if dot and stem else f"{last}_backing"
    return f"{head}{sep}{last}"


def max_run_time_of(task: dict[str, Any], default: float | None) -> float | None:
    payload = task.get("payload")
    value = payload.get("maxRunTime") if isinstance(payload, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
        return float(value)
    return default


@dataclass(frozen=True)
class RunDeps:
    """What every run needs from the worker (built once, by `open_worker`)."""

    settings: WorkerSettings
    handler: Handler
    live_logs: LiveLogServer
    uploader: Uploader
    session: aiohttp.ClientSession
    queue_for: QueueFactory  # credentials → taskcluster.aio.Queue
    worker_queue: Any  # the worker's own client (claimWork, status probes)
    log_name: LogNamer = default_log_name
    stop_noun: str = "task"  # "Force killing <noun>." on maxRunTime


class TaskRun:
    def __init__(self, claim: dict[str, Any], deps: RunDeps) -> None:
        self.claim = RunClaim(claim, deps.queue_for)
        self.deps = deps
        self.report: Report | None = None
        self._stop_reason: Ending | None = None
        self._stopped = asyncio.Event()
        self._live_url: str | None = None
        self._supervisors: list[asyncio.Task[None]] = []
        self._work = Path(tempfile.mkdtemp(prefix="run-", dir=deps.settings.work_root))
        self.log = TaskLog(self._work / "live.log")
        output = self._work / "output"
        output.mkdir()
        self.context = TaskContext(
            task_id=self.claim.task_id,
            run_id=self.claim.run_id,
            task=self.claim.task,
            log=self.log,
            output_dir=output,
            work_dir=self._work,
            cancelled=asyncio.Event(),
            settings=deps.settings,
            timeline=Timeline(claimed=time.monotonic()),
            max_run_time_s=max_run_time_of(self.claim.task, deps.settings.default_max_run_time_s),
            _claim=self.claim,
        )

    @property
    def ids(self) -> dict[str, Any]:
        return self.claim.ids

    @property
    def timeline(self) -> Timeline:
        return self.context.timeline

    def stop(self, ending: Ending, why: str = "") -> None:
        """Ask the run to end now (cancel, shutdown, lost claim); the first reason wins."""
        if self._stop_reason is None:
            self._stop_reason = ending
            self.context.stop_reason = ending
            self._stopped.set()
            log.info("stopping run", extra={**self.ids, "ending": ending.value, "why": why})

    async def run(self) -> Report | None:
        settings = self.deps.settings
        self._supervisors = [
            asyncio.create_task(reclaim_loop(self.claim, settings.reclaim_divisor, self.stop)),
            asyncio.create_task(
                probe_loop(
                    self.claim, self.deps.worker_queue, settings.status_probe_interval_s, self.stop
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
        self._write_header()
        await self._publish_live_log()
        if self._stop_reason is not None:  # stopped while claiming / publishing the log
            return self._stopped_outcome(self._stop_reason)
        self.log.info("=== Task Starting ===")
        self.timeline.started = time.monotonic()
        work = asyncio.create_task(self._call_handler())
        stopped = asyncio.create_task(self._stopped.wait())
        limit = self.context.max_run_time_s
        done, _ = await asyncio.wait(
            {work, stopped}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
        )
        stopped.cancel()
        if work in done:
            outcome = work.result()
        else:
            if stopped in done:
                ending = self._stop_reason or Ending.INTERNAL_ERROR
            else:
                ending = Ending.TIMED_OUT
                self.stop(ending, "maxRunTime")
                self.log.info(
                    f"Task timeout after {limit:g} seconds. Force killing {self.deps.stop_noun}."
                )
            self.context.cancelled.set()
            work.cancel()
            await asyncio.wait({work}, timeout=CANCEL_WAIT_S)
            outcome = self._stopped_outcome(ending)
        self.timeline.finished = time.monotonic()
        self.log.info("=== Task Finished ===")
        return outcome

    def _stopped_outcome(self, ending: Ending) -> Outcome:
        if ending is Ending.SHUTDOWN:
            self.log.error("The worker is shutting down: the task was stopped.")
        elif ending is Ending.CANCELLED:
            self.log.error("The run was cancelled (or its claim lost): the task was stopped.")
        return Outcome(ending)

    async def _call_handler(self) -> Outcome:
        try:
            result = await self.deps.handler(self.context)
        except TaskFailed as exc:
            self.log.error(str(exc))
            return Outcome(Ending.EXITED, exit_code=None)
        except MalformedPayload as exc:
            self.log.error(f"Task payload is malformed: {exc}")
            return Outcome(Ending.MALFORMED)
        except TaskException as exc:
            self.log.error(str(exc))
            return Outcome(Ending.EXCEPTION, reason=exc.reason)
        except Exception as exc:
            self.log.error(
                "The task's handler raised:\n" + "".join(traceback.format_exception(exc))
            )
            return Outcome(Ending.EXITED, exit_code=None)
        return Outcome(Ending.EXITED, exit_code=int(result or 0))

    def _write_header(self) -> None:
        settings = self.deps.settings
        self.log.info(f"Task ID: {self.claim.task_id}")
        self.log.info(f"Worker ID: {settings.worker_id}")
        self.log.info(f"Worker Group: {settings.worker_group}")
        self.log.info(f"Worker Node Type: {settings.worker_node_type}")
        self.log.info(f"Worker Pool: {settings.task_queue_id}")
        self.log.info(f"Worker Version: {settings.worker_version}")
        self.log.info(f"Public IP: {settings.live_log_public_hostname}")
        self.log.info(f"Hostname: {platform.node()}")

    def _log_name(self) -> str | None:
        if not self.deps.settings.live_log:
            return None
        return self.deps.log_name(self.claim.task)

    async def _publish_live_log(self) -> None:
        name = self._log_name()
        if name is None:
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

    # after the work

    async def _finish(self, outcome: Outcome) -> None:
        if results.uploads_artifacts(outcome.ending):
            failed = await self._upload_artifacts()
            outcome = replace(outcome, artifacts_failed=failed)
        report = results.decide(outcome, self.context.on_exit_status)
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

    def _output_artifacts(self) -> list[FileArtifact]:
        found = []
        for path in sorted(self.context.output_dir.rglob("*")):
            if path.is_file() and not path.is_symlink():
                name = path.relative_to(self.context.output_dir).as_posix()
                self.context.add_artifact(name, path)
                found.append(self.context.artifacts[-1])
        return [a for a in found if isinstance(a, FileArtifact)]

    async def _upload_artifacts(self) -> bool:
        """Upload the run's artifacts (4 at a time); True when any upload failed."""
        self._output_artifacts()
        items = list(self.context.artifacts)
        if not items:
            return False
        limit = asyncio.Semaphore(4)

        async def one(item: FileArtifact | ErrorArtifact) -> None:
            async with limit:
                await self._upload_one(item)

        outcomes = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
        failed = False
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failed = True
                self.log.error(f"Uploading artifact {item.name} failed: {outcome}")
                log.warning(
                    "artifact upload failed",
                    extra={**self.ids, "artifact": item.name, "error": str(outcome)},
                )
        return failed

    async def _upload_one(self, item: FileArtifact | ErrorArtifact) -> None:
        queue, task_id, run_id = self.claim.queue, self.claim.task_id, self.claim.run_id
        if isinstance(item, ErrorArtifact):
            self.log.info(f"{item.message} ({item.reason})")
            await self.deps.uploader.error(queue, task_id, run_id, item)
        else:
            await self.deps.uploader.upload(queue, task_id, run_id, item)

    async def _upload_logs(self) -> None:
        live_name = self._log_name()
        assert live_name is not None
        backing = backing_log_name(live_name)
        gz = self._work / "live_backing.log.gz"
        expires = self.claim.task["expires"]
        try:
            await asyncio.to_thread(self.log.gzip_to, gz)
            item = FileArtifact(backing, gz, CONTENT_TYPE, expires, "gzip", precompressed=True)
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
        for cleanup in self.context.cleanups:
            try:
                result = cleanup(self.report)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("a run clean-up failed", extra=self.ids)
        if self._live_url is not None:
            self.deps.live_logs.withdraw(self._live_url)
        self.log.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(shutil.rmtree, self._work, True)
