"""Task status and runs: derived state, omitted optionals, TS dates, JSON round trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.models import (
    ExceptionReason,
    ReasonCreated,
    ReasonResolved,
    Run,
    RunState,
    TaskDefinition,
    TaskState,
    TaskStatus,
    describe_validation_error,
    status_for,
)
from shared.timeutil import format_ts

NOW = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
TASK_ID = "fN1SbArXTPSVFNUvaOlinQ"

TASK = TaskDefinition.model_validate(
    {
        "provisionerId": "prov",
        "workerType": "wt",
        "created": format_ts(NOW),
        "deadline": format_ts(NOW + timedelta(days=1)),
        "priority": "high",
        "retries": 3,
        "payload": {},
        "metadata": {"name": "n", "description": "d", "owner": "o", "source": "https://x"},
    }
)


def pending(run_id: int = 0, reason: str = "scheduled") -> Run:
    return Run(runId=run_id, state="pending", reasonCreated=reason, scheduled=NOW)


def running(run_id: int = 0) -> Run:
    return Run(
        runId=run_id,
        state="running",
        reasonCreated="scheduled",
        scheduled=NOW,
        workerGroup="us-east-1",
        workerId="i-123",
        takenUntil=NOW + timedelta(minutes=20),
        started=NOW + timedelta(seconds=1),
    )


def resolved(run_id: int, state: str, reason: str, created: str = "scheduled") -> Run:
    return Run(
        runId=run_id,
        state=state,
        reasonCreated=created,
        reasonResolved=reason,
        scheduled=NOW,
        resolved=NOW + timedelta(minutes=1),
    )


def test_a_task_without_runs_is_unscheduled() -> None:
    status = status_for(TASK_ID, TASK)
    assert status.state == TaskState.UNSCHEDULED
    assert status.to_output() == {
        "taskId": TASK_ID,
        "provisionerId": "prov",
        "workerType": "wt",
        "taskQueueId": "prov/wt",
        "schedulerId": "-",
        "projectId": "none",
        "taskGroupId": TASK_ID,
        "priority": "high",
        "deadline": "2025-01-03T03:04:05.678Z",
        "expires": "2026-01-03T03:04:05.678Z",
        "retriesLeft": 3,
        "state": "unscheduled",
        "runs": [],
    }


@pytest.mark.parametrize(
    ("runs", "state"),
    [
        ([pending()], "pending"),
        ([running()], "running"),
        ([resolved(0, "completed", "completed")], "completed"),
        ([resolved(0, "failed", "failed")], "failed"),
        ([resolved(0, "exception", "canceled", created="exception")], "exception"),
        ([resolved(0, "exception", "claim-expired"), pending(1, "retry")], "pending"),
        (
            [resolved(0, "failed", "failed"), resolved(1, "completed", "completed", "rerun")],
            "completed",
        ),
    ],
)
def test_state_is_the_last_runs_state(runs: list[Run], state: str) -> None:
    status = status_for(TASK_ID, TASK, runs)
    assert status.state == state
    assert status.to_output()["state"] == state


def test_pending_run_omits_unset_fields() -> None:
    assert pending().to_output() == {
        "runId": 0,
        "state": "pending",
        "reasonCreated": "scheduled",
        "scheduled": "2025-01-02T03:04:05.678Z",
    }
    assert pending().model_dump() == {
        "runId": 0,
        "state": "pending",
        "reasonCreated": "scheduled",
        "scheduled": NOW,
    }
    assert "null" not in pending().model_dump_json()


def test_running_run_shows_claim_fields_as_ts() -> None:
    assert running().to_output() == {
        "runId": 0,
        "state": "running",
        "reasonCreated": "scheduled",
        "workerGroup": "us-east-1",
        "workerId": "i-123",
        "takenUntil": "2025-01-02T03:24:05.678Z",
        "scheduled": "2025-01-02T03:04:05.678Z",
        "started": "2025-01-02T03:04:06.678Z",
    }


def test_status_output_has_no_nulls_and_only_ts_dates() -> None:
    runs = [resolved(0, "exception", "worker-shutdown"), running(1)]
    output = status_for(TASK_ID, TASK, runs, retries_left=2).to_output()
    text = json.dumps(output)
    assert "null" not in text
    assert output["retriesLeft"] == 2
    assert output["runs"][0] == {
        "runId": 0,
        "state": "exception",
        "reasonCreated": "scheduled",
        "reasonResolved": "worker-shutdown",
        "scheduled": "2025-01-02T03:04:05.678Z",
        "resolved": "2025-01-02T03:05:05.678Z",
    }
    assert list(output)[-2:] == ["state", "runs"]


def test_dumps_hold_plain_strings_for_enums() -> None:
    run = Run(runId=0, state=RunState.PENDING, reasonCreated=ReasonCreated.RERUN, scheduled=NOW)
    dumped = run.model_dump()
    assert type(dumped["state"]) is str and type(dumped["reasonCreated"]) is str
    assert run.state == RunState.PENDING == "pending"


def test_status_round_trips_through_json() -> None:
    status = status_for(
        TASK_ID, TASK, [resolved(0, "exception", "intermittent-task"), running(1)], 2
    )
    text = json.dumps(status.to_output())
    again = TaskStatus.model_validate_json(text)
    assert again == status
    assert again.to_output() == status.to_output()
    assert TaskStatus.model_validate(json.loads(text)) == status


def test_status_loads_from_python_datetimes_as_mongodb_returns_them() -> None:
    document = status_for(TASK_ID, TASK, [running()]).model_dump()
    naive = {**document, "deadline": document["deadline"].replace(tzinfo=None)}
    assert TaskStatus.model_validate(naive).deadline == document["deadline"]


def test_status_input_state_must_agree_with_runs() -> None:
    output = status_for(TASK_ID, TASK, [pending()]).to_output()
    with pytest.raises(ValidationError) as caught:
        TaskStatus.model_validate({**output, "state": "running"})
    assert "state 'running' disagrees with the last run" in describe_validation_error(caught.value)


def test_run_ids_must_equal_positions() -> None:
    with pytest.raises(ValidationError, match="runIds equal positions"):
        status_for(TASK_ID, TASK, [pending(1)])


def test_only_the_last_run_may_be_open() -> None:
    with pytest.raises(ValidationError, match="only the last run"):
        status_for(TASK_ID, TASK, [running(0), pending(1)])


def test_unknown_keys_and_null_optionals_are_rejected() -> None:
    output = status_for(TASK_ID, TASK, [pending()]).to_output()
    with pytest.raises(ValidationError) as caught:
        TaskStatus.model_validate({**output, "extra": 1})
    assert describe_validation_error(caught.value) == "extra: is not allowed (unknown property)"
    bad_run = {**output["runs"][0], "color": "red"}
    with pytest.raises(ValidationError) as caught:
        TaskStatus.model_validate({**output, "runs": [bad_run]})
    assert describe_validation_error(caught.value) == (
        "runs[0].color: is not allowed (unknown property)"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("runId", 1001, "runId: must be <= 1000"),
        ("runId", -1, "runId: must be >= 0"),
        ("state", "unscheduled", "state: must be one of"),
        ("reasonCreated", "created", "reasonCreated: must be one of"),
        ("reasonResolved", "timeout", "reasonResolved: must be one of"),
        ("workerId", "a.b", "workerId: must match ^([a-zA-Z0-9-_]*)$"),
        ("workerGroup", "g" * 39, "workerGroup: must be at most 38 characters"),
        ("takenUntil", "tomorrow", "takenUntil: must be an ISO-8601 date-time"),
    ],
)
def test_bad_run_fields(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Run.model_validate({**pending().to_output(), field: value})
    assert describe_validation_error(caught.value).startswith(message)


def test_retries_left_range() -> None:
    output = status_for(TASK_ID, TASK).to_output()
    assert TaskStatus.model_validate({**output, "retriesLeft": 999}).retriesLeft == 999
    with pytest.raises(ValidationError):
        TaskStatus.model_validate({**output, "retriesLeft": 1000})


def test_enum_values() -> None:
    assert {s.value for s in RunState} == {"pending", "running", "completed", "failed", "exception"}
    assert {s.value for s in TaskState} == {s.value for s in RunState} | {"unscheduled"}
    assert {r.value for r in ReasonCreated} == {
        "scheduled",
        "retry",
        "task-retry",
        "rerun",
        "exception",
    }
    assert "superseded" in {r.value for r in ReasonResolved}
    assert {r.value for r in ExceptionReason} == {
        "worker-shutdown",
        "malformed-payload",
        "resource-unavailable",
        "internal-error",
        "intermittent-task",
    }
    assert {r.value for r in ExceptionReason} < {r.value for r in ReasonResolved}


def test_old_superseded_runs_still_load() -> None:
    run = resolved(0, "exception", "superseded")
    assert Run.model_validate_json(json.dumps(run.to_output())) == run


_ts = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(scheduled=_ts, started=st.none() | _ts, resolved_at=st.none() | _ts)
def test_run_timestamps_round_trip(
    scheduled: datetime, started: datetime | None, resolved_at: datetime | None
) -> None:
    run = Run(
        runId=0,
        state="completed",
        reasonCreated="scheduled",
        reasonResolved="completed",
        scheduled=scheduled,
        started=started,
        resolved=resolved_at,
    )
    output = run.to_output()
    assert output["scheduled"] == format_ts(scheduled)
    assert ("started" in output) == (started is not None)
    assert ("resolved" in output) == (resolved_at is not None)
    assert Run.model_validate_json(json.dumps(output)) == run
