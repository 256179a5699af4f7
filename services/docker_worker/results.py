"""What a finished run reports: upstream's resolution table (reference §2.5) as a pure
function of how the run ended. No I/O; `task_run` acts on the `Report`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from services.docker_worker.payload import OnExitStatus


class Ending(enum.Enum):
    EXITED = "exited"  # the container ran and exited by itself
    MALFORMED = "malformed"  # the payload failed the schema
    SETUP_FAILED = "setup-failed"  # feature, scope, image or container create/start error
    TIMED_OUT = "timed-out"  # maxRunTime: killed
    CANCELLED = "cancelled"  # the run is no longer ours (cancelled, expired, 409 on reclaim)
    SHUTDOWN = "shutdown"  # the worker is stopping
    INTERNAL_ERROR = "internal-error"  # reclaim failed with something other than 409


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    exit_code: int | None = None  # set for EXITED
    artifacts_failed: bool = False  # an upload still failed after its retries


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
    """Declared artifacts are uploaded only after the container exited by itself."""
    return ending is Ending.EXITED


def uploads_logs(ending: Ending) -> bool:
    """The backing log goes up for every run the worker still owns (not after a cancel)."""
    return ending is not Ending.CANCELLED


def footer_exit_code(outcome: Outcome) -> int:
    if outcome.ending is Ending.EXITED and outcome.exit_code is not None:
        return outcome.exit_code
    return -1


def decide(outcome: Outcome, on_exit_status: OnExitStatus | None) -> Report:
    ending = outcome.ending
    if ending is Ending.CANCELLED:
        return NOTHING
    if ending is Ending.SHUTDOWN:
        return Report("exception", "worker-shutdown")
    if ending is Ending.MALFORMED:
        return Report("exception", "malformed-payload")
    if ending is Ending.INTERNAL_ERROR:
        return Report("exception", "internal-error")
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
