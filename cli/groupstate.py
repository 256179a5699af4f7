"""What `group watch` knows about each task of a group, merged from listings and events
in any order; and when the watch is over. Pure functions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RESOLVED = frozenset({"completed", "failed", "exception"})
_RUN_RANK = {"pending": 0, "running": 1, "completed": 2, "failed": 2, "exception": 2}
BLOCKED = "blocked"  # unscheduled, and a required dependency can no longer complete


def progress_key(status: Mapping[str, Any]) -> tuple[int, int]:
    """Runs are only appended and a run's state only moves forward, so this orders any
    two statuses of one task by age (a stale event never overwrites a newer listing)."""
    runs = status.get("runs") or []
    if not runs:
        return (0, -1)
    return (len(runs), _RUN_RANK.get(runs[-1].get("state", ""), 0))


@dataclass
class TaskView:
    task_id: str
    status: dict[str, Any]
    name: str = ""
    dependencies: tuple[str, ...] = ()
    requires: str = "all-completed"

    @property
    def state(self) -> str:
        return str(self.status.get("state", "unscheduled"))

    @property
    def reason(self) -> str:
        runs = self.status.get("runs") or []
        return str(runs[-1].get("reasonResolved", "")) if runs else ""


@dataclass
class GroupState:
    tasks: dict[str, TaskView] = field(default_factory=dict)

    def apply_listing(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Entries of listTaskGroup: `{status, task}`."""
        for entry in entries:
            status, task = dict(entry["status"]), entry.get("task") or {}
            view = self.tasks.get(status["taskId"])
            if view is None:
                view = self.tasks[status["taskId"]] = TaskView(status["taskId"], status)
            elif progress_key(status) >= progress_key(view.status):
                view.status = status
            view.name = (task.get("metadata") or {}).get("name", view.name)
            view.dependencies = tuple(task.get("dependencies") or ())
            view.requires = task.get("requires", "all-completed")

    def apply_status(self, status: Mapping[str, Any]) -> bool:
        """A status from an event. True when the task was unknown (a listing will name it)."""
        view = self.tasks.get(status["taskId"])
        if view is None:
            self.tasks[status["taskId"]] = TaskView(status["taskId"], dict(status))
            return True
        if progress_key(status) >= progress_key(view.status):
            view.status = dict(status)
        return False

    def blocked(self) -> set[str]:
        """Unscheduled tasks needing all dependencies completed, one of which (in the group)
        failed, ended in exception or is itself blocked: they would wait for their deadline."""
        blocked: set[str] = set()
        changed = True
        while changed:
            changed = False
            for view in self.tasks.values():
                if view.task_id in blocked or view.state != "unscheduled":
                    continue
                if view.requires != "all-completed":
                    continue
                for dependency in view.dependencies:
                    other = self.tasks.get(dependency)
                    if other is None or dependency == view.task_id:
                        continue
                    if other.state in ("failed", "exception") or dependency in blocked:
                        blocked.add(view.task_id)
                        changed = True
                        break
        return blocked

    def effective_states(self) -> dict[str, str]:
        blocked = self.blocked()
        return {
            task_id: BLOCKED if task_id in blocked else view.state
            for task_id, view in self.tasks.items()
        }

    def counts(self) -> Counter[str]:
        return Counter(self.effective_states().values())

    def finished(self) -> bool:
        """Every task resolved, or blocked behind a failure."""
        states = self.effective_states()
        return bool(states) and all(s in RESOLVED or s == BLOCKED for s in states.values())

    def succeeded(self) -> bool:
        return bool(self.tasks) and all(v.state == "completed" for v in self.tasks.values())


def summary_line(counts: Counter[str]) -> str:
    total = sum(counts.values())
    order = ("completed", "failed", "exception", BLOCKED, "running", "pending", "unscheduled")
    parts = [f"{counts[state]} {state}" for state in order if counts.get(state)]
    return f"{total} tasks: " + ", ".join(parts)
