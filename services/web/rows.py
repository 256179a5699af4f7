"""What the pages show of a task, from the API's `{status, task}` items. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.web.profiler import RunTiming, TaskTiming
from shared.timeutil import parse_ts

STATES = ("unscheduled", "pending", "running", "completed", "failed", "exception")
RESOLVED = ("completed", "failed", "exception")


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    name: str
    state: str
    task_queue_id: str
    runs: int
    duration_s: float | None
    dependencies: tuple[str, ...]


def _duration(runs: list[dict[str, Any]]) -> float | None:
    if not runs or not runs[-1].get("started") or not runs[-1].get("resolved"):
        return None
    last = runs[-1]
    return round((parse_ts(last["resolved"]) - parse_ts(last["started"])).total_seconds(), 1)


def task_row(item: dict[str, Any]) -> TaskRow:
    status, task = item["status"], item.get("task", {})
    return TaskRow(
        task_id=status["taskId"],
        name=str(task.get("metadata", {}).get("name", "")),
        state=str(status.get("state", "unscheduled")),
        task_queue_id=str(status.get("taskQueueId", "")),
        runs=len(status.get("runs", [])),
        duration_s=_duration(status.get("runs", [])),
        dependencies=tuple(task.get("dependencies", [])),
    )


def counts(rows: Iterable[TaskRow]) -> dict[str, int]:
    tally = Counter(row.state for row in rows)
    return {state: tally.get(state, 0) for state in STATES}


def timing(item: dict[str, Any]) -> TaskTiming:
    status, task = item["status"], item.get("task", {})
    runs = [
        RunTiming(
            run["runId"],
            run["state"],
            parse_ts(run["scheduled"]),
            parse_ts(run["started"]) if run.get("started") else None,
            parse_ts(run["resolved"]) if run.get("resolved") else None,
        )
        for run in status.get("runs", [])
    ]
    created: datetime = parse_ts(task["created"]) if task.get("created") else runs[0].scheduled
    return TaskTiming(
        status["taskId"],
        str(task.get("metadata", {}).get("name", "")),
        created,
        tuple(task.get("dependencies", [])),
        runs,
    )
