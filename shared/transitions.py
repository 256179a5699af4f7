"""The task state machine (reference §2.4, §3.3, §4): pure functions, no I/O.

Each transition takes a `TaskRecord` and returns an `Outcome`: the record as it should be
stored next, and the effects the change implies (events to publish, pending-queue entries
to add or remove). The caller stores both in one conditional update (the effects go into
the task's outbox) and then carries the effects out, so a crash in between delays them
but never loses them. A transition that finds the work already done returns the record
unchanged with the effects a repeat must re-send (upstream re-publishes on repeats).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared import errors, events
from shared.models import (
    Priority,
    ReasonCreated,
    ReasonResolved,
    Run,
    RunState,
    TaskDefinition,
    TaskStatus,
    priority_to_int,
    status_for,
)

MAX_RUNS = 50
# Reasons that add a new run while retries are left, and the reasonCreated of that run.
RETRYABLE: dict[str, ReasonCreated] = {
    ReasonResolved.CLAIM_EXPIRED: ReasonCreated.RETRY,
    ReasonResolved.WORKER_SHUTDOWN: ReasonCreated.RETRY,
    ReasonResolved.INTERMITTENT_TASK: ReasonCreated.TASK_RETRY,
}
_OPEN = (RunState.PENDING, RunState.RUNNING)


@dataclass(frozen=True)
class Enqueue:
    """Add the run to the pending queue (idempotent per taskId/runId)."""

    task_queue_id: str
    priority: int
    inserted_at: datetime
    task_id: str
    run_id: int
    deadline: datetime


@dataclass(frozen=True)
class Dequeue:
    """The run stopped being pending while its message stays in the pending queue
    (claimTask, cancel, deadline): the message is stale, so the queue's count drops it."""

    task_id: str
    run_id: int
    task_queue_id: str


@dataclass(frozen=True)
class Reprioritize:
    """Queue the pending run again at its new priority; the old message goes stale."""

    task_id: str
    run_id: int
    priority: int
    task_queue_id: str
    deadline: datetime


@dataclass(frozen=True)
class ClaimStarted:
    """The run is now held by a worker: count it among the queue's claimed runs."""

    task_queue_id: str
    task_id: str
    run_id: int
    worker_group: str
    worker_id: str
    started: datetime
    taken_until: datetime


@dataclass(frozen=True)
class ClaimExtended:
    task_id: str
    run_id: int
    taken_until: datetime


@dataclass(frozen=True)
class ClaimEnded:
    task_id: str
    run_id: int


Effect = (
    events.Message | Enqueue | Dequeue | Reprioritize | ClaimStarted | ClaimExtended | ClaimEnded
)


INLINE_DEPENDENCIES = 64


def side_ref(task_id: str, definition: TaskDefinition) -> str | None:
    """Where a long dependency list is kept apart from the task's document, or None.

    FerretDB reads and rewrites a whole document for every update, and a fan-in sink's
    definition holds up to 10,000 ids (~250 KB): kept inline, every count-down and status
    change of the sink would move them. The id names the list's content, so a createTask
    retried with other dependencies after a crash never reuses a list it did not write."""
    if len(definition.dependencies) <= INLINE_DEPENDENCIES:
        return None
    digest = hashlib.sha256("\n".join(definition.dependencies).encode()).hexdigest()[:20]
    return f"{task_id}/{digest}"


