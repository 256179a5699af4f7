"""Graph files: tasks named symbolically, planned into slugids in dependency order.

```yaml
defaults: {taskQueueId: local/demo}        # merged into every task (the task wins)
tasks:
  fetch: {payload: {command: [echo, hi]}}
  build: {payload: {...}, dependencies: [fetch]}
```
Pure functions: planning is tested without a queue.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cli.definitions import fill_task
from cli.documents import require_mapping
from cli.errors import EXIT_USAGE, CliError


@dataclass(frozen=True)
class PlannedTask:
    name: str
    task_id: str
    dependencies: tuple[str, ...]  # names in the graph
    definition: dict[str, Any]  # complete, with taskIds in `dependencies`


@dataclass(frozen=True)
class GraphPlan:
    task_group_id: str
    tasks: tuple[PlannedTask, ...]  # topological order: every task after its dependencies

    def ids(self) -> dict[str, str]:
        return {task.name: task.task_id for task in self.tasks}


def merge_defaults(defaults: Mapping[str, Any], task: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key (recursively); anything else in `task` replaces."""
    merged = copy.deepcopy(dict(defaults))
    for key, value in task.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_defaults(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def topological_order(dependencies: Mapping[str, Sequence[str]]) -> list[str]:
    """Names with each after all of its dependencies; ties keep the file's order.
    Unknown names and cycles raise a CliError that names them."""
    for name, required in dependencies.items():
        for dependency in required:
            if dependency not in dependencies:
                raise CliError(
                    f"task {name!r} depends on {dependency!r}, which is not in the graph",
                    EXIT_USAGE,
                )
    order: list[str] = []
    placed: set[str] = set()
    remaining = list(dependencies)
    while remaining:
        ready = [n for n in remaining if all(d in placed for d in dependencies[n])]
        if not ready:
            raise CliError(f"dependency cycle: {' -> '.join(find_cycle(dependencies))}", EXIT_USAGE)
        order.extend(ready)
        placed.update(ready)
        remaining = [n for n in remaining if n not in placed]
    return order


def find_cycle(dependencies: Mapping[str, Sequence[str]]) -> list[str]:
    """One cycle, as a path that ends where it starts (empty if there is none)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for dependency in dependencies.get(name, ()):
            if state.get(dependency) == 1:
                return [*path[path.index(dependency) :], dependency]
            if dependency not in state and (cycle := visit(dependency)):
                return cycle
        path.pop()
        state[name] = 2
        return []

    for name in dependencies:
        if name not in state and (cycle := visit(name)):
            return cycle
    return []


def _dependency_names(name: str, task: Mapping[str, Any]) -> tuple[str, ...]:
    value = task.get("dependencies", [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise CliError(f"task {name!r}: dependencies must be a list of task names", EXIT_USAGE)
    if name in value:
        raise CliError(f"dependency cycle: {name} -> {name}", EXIT_USAGE)
    return tuple(dict.fromkeys(value))


def plan_graph(
    document: Any,
    *,
    now: datetime.datetime,
    new_id: Callable[[], str],
    owner: str,
    source: str,
    task_group_id: str | None = None,
) -> GraphPlan:
    """Every task merged with `defaults`, given a slugid (or its own `taskId`), times and
    metadata filled, dependency names turned into taskIds, one task group for all."""
    graph = require_mapping(document, "the graph file")
    unknown = set(graph) - {"tasks", "defaults", "taskGroupId"}
    if unknown:
        raise CliError(
            f"the graph file has unknown top-level keys {sorted(unknown)} "
            "(expected tasks, defaults, taskGroupId)",
            EXIT_USAGE,
        )
    defaults = require_mapping(graph.get("defaults", {}), "defaults")
    tasks = require_mapping(graph.get("tasks"), "tasks")
    if not tasks:
        raise CliError("the graph has no tasks", EXIT_USAGE)
    group = task_group_id or graph.get("taskGroupId") or new_id()
    merged = {
        name: merge_defaults(defaults, require_mapping(task, f"task {name!r}"))
        for name, task in tasks.items()
    }
    dependencies = {name: _dependency_names(name, task) for name, task in merged.items()}
    ids = {name: str(task.pop("taskId", None) or new_id()) for name, task in merged.items()}
    planned = []
    for name in topological_order(dependencies):
        definition = merged[name]
        definition["dependencies"] = [ids[d] for d in dependencies[name]]
        definition["taskGroupId"] = group
        complete = fill_task(
            definition, now=now, name=name, owner=owner, source=source, where=f"task {name!r}"
        )
        planned.append(PlannedTask(name, ids[name], dependencies[name], complete))
    return GraphPlan(group, tuple(planned))
