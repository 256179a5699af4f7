"""The resolution table (reference §2.5) as the worker applies it."""

from __future__ import annotations

import pytest

from flotilla_worker.results import (
    Ending,
    Outcome,
    Report,
    decide,
    footer_exit_code,
    uploads_artifacts,
    uploads_logs,
)
from services.docker_worker.payload import OnExitStatus

RULES = OnExitStatus(retry=[36, 37], purgeCaches=[37, 5])


@pytest.mark.parametrize(
    ("outcome", "on_exit", "report"),
    [
        (Outcome(Ending.EXITED, 0), None, Report("completed")),
        (Outcome(Ending.EXITED, 0), RULES, Report("completed")),
        (Outcome(Ending.EXITED, 1), None, Report("failed")),
        (Outcome(Ending.EXITED, 1), RULES, Report("failed")),
        (Outcome(Ending.EXITED, 36), RULES, Report("exception", "intermittent-task")),
        (Outcome(Ending.EXITED, 36), None, Report("failed")),
        (
            Outcome(Ending.EXITED, 37),
            RULES,
            Report("exception", "intermittent-task", purge_caches=True),
        ),
        (Outcome(Ending.EXITED, 5), RULES, Report("failed", purge_caches=True)),
        (
            Outcome(Ending.EXITED, 0, artifacts_failed=True),
            None,
            Report("exception", "intermittent-task"),
        ),
        (Outcome(Ending.EXITED, 2, artifacts_failed=True), None, Report("failed")),
        (Outcome(Ending.MALFORMED), None, Report("exception", "malformed-payload")),
        (Outcome(Ending.SETUP_FAILED), RULES, Report("failed")),
        (Outcome(Ending.TIMED_OUT), RULES, Report("failed")),
        (Outcome(Ending.SHUTDOWN), None, Report("exception", "worker-shutdown")),
        (Outcome(Ending.INTERNAL_ERROR), None, Report("exception", "internal-error")),
        (Outcome(Ending.CANCELLED), RULES, Report(None)),
    ],
)
def test_decide(outcome: Outcome, on_exit: OnExitStatus | None, report: Report) -> None:
    assert decide(outcome, on_exit) == report


def test_only_a_container_that_exited_by_itself_uploads_artifacts() -> None:
    assert [e for e in Ending if uploads_artifacts(e)] == [Ending.EXITED]


def test_every_run_uploads_its_log_a_cancelled_one_too() -> None:
    assert [e for e in Ending if not uploads_logs(e)] == []


def test_the_footer_shows_minus_one_unless_the_container_exited() -> None:
    assert footer_exit_code(Outcome(Ending.EXITED, 3)) == 3
    assert footer_exit_code(Outcome(Ending.TIMED_OUT)) == -1
    assert footer_exit_code(Outcome(Ending.SHUTDOWN)) == -1