@dataclass(frozen=True)
class TaskRecord:
    """A task as stored: its definition (taskGroupId filled in), runs and bookkeeping."""

    task_id: str
    definition: TaskDefinition
    runs: tuple[Run, ...] = ()
    retries_left: int = 0
    ever_resolved: bool = False
    version: int = 0
    # Set for a task whose long dependency list is stored beside it (shared.taskstore):
    # the side document's id. A record read without that list has `dependencies == []`.
    dependencies_ref: str | None = None

    @classmethod
    def new(cls, task_id: str, definition: TaskDefinition) -> TaskRecord:
        definition = definition.with_task_group_id(task_id)
        ref = side_ref(task_id, definition)
        return cls(task_id, definition, (), definition.retries, dependencies_ref=ref)

    @property
    def partial(self) -> bool:
        """Read without its side-stored dependency list (enough for every transition)."""
        return self.dependencies_ref is not None and not self.definition.dependencies

    @property
    def status(self) -> TaskStatus:
        return status_for(self.task_id, self.definition, self.runs, self.retries_left)

    @property
    def last_run(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    @property
    def is_open(self) -> bool:
        """Unscheduled, pending or running: not (yet) resolved."""
        last = self.last_run
        return last is None or last.state in _OPEN

    @property
    def taken_until(self) -> datetime | None:
        last = self.last_run
        return last.takenUntil if last is not None and last.state == RunState.RUNNING else None

    def run(self, run_id: int) -> Run | None:
        return self.runs[run_id] if 0 <= run_id < len(self.runs) else None


@dataclass(frozen=True)
class Outcome:
    record: TaskRecord
    effects: tuple[Effect, ...] = ()
    changed: bool = True


def _unchanged(record: TaskRecord, effects: Sequence[Effect] = ()) -> Outcome:
    return Outcome(record, tuple(effects), changed=False)


def _with_runs(record: TaskRecord, runs: Sequence[Run], **changes: object) -> TaskRecord:
    return replace(record, runs=tuple(runs), **changes)  # type: ignore[arg-type]


def check_deadline(record: TaskRecord, now: datetime) -> None:
    """After the deadline a task is immutable: every mutating call answers 409."""
    if record.definition.deadline <= now:
        raise errors.RequestConflict(
            f"Task {record.task_id} Can't be modified after its deadline "
            f"{events.ts(record.definition.deadline)}"
        )


def _pending_run(run_id: int, reason: ReasonCreated, now: datetime) -> Run:
    return Run(runId=run_id, state=RunState.PENDING, reasonCreated=reason, scheduled=now)


def _enqueue(record: TaskRecord, run: Run) -> Enqueue:
    task = record.definition
    return Enqueue(
        task.taskQueueId,
        priority_to_int(task.priority),
        run.scheduled,
        record.task_id,
        run.runId,
        task.deadline,
    )


def _made_pending(record: TaskRecord, run: Run) -> list[Effect]:
    return [_enqueue(record, run), events.task_pending(record.status, run.runId, record.definition)]


def announce_pending(record: TaskRecord) -> tuple[Effect, ...]:
    """The effects that made the task's pending last run pending, to carry out again (a
    resolver that stored a bulk scheduling but died before announcing it); none if the
    last run is no longer pending."""
    last = record.last_run
    if last is None or last.state != RunState.PENDING:
        return ()
    return tuple(_made_pending(record, last))


# --- creating and scheduling ------------------------------------------------------------


def defined(record: TaskRecord, *, schedule: bool, now: datetime) -> Outcome:
    """createTask's end: publish task-defined (the unscheduled snapshot, as upstream) and,
    when nothing is left to wait for, make run 0 pending. Safe to repeat: a repeat
    re-publishes task-defined and, while run 0 is pending, task-pending."""
    snapshot = replace(record, runs=(), retries_left=record.definition.retries)
    defined_event = events.task_defined(snapshot.status, record.definition)
    if record.runs:
        effects: list[Effect] = [defined_event]
        first = record.runs[0]
        if len(record.runs) == 1 and first.state == RunState.PENDING:
            effects.append(events.task_pending(record.status, 0, record.definition))
        return _unchanged(record, effects)
    if not schedule:
        return _unchanged(record, [defined_event])
    run = _pending_run(0, ReasonCreated.SCHEDULED, now)
    scheduled = _with_runs(record, [run])
    return Outcome(scheduled, (defined_event, *_made_pending(scheduled, run)))


def schedule(record: TaskRecord, now: datetime) -> Outcome:
    """scheduleTask (and dependencies becoming satisfied): run 0 if there are no runs."""
    check_deadline(record, now)
    if record.runs:
        return _unchanged(record)
    run = _pending_run(0, ReasonCreated.SCHEDULED, now)
    scheduled = _with_runs(record, [run])
    return Outcome(scheduled, tuple(_made_pending(scheduled, run)))


def rerun(record: TaskRecord, now: datetime) -> Outcome:
    check_deadline(record, now)
    last = record.last_run
    if last is not None and last.state in _OPEN:
        return _unchanged(record)
    if len(record.runs) >= MAX_RUNS:
        raise errors.RequestConflict(
            f"Maximum number of runs reached ({MAX_RUNS}) for task {record.task_id}"
        )
    run = _pending_run(len(record.runs), ReasonCreated.RERUN, now)
    retries_left = min(record.definition.retries, MAX_RUNS - len(record.runs) - 1)
    rerun_record = _with_runs(record, [*record.runs, run], retries_left=retries_left)
    return Outcome(rerun_record, tuple(_made_pending(rerun_record, run)))


def cancel(record: TaskRecord, now: datetime) -> Outcome:
    check_deadline(record, now)
    return _resolve_open_as_exception(record, ReasonResolved.CANCELED, now)


def deadline_exceeded(record: TaskRecord, now: datetime) -> Outcome:
    """The deadline resolver: like cancel with `deadline-exceeded`, worker slots empty."""
    if record.definition.deadline > now:
        return _unchanged(record)
    return _resolve_open_as_exception(
        record, ReasonResolved.DEADLINE_EXCEEDED, now, with_worker=False
    )


def _resolve_open_as_exception(
    record: TaskRecord, reason: ReasonResolved, now: datetime, *, with_worker: bool = True
) -> Outcome:
    last = record.last_run
    effects: list[Effect] = []
    if last is None:
        run = Run(
            runId=0,
            state=RunState.EXCEPTION,
            reasonCreated=ReasonCreated.EXCEPTION,
            reasonResolved=reason,
            scheduled=now,
            resolved=now,
        )
        record = _with_runs(record, [run], ever_resolved=True)
        changed = True
    elif last.state in _OPEN:
        if last.state == RunState.PENDING:
            effects.append(Dequeue(record.task_id, last.runId, record.definition.taskQueueId))
        else:
            effects.append(ClaimEnded(record.task_id, last.runId))
        run = last.model_copy(
            update={"state": RunState.EXCEPTION, "reasonResolved": reason, "resolved": now}
        )
        record = _with_runs(record, [*record.runs[:-1], run], ever_resolved=True)
        changed = True
    else:
        run = last
        changed = False
    if run.state == RunState.EXCEPTION and run.reasonResolved == reason:
        # Cancelling an already-cancelled task re-announces it (upstream does the same).
        worker = with_worker and run.workerGroup is not None
        effects.append(
            events.task_exception(record.status, run, record.definition, with_worker=worker)
        )
    return Outcome(record, tuple(effects), changed=changed)


# --- claiming ---------------------------------------------------------------------------


def claim(
    record: TaskRecord,
    run_id: int,
    *,
    worker_group: str,
    worker_id: str,
    now: datetime,
    claim_timeout_s: float,
    from_queue: bool = False,
) -> Outcome:
    """The last run, pending, becomes running for this worker. A repeat by the same worker
    succeeds again (claimTask); anyone else gets 409. `from_queue`: claimWork took the
    run's message from the pending queue; otherwise (claimTask) that message goes stale."""
    check_deadline(record, now)
    run = record.run(run_id)
    if run is None:
        raise errors.ResourceNotFound(f"Run {run_id} of task {record.task_id} not found")
    if run_id != len(record.runs) - 1:
        raise errors.RequestConflict(f"Run {run_id} of task {record.task_id} is not the last run")
    if run.state == RunState.RUNNING and (run.workerGroup, run.workerId) == (
        worker_group,
        worker_id,
    ):
        return _unchanged(record)
    if run.state != RunState.PENDING:
        raise errors.RequestConflict(
            f"Run {run_id} of task {record.task_id} is {run.state}, not pending"
        )
    taken_until = now + timedelta(seconds=claim_timeout_s)
    running = run.model_copy(
        update={
            "state": RunState.RUNNING,
            "workerGroup": worker_group,
            "workerId": worker_id,
            "takenUntil": taken_until,
            "started": now,
        }
    )
    claimed = _with_runs(record, [*record.runs[:-1], running])
    stale: tuple[Effect, ...] = (
        () if from_queue else (Dequeue(record.task_id, run_id, record.definition.taskQueueId),)
    )
    return Outcome(
        claimed,
        (
            *stale,
            ClaimStarted(
                record.definition.taskQueueId,
                record.task_id,
                run_id,
                worker_group,
                worker_id,
                now,
                taken_until,
            ),
            events.task_running(claimed.status, running, claimed.definition),
        ),
    )


def unclaim(
    record: TaskRecord, run_id: int, *, worker_group: str, worker_id: str, now: datetime
) -> Outcome:
    """claimWork's answer could not be delivered (the worker hung up as its task arrived):
    the run goes back to pending at once instead of waiting out its claim. Only while this
    worker still holds it; anything else (a report, an expiry) makes this a no-op."""
    run = record.run(run_id)
    if (
        run is None
        or run is not record.last_run
        or run.state != RunState.RUNNING
        or (run.workerGroup, run.workerId) != (worker_group, worker_id)
    ):
        return _unchanged(record)
    pending_again = _pending_run(run_id, run.reasonCreated, run.scheduled)
    released = _with_runs(record, [*record.runs[:-1], pending_again])
    return Outcome(
        released,
        (ClaimEnded(record.task_id, run_id), *_made_pending(released, pending_again)),
    )


def reclaim(record: TaskRecord, run_id: int, *, now: datetime, claim_timeout_s: float) -> Outcome:
    check_deadline(record, now)
    run = record.run(run_id)
    if run is None:
        raise errors.ResourceNotFound(f"Run {run_id} of task {record.task_id} not found")
    if run_id != len(record.runs) - 1 or run.state != RunState.RUNNING:
        raise errors.RequestConflict(
            f"Run {run_id} of task {record.task_id} is not running (it is {run.state}): it was "
            "resolved, cancelled or its claim expired; stop working on it"
        )
    taken_until = now + timedelta(seconds=claim_timeout_s)
    running = run.model_copy(update={"takenUntil": taken_until})
    return Outcome(
        _with_runs(record, [*record.runs[:-1], running]),
        (ClaimExtended(record.task_id, run_id, taken_until),),
    )


# --- resolving --------------------------------------------------------------------------


def resolve(record: TaskRecord, run_id: int, resolution: str, *, now: datetime) -> Outcome:
    """reportCompleted / reportFailed / reportException(reason). Repeating the same report
    succeeds and re-publishes; a different outcome, or a run never claimed, is 409."""
    run = record.run(run_id)
    if run is None:
        raise errors.ResourceNotFound(f"Run {run_id} of task {record.task_id} not found")
    state = {"completed": RunState.COMPLETED, "failed": RunState.FAILED}.get(
        resolution, RunState.EXCEPTION
    )
    if run.state == state and run.reasonResolved == resolution:
        repeat: list[Effect] = [ClaimEnded(record.task_id, run_id)]
        repeat += _resolution_events(record, run)
        retry_run = record.run(run_id + 1)
        if (
            retry_run is not None
            and retry_run is record.last_run
            and retry_run.state == RunState.PENDING
            and retry_run.reasonCreated in (ReasonCreated.RETRY, ReasonCreated.TASK_RETRY)
        ):
            # The report added this retry run: a repeat re-announces it too (§4, upstream).
            repeat += _made_pending(record, retry_run)
        return _unchanged(record, repeat)
    if run.state != RunState.RUNNING:
        raise errors.RequestConflict(
            f"Run {run_id} of task {record.task_id} is {run.state}"
            + (f" ({run.reasonResolved})" if run.reasonResolved else "")
            + f"; it cannot be resolved as {resolution}"
        )
    resolved_run = run.model_copy(
        update={"state": state, "reasonResolved": resolution, "resolved": now}
    )
    ended = ClaimEnded(record.task_id, run_id)
    runs = [*record.runs[:-1], resolved_run]
    retry = RETRYABLE.get(resolution)
    if retry is not None and record.retries_left > 0:
        retry_run = _pending_run(run_id + 1, retry, now)
        retried = _with_runs(record, [*runs, retry_run], retries_left=record.retries_left - 1)
        return Outcome(
            retried,
            (ended, *_resolution_events(retried, resolved_run), *_made_pending(retried, retry_run)),
        )
    resolved = _with_runs(record, runs, ever_resolved=True)
    return Outcome(
        resolved,
        # ever_resolved clears the task's open mark in the same write as its state, so a
        # resolver that hears task-completed finds the group's count already right.
        (ended, *_resolution_events(resolved, resolved_run)),
    )


def _resolution_events(record: TaskRecord, run: Run) -> list[Effect]:
    if run.state == RunState.EXCEPTION:
        return [events.task_exception(record.status, run, record.definition, with_worker=True)]
    return [events.task_resolved(record.status, run, record.definition)]


def expire_claim(record: TaskRecord, run_id: int, taken_until: datetime, now: datetime) -> Outcome:
    """The claim resolver: only if this run still holds exactly this claim (a reclaim moved
    takenUntil and so made this expiry a no-op) and the deadline has not passed."""
    run = record.run(run_id)
    if (
        run is None
        or run_id != len(record.runs) - 1
        or run.state != RunState.RUNNING
        or run.takenUntil != taken_until
        or taken_until > now
        or record.definition.deadline <= now
    ):
        return _unchanged(record)
    return resolve(record, run_id, ReasonResolved.CLAIM_EXPIRED, now=now)


# --- priority ---------------------------------------------------------------------------


def change_priority(
    record: TaskRecord, new_priority: Priority, now: datetime, *, announce: bool = True
) -> Outcome:
    """changeTaskPriority; a whole group's change is announced once, for the group."""
    check_deadline(record, now)
    if record.ever_resolved or not record.is_open:
        raise errors.RequestConflict(
            f"Task {record.task_id} has been resolved; its priority can no longer change"
        )
    old = record.definition.priority
    if new_priority == old:
        raise errors.RequestConflict(f"Task {record.task_id} already has priority {old}")
    changed = replace(
        record, definition=record.definition.model_copy(update={"priority": new_priority})
    )
    effects: list[Effect] = []
    last = changed.last_run
    if last is not None and last.state == RunState.PENDING:
        effects.append(
            Reprioritize(
                record.task_id,
                last.runId,
                priority_to_int(new_priority),
                record.definition.taskQueueId,
                record.definition.deadline,
            )
        )
    if announce:
        effects.append(
            events.task_priority_changed(changed.status, changed.definition, old, new_priority)
        )
    return Outcome(changed, tuple(effects))
