"""A task group's dependency graph laid out in columns by depth. Pure.

Depth is the longest chain of in-group dependencies above a task, so every edge points
right. Dependencies outside the group are not drawn (their tasks are not on the page).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

COLUMN_W = 200
ROW_H = 34
NODE_W = 170
NODE_H = 24
MARGIN = 10


@dataclass(frozen=True)
class Node:
    task_id: str
    depth: int
    row: int
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    source: str  # the dependency
    target: str  # the dependent
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True)
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def depths(dependencies: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Longest in-group path to each task. Iterative (deep chains must not hit Python's
    recursion limit); a cycle, which the queue cannot produce, is cut rather than looped."""
    result: dict[str, int] = {}
    for start in dependencies:
        if start in result:
            continue
        stack: list[tuple[str, bool]] = [(start, False)]
        on_path: set[str] = set()
        while stack:
            task_id, expanded = stack.pop()
            if expanded:
                on_path.discard(task_id)
                parents = [d for d in dependencies[task_id] if d in dependencies and d != task_id]
                result[task_id] = 1 + max((result.get(d, -1) for d in parents), default=-1)
                continue
            if task_id in result or task_id in on_path:
                continue
            on_path.add(task_id)
            stack.append((task_id, True))
            for dep in dependencies[task_id]:
                if dep in dependencies and dep not in result and dep not in on_path:
                    stack.append((dep, False))
    return result


def layout(dependencies: Mapping[str, Sequence[str]], order: Sequence[str] = ()) -> Layout:
    """Positions for every task in `dependencies` (taskId → its dependencies). Within a
    column tasks keep `order` (e.g. by name), then taskId."""
    depth = depths(dependencies)
    rank = {task_id: i for i, task_id in enumerate(order)}
    columns: dict[int, list[str]] = {}
    for task_id in sorted(depth, key=lambda t: (rank.get(t, len(rank)), t)):
        columns.setdefault(depth[task_id], []).append(task_id)
    nodes: dict[str, Node] = {}
    for column, members in columns.items():
        for row, task_id in enumerate(members):
            nodes[task_id] = Node(
                task_id, column, row, MARGIN + column * COLUMN_W, MARGIN + row * ROW_H
            )
    edges = [
        Edge(
            dep,
            task_id,
            nodes[dep].x + NODE_W,
            nodes[dep].y + NODE_H // 2,
            node.x,
            node.y + NODE_H // 2,
        )
        for task_id, node in nodes.items()
        for dep in dict.fromkeys(dependencies[task_id])
        if dep in nodes and dep != task_id
    ]
    width = MARGIN * 2 + (max(columns, default=0)) * COLUMN_W + NODE_W
    height = MARGIN * 2 + max((len(m) for m in columns.values()), default=0) * ROW_H
    return Layout(list(nodes.values()), edges, width, height)
