"""What a finished run reports: upstream's resolution table (reference §2.5) as a pure
function of how the run ended. No I/O; `run` acts on the `Report`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Ending(enum.Enum):
    EXITED = "exited"  # the task's work ran to its end (exit code, or None: it failed)
    MALFORMED = "malformed"  # the payload failed the schema
    SETUP_FAILED = "setup-failed"  # the work could not even start (reported failed)
    TIMED_OUT = "timed-out"  # maxRunTime: stopped
    CANCELLED = "cancelled"  # the run is no longer ours (cancelled, expired, 409 on reclaim)
    SHUTDOWN = "shutdown"  # the worker is stopping
    INTERNAL_ERROR = "internal-error"  # reclaim failed with something other than 409
    EXCEPTION = "exception"  # the handler asked for an exception with its own reason


class ExitRules(Protocol):
    """`payload.onExitStatus` of docker-worker and generic-worker alike."""

    retry: Sequence[int]
    purgeCaches: Sequence[int]


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    exit_code: int | None = None  # set for EXITED when the work gave one
    artifacts_failed: bool = False  # an upload still failed after its retries
    reason: str | None = None  # for EXCEPTION: the reportException reason


@dataclass(frozen=True)
class Report:
    kind: str | None  # "completed" | "failed" | "exception" | None (report nothing)
    reason: str | None = None  # for "exception"
    purge_caches: bool = False

    @property
    def successful(self) -> bool:
        return self.kind == "completed"


NOTHING = Report(None)
COMPLETED = Report("completed")
FAILED = Report("failed")


def uploads_artifacts(ending: Ending) -> bool:
    """Declared artifacts are uploaded only after the work ended by itself."""
    return ending is Ending.EXITED


def uploads_logs(ending: Ending) -> bool:
    """The backing log goes up for every run, a cancelled one too: the queue accepts
    artifacts for 25 minutes after an exception, and a cancelled task's log is exactly
    what its owner wants to read (upstream uploads nothing after a cancel)."""
    return True


def footer_exit_code(outcome: Outcome) -> int:
    if outcome.ending is Ending.EXITED and outcome.exit_code is not None:
        return outcome.exit_code
    return -1


def decide(outcome: Outcome, on_exit_status: ExitRules | None) -> Report:
    ending = outcome.ending
    if ending is Ending.CANCELLED:
        return NOTHING
    if ending is Ending.SHUTDOWN:
        return Report("exception", "worker-shutdown")
    if ending is Ending.MALFORMED:
        return Report("exception", "malformed-payload")
    if ending is Ending.INTERNAL_ERROR:
        return Report("exception", "internal-error")
    if ending is Ending.EXCEPTION:
        return Report("exception", outcome.reason or "internal-error")
    if ending in (Ending.SETUP_FAILED, Ending.TIMED_OUT) or outcome.exit_code is None:
        return FAILED
    code = outcome.exit_code
    if code == 0:
        # beyond upstream (which reports failed): a lost upload is worth another run
        return Report("exception", "intermittent-task") if outcome.artifacts_failed else COMPLETED
    purge = on_exit_status is not None and code in on_exit_status.purgeCaches
    if on_exit_status is not None and code in on_exit_status.retry:
        return Report("exception", "intermittent-task", purge_caches=purge)
    return Report("failed", purge_caches=purge)
