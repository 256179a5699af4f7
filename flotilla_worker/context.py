"""What a task handler receives (`TaskContext`) and the exceptions it may raise to choose
its resolution. A handler is `async def handler(task: TaskContext) -> int | None`:

- return `None` (or `0`): the run is `completed`;
- return a non-zero `int` (an exit code): `failed`, or `exception/intermittent-task` when
  the code is in `task.on_exit_status.retry` (set it from the payload's `onExitStatus`);
- raise `TaskFailed`: `failed` (the message goes to the task log);
- raise `MalformedPayload`: `exception/malformed-payload`;
- raise `TaskException(reason)`: `exception/<reason>` (`resource-unavailable`,
  `intermittent-task`, `internal-error`, ...);
- any other exception: `failed`, with its traceback in the task log.

When the run must stop early (cancelled, claim lost, `maxRunTime`, worker shutdown), the
kit sets `task.cancelled` and then cancels the handler's coroutine (`CancelledError` at
its current `await`): stop child processes in `finally`. Its resolution is then the
kit's (nothing reported / `failed` / `exception/worker-shutdown`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flotilla_worker.artifacts import ErrorArtifact, FileArtifact, content_type_for
from flotilla_worker.livelog import TaskLog
from flotilla_worker.results import Ending, ExitRules, Report
from flotilla_worker.settings import WorkerSettings


class TaskFailed(Exception):
    """The task failed (its own fault): reported `failed`."""


class MalformedPayload(Exception):
    """The payload cannot be run: reported `exception/malformed-payload`."""


class TaskException(Exception):
    """Reported `exception` with `reason` (one of the queue's reportException reasons)."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


@dataclass
class Timeline:
    """Monotonic-clock seconds of a run's milestones (benchmarks read them)."""

    claimed: float
    started: float | None = None  # the work began (the handler may move it later)
    finished: float | None = None
    resolved: float | None = None


Cleanup = Callable[[Report | None], Awaitable[None] | None]


@dataclass
class TaskContext:
    """One claimed run, as the handler sees it."""

    task_id: str
    run_id: int
    task: dict[str, Any]  # the task definition (payload, scopes, expires, ...)
    log: TaskLog  # info()/error()/line()/write(): streamed to the live log
    output_dir: Path  # files left here are uploaded as artifacts, named by relative path
    work_dir: Path  # scratch space of this run, deleted afterwards
    cancelled: asyncio.Event  # set when the run must stop (see the module's note)
    settings: WorkerSettings
    timeline: Timeline
    max_run_time_s: float | None
    _claim: Any = field(repr=False)
    on_exit_status: ExitRules | None = None  # retry / purgeCaches exit codes
    stop_reason: Ending | None = None
    artifacts: list[FileArtifact | ErrorArtifact] = field(default_factory=list)
    cleanups: list[Cleanup] = field(default_factory=list)

    @property
    def payload(self) -> Any:
        return self.task.get("payload")

    @property
    def queue(self) -> Any:
        """A `taskcluster.aio.Queue` with the run's current (reclaimed) credentials."""
        return self._claim.queue

    @property
    def credentials(self) -> dict[str, str]:
        """The run's current temporary credentials (scoped to the task's scopes)."""
        return dict(self._claim.credentials)

    def add_artifact(
        self,
        name: str,
        path: Path,
        *,
        content_type: str | None = None,
        expires: str | None = None,
        encoding: str | None = None,
    ) -> None:
        """Upload `path` as artifact `name` once the handler returns (not after a stop)."""
        self.artifacts.append(
            FileArtifact(
                name,
                path,
                content_type or content_type_for(name),
                expires or self.task["expires"],
                encoding,
            )
        )

    def add_error_artifact(
        self, name: str, reason: str, message: str, *, expires: str | None = None
    ) -> None:
        self.artifacts.append(ErrorArtifact(name, reason, message, expires or self.task["expires"]))

    def add_cleanup(self, cleanup: Cleanup) -> None:
        """Run `cleanup(report)` after the run was reported, however it ended."""
        self.cleanups.append(cleanup)
