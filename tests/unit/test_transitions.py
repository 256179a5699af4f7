"""The task state machine (reference §2.4, §3.3, §4): records, effects and messages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import errors, taskstore, transitions
from shared.events import Message
from shared.models import Run, TaskDefinition
from shared.timeutil import format_ts
from shared.transitions import (
    MAX_RUNS,
    ClaimEnded,
    Dequeue,
    Enqueue,
    Outcome,
    Reprioritize,
    TaskRecord,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
DEADLINE = NOW + timedelta(days=1)
PAST_DEADLINE = DEADLINE + timedelta(milliseconds=1)
TASK_ID = "Y7uVueNBRNC70h3XRmuOCQ"
GROUP_ID = "brGUfRMgQZGpYvdZvT7WSg"
CLAIM_TIMEOUT_S = 1200.0
WG, WID = "us-east-1", "i-123"
TAGS = {"kind": "build"}
ROUTES = ["index.project.ci.latest", "notify.email.a@b.c.on-failed"]
CC = ("route.index.project.ci.latest", "route.notify.email.a@b.c.on-failed")


def ts(value: datetime) -> str:
    return format_ts(value)


def definition(**overrides: Any) -> TaskDefinition:
    body: dict[str, Any] = {
        "provisionerId": "prov",
        "workerType": "wt",
        "schedulerId": "sched",
        "taskGroupId": GROUP_ID,
        "routes": ROUTES,
        "priority": "high",
        "retries": 2,
        "created": ts(NOW),
        "deadline": ts(DEADLINE),
        "payload": {},
        "metadata": {"name": "n", "description": "d", "owner": "o", "source": "https://x"},
        "tags": TAGS,
    }
    body.update(overrides)
    return TaskDefinition.model_validate(body)


def unscheduled(**overrides: Any) -> TaskRecord:
    return TaskRecord.new(TASK_ID, definition(**overrides))


def pending(**overrides: Any) -> TaskRecord:
    return transitions.schedule(unscheduled(**overrides), NOW).record


def claim(record: TaskRecord, run_id: int | None = None, **kw: Any) -> Outcome:
    args: dict[str, Any] = {
        "worker_group": WG,
        "worker_id": WID,
        "now": NOW,
        "claim_timeout_s": CLAIM_TIMEOUT_S,
    }
    args.update(kw)
    run_id = len(record.runs) - 1 if run_id is None else run_id
    return transitions.claim(record, run_id, **args)


def running(**overrides: Any) -> TaskRecord:
    return claim(pending(**overrides)).record


def resolve(record: TaskRecord, resolution: str, run_id: int | None = None) -> Outcome:
    run_id = len(record.runs) - 1 if run_id is None else run_id
    return transitions.resolve(record, run_id, resolution, now=LATER)


def resolved(resolution: str, **overrides: Any) -> TaskRecord:
    return resolve(running(**overrides), resolution).record


def messages(outcome: Outcome) -> list[Message]:
    return [e for e in outcome.effects if isinstance(e, Message)]


BOOKKEEPING = (
    transitions.ClaimStarted,
    transitions.ClaimExtended,
    transitions.ClaimEnded,
)


def kinds(outcome: Outcome) -> list[str]:
    """Each effect as a short label: the event name for messages, else the class name.
    The claimed-runs bookkeeping is left out here and tested on its own below."""
    return [
        e.event if isinstance(e, Message) else type(e).__name__
        for e in outcome.effects
        if not isinstance(e, BOOKKEEPING)
    ]


def key(run_id: object = "_", worker_group: str = "_", worker_id: str = "_") -> str:
    return f"primary.{TASK_ID}.{run_id}.{worker_group}.{worker_id}.prov.wt.sched.{GROUP_ID}._"


def resolved_run(run_id: int, state: str = "failed", reason: str | None = None) -> Run:
    return Run(
        runId=run_id,
        state=state,
        reasonCreated="scheduled" if run_id == 0 else "rerun",
        reasonResolved=reason or state,
        workerGroup=WG,
        workerId=WID,
        takenUntil=NOW,
        scheduled=NOW,
        started=NOW,
        resolved=NOW,
    )


def with_resolved_runs(count: int, retries: int = 2) -> TaskRecord:
    record = unscheduled(retries=retries)
    runs = tuple(resolved_run(i) for i in range(count))
    return replace(record, runs=runs, retries_left=0, ever_resolved=True)


# --- the table of transitions (§2.4) ----------------------------------------------------

Step = Callable[[TaskRecord], Outcome]
START: dict[str, Callable[[], TaskRecord]] = {
    "unscheduled": unscheduled,
    "pending": pending,
    "running": running,
    "completed": lambda: resolved("completed"),
    "failed": lambda: resolved("failed"),
    "exception": lambda: resolved("malformed-payload"),
}
ACTIONS: dict[str, Step] = {
    "defined": lambda r: transitions.defined(r, schedule=True, now=NOW),
    "schedule": lambda r: transitions.schedule(r, NOW),
    "rerun": lambda r: transitions.rerun(r, LATER),
    "cancel": lambda r: transitions.cancel(r, LATER),
    "deadline": lambda r: transitions.deadline_exceeded(r, PAST_DEADLINE),
    "claim": lambda r: claim(r),
    "completed": lambda r: resolve(r, "completed"),
    "failed": lambda r: resolve(r, "failed"),
    "worker-shutdown": lambda r: resolve(r, "worker-shutdown"),
    "intermittent-task": lambda r: resolve(r, "intermittent-task"),
    "malformed-payload": lambda r: resolve(r, "malformed-payload"),
    "resource-unavailable": lambda r: resolve(r, "resource-unavailable"),
    "internal-error": lambda r: resolve(r, "internal-error"),
    "claim-expired": lambda r: transitions.expire_claim(
        r, 0, NOW + timedelta(seconds=CLAIM_TIMEOUT_S), NOW + timedelta(seconds=CLAIM_TIMEOUT_S)
    ),
}

# start, action, task state after, [(state, reasonCreated, reasonResolved) per run]
TABLE = [
    ("unscheduled", "defined", "pending", [("pending", "scheduled", None)]),
    ("unscheduled", "schedule", "pending", [("pending", "scheduled", None)]),
    ("unscheduled", "rerun", "pending", [("pending", "rerun", None)]),
    ("unscheduled", "cancel", "exception", [("exception", "exception", "canceled")]),
    ("unscheduled", "deadline", "exception", [("exception", "exception", "deadline-exceeded")]),
    ("pending", "claim", "running", [("running", "scheduled", None)]),
    ("pending", "cancel", "exception", [("exception", "scheduled", "canceled")]),
    ("pending", "deadline", "exception", [("exception", "scheduled", "deadline-exceeded")]),
    ("running", "completed", "completed", [("completed", "scheduled", "completed")]),
    ("running", "failed", "failed", [("failed", "scheduled", "failed")]),
    *[
        ("running", reason, "exception", [("exception", "scheduled", reason)])
        for reason in ("malformed-payload", "resource-unavailable", "internal-error")
    ],
    (
        "running",
        "worker-shutdown",
        "pending",
        [("exception", "scheduled", "worker-shutdown"), ("pending", "retry", None)],
    ),
    (
        "running",
        "intermittent-task",
        "pending",
        [("exception", "scheduled", "intermittent-task"), ("pending", "task-retry", None)],
    ),
    (
        "running",
        "claim-expired",
        "pending",
        [("exception", "scheduled", "claim-expired"), ("pending", "retry", None)],
    ),
    ("running", "cancel", "exception", [("exception", "scheduled", "canceled")]),
    ("running", "deadline", "exception", [("exception", "scheduled", "deadline-exceeded")]),
    *[
        (start, "rerun", "pending", [(start, "scheduled", reason), ("pending", "rerun", None)])
        for start, reason in (
            ("completed", "completed"),
            ("failed", "failed"),
            ("exception", "malformed-payload"),
        )
    ],
]


@pytest.mark.parametrize(("start", "action", "state", "runs"), TABLE)
def test_state_machine_table(
    start: str, action: str, state: str, runs: list[tuple[str, str, str | None]]
) -> None:
    outcome = ACTIONS[action](START[start]())
    assert outcome.changed
    status = outcome.record.status
    assert status.state == state
    summary = [(r.state, r.reasonCreated, r.reasonResolved) for r in status.runs]
    assert summary == runs
    assert [r.runId for r in status.runs] == list(range(len(runs)))


# Transitions the table does not allow: state, action → error type.
FORBIDDEN = [
    ("unscheduled", "claim", errors.ResourceNotFound),
    ("unscheduled", "completed", errors.ResourceNotFound),
    ("pending", "completed", errors.RequestConflict),
    ("pending", "failed", errors.RequestConflict),
    ("pending", "worker-shutdown", errors.RequestConflict),
    ("completed", "claim", errors.RequestConflict),
    ("failed", "completed", errors.RequestConflict),
    ("completed", "failed", errors.RequestConflict),
    ("completed", "malformed-payload", errors.RequestConflict),
    ("exception", "internal-error", errors.RequestConflict),
    ("exception", "completed", errors.RequestConflict),
]


@pytest.mark.parametrize(("start", "action", "error"), FORBIDDEN)
def test_forbidden_transitions(start: str, action: str, error: type[errors.ApiError]) -> None:
    with pytest.raises(error):
        ACTIONS[action](START[start]())


@pytest.mark.parametrize("start", ["completed", "failed", "exception"])
@pytest.mark.parametrize("action", ["cancel", "deadline", "schedule"])
def test_resolved_tasks_stay_as_they_are(start: str, action: str) -> None:
    record = START[start]()
    outcome = ACTIONS[action](record)
    assert not outcome.changed
    assert outcome.record == record
    assert outcome.effects == ()


# --- createTask (defined) ---------------------------------------------------------------


def test_new_record_defaults_the_task_group_and_retries_left() -> None:
    record = TaskRecord.new(TASK_ID, definition(taskGroupId=None, retries=7))
    assert record.definition.taskGroupId == TASK_ID
    assert record.retries_left == 7
    assert record.runs == () and not record.ever_resolved and record.version == 0
    assert record.status.state == "unscheduled"


def test_defined_without_scheduling_only_announces_the_task() -> None:
    record = unscheduled()
    outcome = transitions.defined(record, schedule=False, now=NOW)
    assert not outcome.changed and outcome.record == record
    assert kinds(outcome) == ["task-defined"]
    (message,) = messages(outcome)
    assert message.routing_key == key()
    assert message.cc == CC
    assert message.body == {
        "version": 1,
        "status": {
            "taskId": TASK_ID,
            "provisionerId": "prov",
            "workerType": "wt",
            "taskQueueId": "prov/wt",
            "schedulerId": "sched",
            "projectId": "none",
            "taskGroupId": GROUP_ID,
            "priority": "high",
            "deadline": ts(DEADLINE),
            "expires": ts(DEADLINE.replace(year=DEADLINE.year + 1)),
            "retriesLeft": 2,
            "state": "unscheduled",
            "runs": [],
        },
        "task": {"tags": TAGS},
    }


def test_defined_with_scheduling_makes_run_0_pending() -> None:
    outcome = transitions.defined(unscheduled(), schedule=True, now=NOW)
    assert outcome.changed
    assert kinds(outcome) == ["task-defined", "Enqueue", "task-pending"]
    defined_msg, enqueue, pending_msg = outcome.effects
    assert isinstance(defined_msg, Message) and isinstance(pending_msg, Message)
    # task-defined is the pre-scheduling snapshot even though run 0 now exists.
    assert defined_msg.body["status"]["state"] == "unscheduled"
    assert defined_msg.body["status"]["runs"] == []
    assert enqueue == Enqueue("prov/wt", 5, NOW, TASK_ID, 0, DEADLINE)
    assert pending_msg.routing_key == key(0)
    assert pending_msg.cc == CC
    assert pending_msg.body == {
        "version": 1,
        "status": outcome.record.status.to_output(),
        "runId": 0,
        "task": {"tags": TAGS},
    }
    assert pending_msg.body["status"]["state"] == "pending"
    assert pending_msg.body["status"]["runs"] == [
        {"runId": 0, "state": "pending", "reasonCreated": "scheduled", "scheduled": ts(NOW)}
    ]


def test_defined_repeat_on_a_pending_task_resends_both_messages() -> None:
    first = transitions.defined(unscheduled(), schedule=True, now=NOW)
    again = transitions.defined(first.record, schedule=True, now=LATER)
    assert not again.changed and again.record == first.record
    assert kinds(again) == ["task-defined", "task-pending"]
    assert messages(again) == messages(first)


@pytest.mark.parametrize("later", [running, lambda: resolved("completed")])
def test_defined_repeat_after_the_task_moved_on_only_resends_task_defined(
    later: Callable[[], TaskRecord],
) -> None:
    record = later()
    outcome = transitions.defined(record, schedule=True, now=LATER)
    assert not outcome.changed and outcome.record == record
    assert kinds(outcome) == ["task-defined"]
    (message,) = messages(outcome)
    assert message.body["status"]["state"] == "unscheduled"
    assert message.body["status"]["runs"] == []
    assert message.body["status"]["retriesLeft"] == 2


def test_defined_snapshot_has_full_retries_even_after_a_retry() -> None:
    record = resolve(running(), "worker-shutdown").record
    assert record.retries_left == 1
    outcome = transitions.defined(record, schedule=True, now=LATER)
    assert kinds(outcome) == ["task-defined"]
    assert messages(outcome)[0].body["status"]["retriesLeft"] == 2


# --- scheduleTask -----------------------------------------------------------------------


def test_schedule_creates_run_0_and_enqueues_it() -> None:
    outcome = transitions.schedule(unscheduled(priority="lowest"), NOW)
    assert kinds(outcome) == ["Enqueue", "task-pending"]
    assert outcome.effects[0] == Enqueue("prov/wt", 1, NOW, TASK_ID, 0, DEADLINE)
    assert outcome.record.runs[0].to_output() == {
        "runId": 0,
        "state": "pending",
        "reasonCreated": "scheduled",
        "scheduled": ts(NOW),
    }


@pytest.mark.parametrize("start", ["pending", "running", "completed"])
def test_schedule_with_runs_is_an_idempotent_no_op(start: str) -> None:
    record = START[start]()
    outcome = transitions.schedule(record, LATER)
    assert not outcome.changed and outcome.record == record and outcome.effects == ()


# --- rerunTask --------------------------------------------------------------------------


def test_rerun_appends_a_pending_run_and_resets_retries() -> None:
    record = running()
    for _ in range(3):  # two retries, then none left
        record = resolve(record, "worker-shutdown").record
        if record.status.state == "pending":
            record = claim(record).record
    assert record.retries_left == 0 and len(record.runs) == 3
    assert record.status.state == "exception"
    outcome = transitions.rerun(record, LATER)
    assert kinds(outcome) == ["Enqueue", "task-pending"]
    assert outcome.effects[0] == Enqueue("prov/wt", 5, LATER, TASK_ID, 3, DEADLINE)
    new = outcome.record
    assert new.retries_left == 2  # min(retries=2, 50 - 3 - 1)
    assert new.runs[3].to_output() == {
        "runId": 3,
        "state": "pending",
        "reasonCreated": "rerun",
        "scheduled": ts(LATER),
    }
    message = messages(outcome)[0]
    assert message.routing_key == key(3)
    assert message.body["runId"] == 3
    assert message.body["status"]["retriesLeft"] == 2


@pytest.mark.parametrize(
    ("retries", "runs_before", "retries_left"),
    [
        (49, 1, 48),
        (49, 10, 39),
        (49, 48, 1),
        (49, 49, 0),
        (5, 1, 5),
        (5, 44, 5),
        (5, 45, 4),
        (5, 47, 2),
        (0, 3, 0),
    ],
)
def test_rerun_retries_left_formula(retries: int, runs_before: int, retries_left: int) -> None:
    outcome = transitions.rerun(with_resolved_runs(runs_before, retries), LATER)
    assert outcome.record.retries_left == retries_left
    assert len(outcome.record.runs) == runs_before + 1


def test_rerun_of_an_unscheduled_task_creates_run_0() -> None:
    outcome = transitions.rerun(unscheduled(retries=49), NOW)
    assert [(r.runId, r.reasonCreated) for r in outcome.record.runs] == [(0, "rerun")]
    assert outcome.record.retries_left == 49  # min(49, 50 - 0 - 1)


def test_rerun_refuses_the_51st_run() -> None:
    record = with_resolved_runs(MAX_RUNS)
    assert MAX_RUNS == 50
    with pytest.raises(errors.RequestConflict):
        transitions.rerun(record, LATER)


def test_rerun_allows_the_50th_run() -> None:
    outcome = transitions.rerun(with_resolved_runs(MAX_RUNS - 1), LATER)
    assert len(outcome.record.runs) == 50
    assert outcome.record.retries_left == 0


@pytest.mark.parametrize("start", ["pending", "running"])
def test_rerun_of_an_open_task_is_an_idempotent_no_op(start: str) -> None:
    record = START[start]()
    outcome = transitions.rerun(record, LATER)
    assert not outcome.changed and outcome.record == record and outcome.effects == ()


def test_rerun_after_a_retry_run_counts_every_run() -> None:
    # The retry added run 1; intermittent runs out; 2 runs exist before the rerun.
    record = resolve(running(retries=1), "intermittent-task").record
    record = resolve(claim(record).record, "intermittent-task").record
    assert len(record.runs) == 2 and record.retries_left == 0
    assert transitions.rerun(record, LATER).record.retries_left == 1


# --- cancelTask -------------------------------------------------------------------------


def test_cancel_of_an_unscheduled_task_adds_a_synthetic_run_0() -> None:
    outcome = transitions.cancel(unscheduled(), LATER)
    record = outcome.record
    assert record.ever_resolved
    assert record.status.to_output()["runs"] == [
        {
            "runId": 0,
            "state": "exception",
            "reasonCreated": "exception",
            "reasonResolved": "canceled",
            "scheduled": ts(LATER),
            "resolved": ts(LATER),
        }
    ]
    assert kinds(outcome) == ["task-exception"]
    (message,) = messages(outcome)
    assert message.routing_key == key(0)
    assert message.cc == CC
    assert message.body == {
        "version": 1,
        "status": record.status.to_output(),
        "runId": 0,
        "task": {"tags": TAGS},
    }


def test_cancel_of_a_pending_run_dequeues_it_and_leaves_worker_slots_empty() -> None:
    outcome = transitions.cancel(pending(), LATER)
    assert kinds(outcome) == ["Dequeue", "task-exception"]
    assert outcome.effects[0] == Dequeue(TASK_ID, 0, "prov/wt")
    run = outcome.record.runs[0]
    assert (run.state, run.reasonCreated, run.reasonResolved) == (
        "exception",
        "scheduled",
        "canceled",
    )
    assert run.resolved == LATER and run.scheduled == NOW
    message = messages(outcome)[0]
    assert message.routing_key == key(0)
    assert "workerGroup" not in message.body and "workerId" not in message.body
    assert message.body["runId"] == 0


def test_cancel_of_a_running_run_names_the_worker() -> None:
    outcome = transitions.cancel(running(), LATER)
    assert kinds(outcome) == ["task-exception"]
    message = messages(outcome)[0]
    assert message.routing_key == key(0, WG, WID)
    assert message.body["workerGroup"] == WG and message.body["workerId"] == WID
    run_out = message.body["status"]["runs"][0]
    assert run_out["state"] == "exception" and run_out["reasonResolved"] == "canceled"
    assert run_out["resolved"] == ts(LATER)
    assert run_out["workerGroup"] == WG  # the run keeps its worker
    assert outcome.record.ever_resolved


@pytest.mark.parametrize("start", [unscheduled, pending, running])
def test_repeat_cancel_resends_task_exception(start: Callable[[], TaskRecord]) -> None:
    first = transitions.cancel(start(), LATER)
    again = transitions.cancel(first.record, LATER + timedelta(minutes=1))
    assert not again.changed and again.record == first.record
    assert kinds(again) == ["task-exception"]
    assert messages(again) == messages(first)


def test_cancel_after_a_retry_cancels_the_retry_run() -> None:
    record = resolve(running(), "worker-shutdown").record
    outcome = transitions.cancel(record, LATER)
    assert kinds(outcome) == ["Dequeue", "task-exception"]
    assert outcome.effects[0] == Dequeue(TASK_ID, 1, "prov/wt")
    assert [(r.state, r.reasonResolved) for r in outcome.record.runs] == [
        ("exception", "worker-shutdown"),
        ("exception", "canceled"),
    ]
    assert messages(outcome)[0].routing_key == key(1)


# --- deadline resolver ------------------------------------------------------------------


def test_deadline_before_the_deadline_changes_nothing() -> None:
    record = pending()
    outcome = transitions.deadline_exceeded(record, DEADLINE - timedelta(milliseconds=1))
    assert not outcome.changed and outcome.record == record and outcome.effects == ()


@pytest.mark.parametrize(
    ("start", "effects"),
    [
        ("unscheduled", ["task-exception"]),
        ("pending", ["Dequeue", "task-exception"]),
        ("running", ["task-exception"]),
    ],
)
def test_deadline_resolves_open_tasks_without_worker_slots(start: str, effects: list[str]) -> None:
    outcome = transitions.deadline_exceeded(START[start](), PAST_DEADLINE)
    assert kinds(outcome) == effects
    message = messages(outcome)[0]
    assert message.routing_key == key(0)
    assert message.cc == CC
    assert set(message.body) == {"version", "status", "runId", "task"}
    run = outcome.record.runs[-1]
    assert run.reasonResolved == "deadline-exceeded" and run.resolved == PAST_DEADLINE
    assert outcome.record.ever_resolved


def test_deadline_of_an_unscheduled_task_adds_a_synthetic_run() -> None:
    outcome = transitions.deadline_exceeded(unscheduled(), PAST_DEADLINE)
    assert outcome.record.runs[0].to_output() == {
        "runId": 0,
        "state": "exception",
        "reasonCreated": "exception",
        "reasonResolved": "deadline-exceeded",
        "scheduled": ts(PAST_DEADLINE),
        "resolved": ts(PAST_DEADLINE),
    }


def test_deadline_redelivery_resends_the_message() -> None:
    first = transitions.deadline_exceeded(running(), PAST_DEADLINE)
    again = transitions.deadline_exceeded(first.record, PAST_DEADLINE + timedelta(seconds=5))
    assert not again.changed and kinds(again) == ["task-exception"]
    assert messages(again) == messages(first)


def test_deadline_leaves_a_cancelled_task_alone() -> None:
    record = transitions.cancel(pending(), LATER).record
    outcome = transitions.deadline_exceeded(record, PAST_DEADLINE)
    assert not outcome.changed and outcome.effects == ()


# --- after the deadline everything is 409 (§2.4) ----------------------------------------

AFTER_DEADLINE: dict[str, tuple[Callable[[], TaskRecord], Step]] = {
    "schedule": (unscheduled, lambda r: transitions.schedule(r, PAST_DEADLINE)),
    "rerun": (lambda: resolved("failed"), lambda r: transitions.rerun(r, PAST_DEADLINE)),
    "rerun-unscheduled": (unscheduled, lambda r: transitions.rerun(r, PAST_DEADLINE)),
    "cancel-pending": (pending, lambda r: transitions.cancel(r, PAST_DEADLINE)),
    "cancel-unscheduled": (unscheduled, lambda r: transitions.cancel(r, PAST_DEADLINE)),
    "claim": (pending, lambda r: claim(r, now=PAST_DEADLINE)),
    "claim-again": (running, lambda r: claim(r, now=PAST_DEADLINE)),
    "reclaim": (
        running,
        lambda r: transitions.reclaim(r, 0, now=PAST_DEADLINE, claim_timeout_s=CLAIM_TIMEOUT_S),
    ),
    "change-priority": (
        pending,
        lambda r: transitions.change_priority(r, "low", PAST_DEADLINE),
    ),
}


@pytest.mark.parametrize("name", list(AFTER_DEADLINE))
def test_after_the_deadline_mutations_conflict(name: str) -> None:
    start, step = AFTER_DEADLINE[name]
    with pytest.raises(errors.RequestConflict) as info:
        step(start())
    assert info.value.status == 409
    assert ts(DEADLINE) in info.value.message


def test_reports_are_not_refused_after_the_deadline() -> None:
    # Only the endpoints listed in §2.4 check the deadline; the deadline resolver closes
    # a run that is still running.
    outcome = transitions.resolve(running(), 0, "completed", now=PAST_DEADLINE)
    assert outcome.record.status.state == "completed"


# --- claiming ---------------------------------------------------------------------------


def test_claim_makes_the_run_running_and_announces_it() -> None:
    outcome = claim(pending())
    taken_until = NOW + timedelta(seconds=CLAIM_TIMEOUT_S)
    record = outcome.record
    assert record.taken_until == taken_until
    assert record.runs[0].to_output() == {
        "runId": 0,
        "state": "running",
        "reasonCreated": "scheduled",
        "workerGroup": WG,
        "workerId": WID,
        "takenUntil": ts(taken_until),
        "scheduled": ts(NOW),
        "started": ts(NOW),
    }
    assert kinds(outcome) == ["Dequeue", "task-running"]
    assert outcome.effects[0] == Dequeue(TASK_ID, 0, "prov/wt")
    message = messages(outcome)[0]
    assert message.routing_key == key(0, WG, WID)
    assert message.cc == CC
    assert message.body == {
        "version": 1,
        "status": record.status.to_output(),
        "runId": 0,
        "workerGroup": WG,
        "workerId": WID,
        "takenUntil": ts(taken_until),
        "task": {"tags": TAGS},
    }
    assert message.body["status"]["state"] == "running"


def test_a_claim_taken_from_the_pending_queue_leaves_no_stale_message() -> None:
    # claimWork consumed the run's message; claimTask (above) leaves it behind, stale.
    outcome = transitions.claim(
        pending(),
        0,
        worker_group=WG,
        worker_id=WID,
        now=NOW,
        claim_timeout_s=CLAIM_TIMEOUT_S,
        from_queue=True,
    )
    assert kinds(outcome) == ["task-running"]


def test_claim_repeated_by_the_same_worker_succeeds_unchanged() -> None:
    record = running()
    outcome = claim(record, now=LATER)
    assert not outcome.changed and outcome.record == record
    assert outcome.record.taken_until == NOW + timedelta(seconds=CLAIM_TIMEOUT_S)


@pytest.mark.parametrize(
    ("worker_group", "worker_id"), [(WG, "i-other"), ("eu-west-1", WID), ("g", "w")]
)
def test_claim_by_another_worker_conflicts(worker_group: str, worker_id: str) -> None:
    with pytest.raises(errors.RequestConflict):
        claim(running(), worker_group=worker_group, worker_id=worker_id)


def test_claim_of_a_run_that_is_not_the_last_conflicts() -> None:
    record = resolve(running(), "worker-shutdown").record  # run 1 is the pending retry
    with pytest.raises(errors.RequestConflict):
        claim(record, 0)
    assert claim(record, 1).record.runs[1].state == "running"


@pytest.mark.parametrize("run_id", [1, 5, -1])
def test_claim_of_a_missing_run_is_not_found(run_id: int) -> None:
    with pytest.raises(errors.ResourceNotFound):
        claim(pending(), run_id)


def test_claim_of_a_cancelled_run_conflicts() -> None:
    with pytest.raises(errors.RequestConflict):
        claim(transitions.cancel(pending(), LATER).record)


def test_reclaim_moves_taken_until_without_messages() -> None:
    record = running()
    outcome = transitions.reclaim(record, 0, now=LATER, claim_timeout_s=60)
    assert outcome.changed and kinds(outcome) == []  # no message, only bookkeeping
    (extended,) = outcome.effects
    assert extended == transitions.ClaimExtended(
        TASK_ID, outcome.record.runs[-1].runId, outcome.record.runs[-1].takenUntil
    )
    assert outcome.record.taken_until == LATER + timedelta(seconds=60)
    run = outcome.record.runs[0]
    assert (run.state, run.workerGroup, run.workerId, run.started) == ("running", WG, WID, NOW)


RECLAIM_CONFLICTS: dict[str, Callable[[], TaskRecord]] = {
    "pending": pending,
    "completed": lambda: resolved("completed"),
    "cancelled": lambda: transitions.cancel(running(), LATER).record,
    "claim-expired": lambda: ACTIONS["claim-expired"](running()).record,
}


@pytest.mark.parametrize("name", list(RECLAIM_CONFLICTS))
def test_reclaim_of_a_run_that_is_not_running_conflicts(name: str) -> None:
    with pytest.raises(errors.RequestConflict):
        transitions.reclaim(RECLAIM_CONFLICTS[name](), 0, now=LATER, claim_timeout_s=60)


def test_reclaim_of_a_missing_run_is_not_found() -> None:
    with pytest.raises(errors.ResourceNotFound):
        transitions.reclaim(running(), 1, now=LATER, claim_timeout_s=60)


# --- resolving --------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", ["completed", "failed"])
def test_report_completed_or_failed(resolution: str) -> None:
    outcome = resolve(running(), resolution)
    record = outcome.record
    assert record.ever_resolved and record.retries_left == 2
    assert record.runs[0].to_output() == {
        "runId": 0,
        "state": resolution,
        "reasonCreated": "scheduled",
        "reasonResolved": resolution,
        "workerGroup": WG,
        "workerId": WID,
        "takenUntil": ts(NOW + timedelta(seconds=CLAIM_TIMEOUT_S)),
        "scheduled": ts(NOW),
        "started": ts(NOW),
        "resolved": ts(LATER),
    }
    assert kinds(outcome) == [f"task-{resolution}"]
    message = messages(outcome)[0]
    assert message.routing_key == key(0, WG, WID)
    assert message.cc == CC
    assert message.body == {
        "version": 1,
        "status": record.status.to_output(),
        "runId": 0,
        "task": {"tags": TAGS},
        "workerGroup": WG,
        "workerId": WID,
    }
    assert record.taken_until is None


@pytest.mark.parametrize("reason", ["malformed-payload", "resource-unavailable", "internal-error"])
def test_report_exception_without_retry(reason: str) -> None:
    outcome = resolve(running(), reason)
    assert len(outcome.record.runs) == 1 and outcome.record.retries_left == 2
    assert outcome.record.ever_resolved
    assert kinds(outcome) == ["task-exception"]
    message = messages(outcome)[0]
    assert message.routing_key == key(0, WG, WID)
    assert message.body["workerGroup"] == WG and message.body["workerId"] == WID
    assert message.body["status"]["state"] == "exception"


@pytest.mark.parametrize(
    ("reason", "created"), [("worker-shutdown", "retry"), ("intermittent-task", "task-retry")]
)
def test_report_exception_with_retry(reason: str, created: str) -> None:
    outcome = resolve(running(priority="very-low"), reason)
    record = outcome.record
    assert record.retries_left == 1
    assert not record.ever_resolved
    assert record.status.state == "pending"
    assert record.runs[1].to_output() == {
        "runId": 1,
        "state": "pending",
        "reasonCreated": created,
        "scheduled": ts(LATER),
    }
    assert kinds(outcome) == ["task-exception", "Enqueue", "task-pending"]
    _ended, exception_msg, enqueue, pending_msg = outcome.effects
    assert isinstance(exception_msg, Message) and isinstance(pending_msg, Message)
    assert enqueue == Enqueue("prov/wt", 2, LATER, TASK_ID, 1, DEADLINE)
    assert exception_msg.routing_key == key(0, WG, WID)
    assert exception_msg.body["runId"] == 0
    assert pending_msg.routing_key == key(1)
    assert pending_msg.body["runId"] == 1
    # Both carry the same snapshot, already including the new run.
    assert exception_msg.body["status"] == pending_msg.body["status"]
    assert exception_msg.body["status"] == record.status.to_output()
    assert [r["state"] for r in exception_msg.body["status"]["runs"]] == ["exception", "pending"]
    assert exception_msg.body["status"]["retriesLeft"] == 1


def test_retries_count_down_to_zero_then_the_task_stays_exception() -> None:
    record = running(retries=2)
    for run_id, left in ((0, 1), (1, 0)):
        outcome = resolve(record, "worker-shutdown", run_id)
        assert outcome.record.retries_left == left
        assert kinds(outcome) == ["task-exception", "Enqueue", "task-pending"]
        record = claim(outcome.record).record
    final = resolve(record, "worker-shutdown", 2)
    assert kinds(final) == ["task-exception"]
    assert final.record.status.state == "exception"
    assert final.record.ever_resolved and final.record.retries_left == 0
    assert [r.reasonCreated for r in final.record.runs] == ["scheduled", "retry", "retry"]


@pytest.mark.parametrize("reason", ["worker-shutdown", "intermittent-task"])
def test_no_retry_when_no_retries_are_left(reason: str) -> None:
    outcome = resolve(running(retries=0), reason)
    assert len(outcome.record.runs) == 1
    assert outcome.record.status.state == "exception"
    assert kinds(outcome) == ["task-exception"]
    assert outcome.record.ever_resolved


@pytest.mark.parametrize(
    "resolution", ["completed", "failed", "malformed-payload", "internal-error"]
)
def test_repeating_the_same_report_succeeds_and_resends(resolution: str) -> None:
    first = resolve(running(), resolution)
    again = transitions.resolve(first.record, 0, resolution, now=LATER + timedelta(minutes=1))
    assert not again.changed and again.record == first.record
    assert again.effects == first.effects
    assert again.effects  # something is re-sent


@pytest.mark.parametrize("reason", ["worker-shutdown", "intermittent-task"])
def test_repeating_a_retried_report_resends_the_retry_too(reason: str) -> None:
    first = resolve(running(), reason)
    again = transitions.resolve(first.record, 0, reason, now=LATER + timedelta(minutes=1))
    assert not again.changed and again.record == first.record
    assert kinds(again) == ["task-exception", "Enqueue", "task-pending"]
    assert again.effects == first.effects


def test_repeating_a_retried_report_after_the_retry_was_claimed_only_resends_the_exception() -> (
    None
):
    record = claim(resolve(running(), "worker-shutdown").record).record
    again = transitions.resolve(record, 0, "worker-shutdown", now=LATER)
    assert not again.changed
    assert kinds(again) == ["task-exception"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("completed", "failed"),
        ("failed", "completed"),
        ("completed", "internal-error"),
        ("malformed-payload", "internal-error"),
        ("internal-error", "completed"),
        ("worker-shutdown", "intermittent-task"),
        ("worker-shutdown", "completed"),
    ],
)
def test_a_different_outcome_conflicts(first: str, second: str) -> None:
    record = resolve(running(), first).record
    with pytest.raises(errors.RequestConflict):
        transitions.resolve(record, 0, second, now=LATER)


@pytest.mark.parametrize("resolution", ["completed", "failed", "worker-shutdown"])
def test_reporting_a_pending_run_conflicts(resolution: str) -> None:
    with pytest.raises(errors.RequestConflict):
        transitions.resolve(pending(), 0, resolution, now=LATER)


def test_reporting_a_cancelled_run_conflicts() -> None:
    record = transitions.cancel(running(), LATER).record
    with pytest.raises(errors.RequestConflict):
        transitions.resolve(record, 0, "completed", now=LATER)


@pytest.mark.parametrize("run_id", [1, 2])
def test_reporting_a_missing_run_is_not_found(run_id: int) -> None:
    with pytest.raises(errors.ResourceNotFound):
        transitions.resolve(running(), run_id, "completed", now=LATER)


# --- claim resolver ---------------------------------------------------------------------


def test_claim_expiry_resolves_and_retries() -> None:
    record = running()
    taken_until = record.taken_until
    assert taken_until is not None
    outcome = transitions.expire_claim(record, 0, taken_until, taken_until + timedelta(seconds=3))
    assert outcome.changed
    assert outcome.record.retries_left == 1
    runs = outcome.record.runs
    assert (runs[0].state, runs[0].reasonResolved) == ("exception", "claim-expired")
    assert runs[0].resolved == taken_until + timedelta(seconds=3)
    assert (runs[1].state, runs[1].reasonCreated) == ("pending", "retry")
    assert kinds(outcome) == ["task-exception", "Enqueue", "task-pending"]
    exception_msg = messages(outcome)[0]
    assert exception_msg.routing_key == key(0, WG, WID)
    assert exception_msg.body["workerGroup"] == WG and exception_msg.body["workerId"] == WID


def test_claim_expiry_without_retries_resolves_the_task() -> None:
    record = running(retries=0)
    taken_until = record.taken_until
    assert taken_until is not None
    outcome = transitions.expire_claim(record, 0, taken_until, taken_until)
    assert kinds(outcome) == ["task-exception"]
    assert outcome.record.status.state == "exception"
    assert outcome.record.ever_resolved


NOT_EXPIRED: dict[str, tuple[Callable[[], TaskRecord], int, datetime, datetime]] = {
    # record, runId, the expiry record's takenUntil, now
    "reclaimed": (
        lambda: transitions.reclaim(running(), 0, now=LATER, claim_timeout_s=60).record,
        0,
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S),
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S + 5),
    ),
    "completed": (
        lambda: resolved("completed"),
        0,
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S),
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S + 5),
    ),
    "cancelled": (
        lambda: transitions.cancel(running(), LATER).record,
        0,
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S),
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S + 5),
    ),
    "past-deadline": (
        lambda: (
            transitions.reclaim(
                running(), 0, now=DEADLINE - timedelta(seconds=10), claim_timeout_s=5
            ).record
        ),
        0,
        DEADLINE - timedelta(seconds=5),
        PAST_DEADLINE,
    ),
    "not-yet": (
        running,
        0,
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S),
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S - 1),
    ),
    "not-last-run": (
        lambda: resolve(running(), "worker-shutdown").record,
        0,
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S),
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S + 5),
    ),
    "missing-run": (
        running,
        3,
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S),
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S + 5),
    ),
    "already-expired": (
        lambda: ACTIONS["claim-expired"](running()).record,
        0,
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S),
        NOW + timedelta(seconds=CLAIM_TIMEOUT_S + 5),
    ),
}


@pytest.mark.parametrize("name", list(NOT_EXPIRED))
def test_claim_expiry_is_a_no_op_unless_the_claim_still_holds(name: str) -> None:
    start, run_id, taken_until, now = NOT_EXPIRED[name]
    record = start()
    outcome = transitions.expire_claim(record, run_id, taken_until, now)
    assert not outcome.changed
    assert outcome.record == record
    assert outcome.effects == ()


def test_the_new_expiry_after_a_reclaim_still_fires() -> None:
    record = transitions.reclaim(running(), 0, now=LATER, claim_timeout_s=60).record
    taken_until = LATER + timedelta(seconds=60)
    outcome = transitions.expire_claim(record, 0, taken_until, taken_until)
    assert outcome.record.runs[0].reasonResolved == "claim-expired"


# --- changeTaskPriority -----------------------------------------------------------------


def test_change_priority_of_a_pending_task_reprioritizes_its_queue_entry() -> None:
    record = pending()
    outcome = transitions.change_priority(record, "highest", LATER)
    assert outcome.changed
    assert outcome.record.definition.priority == "highest"
    assert outcome.record.runs == record.runs
    assert kinds(outcome) == ["Reprioritize", "task-priority-changed"]
    assert outcome.effects[0] == Reprioritize(TASK_ID, 0, 7, "prov/wt", DEADLINE)
    message = messages(outcome)[0]
    assert message.routing_key == key()  # runId slot `_` too
    assert message.cc == CC
    assert message.body == {
        "version": 1,
        "status": outcome.record.status.to_output(),
        "oldPriority": "high",
        "newPriority": "highest",
    }
    assert message.body["status"]["priority"] == "highest"


@pytest.mark.parametrize("start", ["unscheduled", "running"])
def test_change_priority_without_a_pending_run_only_announces(start: str) -> None:
    outcome = transitions.change_priority(START[start](), "lowest", LATER)
    assert kinds(outcome) == ["task-priority-changed"]
    assert messages(outcome)[0].routing_key == key()
    assert outcome.record.definition.priority == "lowest"


def test_change_priority_for_a_group_is_not_announced_per_task() -> None:
    outcome = transitions.change_priority(pending(), "low", LATER, announce=False)
    assert outcome.effects == (Reprioritize(TASK_ID, 0, 3, "prov/wt", DEADLINE),)


def test_later_retries_use_the_new_priority() -> None:
    record = transitions.change_priority(running(), "medium", LATER).record
    outcome = resolve(record, "worker-shutdown")
    enqueue = next(e for e in outcome.effects if isinstance(e, Enqueue))
    assert enqueue.priority == 4
    assert messages(outcome)[-1].body["status"]["priority"] == "medium"


def test_change_to_the_same_priority_conflicts() -> None:
    with pytest.raises(errors.RequestConflict):
        transitions.change_priority(pending(), "high", LATER)


CHANGE_PRIORITY_CONFLICTS: dict[str, Callable[[], TaskRecord]] = {
    "completed": lambda: resolved("completed"),
    "failed": lambda: resolved("failed"),
    "cancelled": lambda: transitions.cancel(unscheduled(), LATER).record,
    # Ever resolved: a rerun reopened it, but its priority stays fixed.
    "rerun-after-resolve": lambda: transitions.rerun(resolved("failed"), LATER).record,
}


@pytest.mark.parametrize("name", list(CHANGE_PRIORITY_CONFLICTS))
def test_change_priority_of_a_resolved_task_conflicts(name: str) -> None:
    with pytest.raises(errors.RequestConflict):
        transitions.change_priority(CHANGE_PRIORITY_CONFLICTS[name](), "lowest", LATER)


def test_change_priority_during_a_retry_is_allowed() -> None:
    record = resolve(running(), "intermittent-task").record  # never resolved as a task
    outcome = transitions.change_priority(record, "low", LATER)
    assert outcome.effects[0] == Reprioritize(TASK_ID, 1, 3, "prov/wt", DEADLINE)


# --- status snapshots -------------------------------------------------------------------


def test_unset_run_fields_are_absent_from_every_message() -> None:
    outcome = transitions.defined(unscheduled(), schedule=True, now=NOW)
    pending_run = messages(outcome)[1].body["status"]["runs"][0]
    assert set(pending_run) == {"runId", "state", "reasonCreated", "scheduled"}
    cancelled = transitions.cancel(outcome.record, LATER)
    cancelled_run = messages(cancelled)[0].body["status"]["runs"][0]
    assert set(cancelled_run) == {
        "runId",
        "state",
        "reasonCreated",
        "reasonResolved",
        "scheduled",
        "resolved",
    }
    assert None not in cancelled_run.values()


def test_status_output_keeps_runs_last() -> None:
    output = running().status.to_output()
    assert list(output)[-1] == "runs"
    assert output["state"] == "running"


# --- claimed-runs bookkeeping ------------------------------------------------------------


def _bookkeeping(outcome: Outcome) -> list[object]:
    return [
        e
        for e in outcome.effects
        if isinstance(e, transitions.ClaimStarted | transitions.ClaimEnded)
    ]


def test_a_claim_is_counted_with_its_worker_and_start() -> None:
    outcome = claim(pending())
    assert _bookkeeping(outcome) == [
        transitions.ClaimStarted(
            outcome.record.definition.taskQueueId,
            TASK_ID,
            0,
            WG,
            WID,
            NOW,
            outcome.record.runs[0].takenUntil,
        )
    ]


@pytest.mark.parametrize(
    "end",
    [
        lambda r: transitions.resolve(r, 0, "completed", now=LATER),
        lambda r: transitions.resolve(r, 0, "failed", now=LATER),
        lambda r: transitions.resolve(r, 0, "worker-shutdown", now=LATER),
        lambda r: transitions.cancel(r, LATER),
    ],
)
def test_every_end_of_a_running_run_uncounts_it_once(end: Any) -> None:
    assert _bookkeeping(end(running())) == [transitions.ClaimEnded(TASK_ID, 0)]


def test_cancelling_a_pending_run_touches_no_claim() -> None:
    assert _bookkeeping(transitions.cancel(pending(), LATER)) == []


def test_a_task_is_open_in_its_group_until_it_first_resolves() -> None:
    def open_mark(record: TaskRecord) -> str | None:
        return taskstore.to_document(record).get("openInGroup")

    group = running().definition.taskGroupId
    assert open_mark(unscheduled()) == open_mark(pending()) == open_mark(running()) == group
    retried = resolve(running(), "worker-shutdown")
    assert open_mark(retried.record) == group  # a retry is not a resolution
    first = resolve(running(), "failed")
    assert open_mark(first.record) is None
    # the resolving write itself takes the mark off (not a later effect)
    update = taskstore.update_for(running(), first.record, [], LATER)
    assert "openInGroup" in update["$unset"]
    rerun = transitions.rerun(first.record, LATER)
    assert open_mark(rerun.record) is None  # ever resolved: the group does not wait again
    assert open_mark(transitions.cancel(unscheduled(), LATER).record) is None
    assert open_mark(transitions.cancel(running(), LATER).record) is None


# --- a claim whose answer could not be delivered ---------------------------------------


def test_unclaim_puts_the_run_back_to_pending_for_the_next_worker() -> None:
    record = running()
    outcome = transitions.unclaim(record, 0, worker_group=WG, worker_id=WID, now=LATER)
    assert outcome.changed
    run = outcome.record.runs[0]
    assert (run.state, run.workerGroup, run.takenUntil) == ("pending", None, None)
    assert outcome.record.taken_until is None
    assert kinds(outcome) == ["Enqueue", "task-pending"]
    assert ClaimEnded(TASK_ID, 0) in outcome.effects


def test_unclaim_by_anyone_else_or_after_a_report_changes_nothing() -> None:
    record = running()
    assert not transitions.unclaim(record, 0, worker_group=WG, worker_id="x", now=LATER).changed
    done = transitions.resolve(record, 0, "completed", now=LATER).record
    assert not transitions.unclaim(done, 0, worker_group=WG, worker_id=WID, now=LATER).changed
