"""Where a task group's time went: each run's phases and the critical path. Pure.

Phases of a task: waiting for dependencies (created → first run scheduled), then per run
pending (scheduled → started: waiting for a worker) and running (started → resolved).

The critical path is the chain that decided when the group finished: start at the task
that resolved last, step to the dependency that resolved last before it was scheduled
(the one that released it), and repeat until a task had no such dependency. Upstream's
profiler shows the timeline only; this chain, with the share spent pending, is what
tells a CI-graph author whether to buy workers or shorten tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class RunTiming:
    run_id: int
    state: str
    scheduled: datetime
    started: datetime | None
    resolved: datetime | None


@dataclass(frozen=True)
class TaskTiming:
    task_id: str
    name: str
    created: datetime
    dependencies: Sequence[str]
    runs: Sequence[RunTiming]

    @property
    def scheduled(self) -> datetime | None:
        return self.runs[0].scheduled if self.runs else None

    @property
    def finished(self) -> datetime | None:
        return self.runs[-1].resolved if self.runs else None

    def pending_s(self, until: datetime) -> float:
        """Time spent waiting for a worker, over all runs (open runs count until `until`)."""
        total = 0.0
        for run in self.runs:
            end = run.started or (run.resolved if run.resolved else until)
            total += max(0.0, (end - run.scheduled).total_seconds())
        return total

    def running_s(self, until: datetime) -> float:
        total = 0.0
        for run in self.runs:
            if run.started is not None:
                total += max(0.0, ((run.resolved or until) - run.started).total_seconds())
        return total

    def waiting_s(self) -> float:
        """Waiting for dependencies: from creation until the first run was scheduled."""
        if self.scheduled is None:
            return 0.0
        return max(0.0, (self.scheduled - self.created).total_seconds())


@dataclass(frozen=True)
class CriticalPath:
    task_ids: list[str] = field(default_factory=list)
    total_s: float = 0.0
    waiting_for_worker_s: float = 0.0
    running_s: float = 0.0
    waiting_for_dependencies_s: float = 0.0


def critical_path(tasks: Mapping[str, TaskTiming]) -> CriticalPath:
    finished = {t: task.finished for t, task in tasks.items() if task.finished is not None}
    if not finished:
        return CriticalPath()
    end_id = max(finished, key=lambda t: (finished[t], t))
    chain = [end_id]
    seen = {end_id}
    current = tasks[end_id]
    while True:
        released_by = [
            dep
            for dep in current.dependencies
            if dep in finished
            and dep not in seen
            and (current.scheduled is None or finished[dep] <= current.scheduled)
        ]
        if not released_by:
            break
        previous = max(released_by, key=lambda t: (finished[t], t))
        chain.append(previous)
        seen.add(previous)
        current = tasks[previous]
    chain.reverse()
    end = finished[end_id]
    first = tasks[chain[0]]
    start = first.created
    pending = sum(tasks[t].pending_s(end) for t in chain)
    running = sum(tasks[t].running_s(end) for t in chain)
    total = max(0.0, (end - start).total_seconds())
    return CriticalPath(
        chain,
        round(total, 3),
        round(pending, 3),
        round(running, 3),
        round(max(0.0, total - pending - running), 3),
    )


@dataclass(frozen=True)
class Bar:
    """One horizontal segment of the timeline, in percent of the group's span."""

    kind: str  # "waiting" | "pending" | "running-<state>"
    left: float
    width: float
    title: str


def timeline(tasks: Sequence[TaskTiming], now: datetime) -> tuple[datetime, float, list[list[Bar]]]:
    """Each task's bars, positioned within the span from the earliest creation to the
    latest resolution (or `now` if something is still open). Tasks in `tasks`' order."""
    if not tasks:
        return now, 0.0, []
    start = min(t.created for t in tasks)
    ends = [r.resolved or now for t in tasks for r in t.runs] or [now]
    span = max((max(ends) - start).total_seconds(), 0.001)

    def pct(moment: datetime) -> float:
        return round(100 * (moment - start).total_seconds() / span, 3)

    rows = []
    for task in tasks:
        bars: list[Bar] = []
        if task.scheduled is not None and task.scheduled > task.created:
            bars.append(
                Bar(
                    "waiting",
                    pct(task.created),
                    pct(task.scheduled) - pct(task.created),
                    f"waiting for dependencies {task.waiting_s():.1f}s",
                )
            )
        for run in task.runs:
            pending_end = run.started or run.resolved or now
            waited = (pending_end - run.scheduled).total_seconds()
            bars.append(
                Bar(
                    "pending",
                    pct(run.scheduled),
                    pct(pending_end) - pct(run.scheduled),
                    f"run {run.run_id} pending {waited:.1f}s",
                )
            )
            if run.started is not None:
                end = run.resolved or now
                bars.append(
                    Bar(
                        f"running-{run.state}",
                        pct(run.started),
                        pct(end) - pct(run.started),
                        f"run {run.run_id} {run.state} {(end - run.started).total_seconds():.1f}s",
                    )
                )
        rows.append(bars)
    return start, span, rows
