"""Task dependencies (reference §5), kept so that every step is a lookup by `_id`.

- Each task with dependencies carries, in its own document, `waiting`: one key per
  dependency not yet satisfied, and `depsLeft`, their number. Satisfying an edge is one
  conditional update of the dependent (`waiting.<required>` must still be there), so it
  happens exactly once however often it is repeated, and a fan-in of 10,000 costs O(1)
  per completed dependency.
- Each required task has a `dependents` document listing who waits for it, split by the
  dependents' `requires` (a failed or exception dependency satisfies only `all-resolved`).
  A resolution reads that one document and satisfies its dependents in batches.

createTask writes the dependents lists *before* reading the required tasks' states, so a
dependency resolving at the same moment is seen either by that read or by the resolver:
never by neither. Both paths use the same idempotent update.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import ReturnDocument

from shared.db import Database
from shared.models import RunState, TaskDefinition
from shared.timeutil import format_ts
from shared.transitions import TaskRecord

DEPENDENTS = "dependents"
SHARDS = 32
TASKS = "tasks"
BATCH = 1000
_LISTS = {"all-completed": "completed", "all-resolved": "resolved"}


def satisfies(required: TaskRecord, requires: str) -> bool:
    """Whether `required`'s resolution satisfies an edge of a dependent with `requires`.
    A run retried after an exception leaves the task open, so it does not count."""
    last = required.last_run
    if last is None or required.is_open:
        return False
    if last.state == RunState.COMPLETED:
        return True
    return requires == "all-resolved"


def problems(task: TaskDefinition, found: Mapping[str, TaskRecord]) -> list[str]:
    """createTask's dependency checks: every dependency exists and outlives our deadline."""
    missing = [d for d in task.dependencies if d not in found]
    expiring = [
        d for d in task.dependencies if d in found and found[d].definition.expires < task.deadline
    ]
    messages = []
    if missing:
        messages.append(f"The following dependencies are missing: {', '.join(missing)}")
    if expiring:
        messages.append(
            "The following dependencies expire before the task's deadline "
            f"{format_ts(task.deadline)}: {', '.join(expiring)}"
        )
    return messages


def waiting_fields(task: TaskDefinition) -> dict[str, Any]:
    """The fields a new task with dependencies is stored with."""
    return {"waiting": dict.fromkeys(task.dependencies, 1), "depsLeft": len(task.dependencies)}


def _shard_id(required: str, dependent: str) -> str:
    # Split across a few documents, so a fan-out of 10,000 never rewrites one big list
    # per new dependent (FerretDB rewrites the whole document on every update).
    return f"{required}/{zlib.crc32(dependent.encode()) % SHARDS}"


def _shard_ids(required: str) -> list[str]:
    return [f"{required}/{shard}" for shard in range(SHARDS)]


async def register(db: Database, dependent: str, task: TaskDefinition) -> None:
    """Add `dependent` to the dependents lists of each of its dependencies (idempotent)."""
    field = _LISTS[task.requires]
    for required in task.dependencies:
        await db[DEPENDENTS].update_one(
            {"_id": _shard_id(required, dependent)},
            {"$addToSet": {field: dependent}},
            upsert=True,
        )


async def unregister(db: Database, dependent: str, task: TaskDefinition) -> None:
    field = _LISTS[task.requires]
    for required in task.dependencies:
        await db[DEPENDENTS].update_one(
            {"_id": _shard_id(required, dependent)}, {"$pull": {field: dependent}}
        )


async def _lists(db: Database, required: str) -> list[dict[str, Any]]:
    return [d async for d in db[DEPENDENTS].find({"_id": {"$in": _shard_ids(required)}})]


async def forget(db: Database, required: str) -> None:
    """Drop the dependents lists of a task (it expired)."""
    await db[DEPENDENTS].delete_many({"_id": {"$in": _shard_ids(required)}})


async def satisfy(db: Database, required: str, dependents: Iterable[str]) -> list[str]:
    """Mark `required` satisfied for these dependents; return those now waiting for
    nothing and still unscheduled (ready to be scheduled). Safe to repeat."""
    ready: list[str] = []
    ids = list(dependents)
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        await db[TASKS].update_many(
            {"_id": {"$in": batch}, f"waiting.{required}": {"$exists": True}},
            {"$unset": {f"waiting.{required}": ""}, "$inc": {"depsLeft": -1}},
        )
        cursor = db[TASKS].find(
            {"_id": {"$in": batch}, "depsLeft": {"$lte": 0}, "runs.0": {"$exists": False}},
            {"_id": 1},
        )
        ready += [document["_id"] async for document in cursor]
    return ready


async def dependents_of(db: Database, required: str, *, completed: bool) -> list[str]:
    """Who a resolution of `required` satisfies: every dependent if it completed, only
    the `all-resolved` ones if it failed or ended in an exception."""
    found: list[str] = []
    for document in await _lists(db, required):
        found += document.get("resolved", [])
        if completed:
            found += document.get("completed", [])
    return found


async def all_dependents(db: Database, required: str) -> list[str]:
    found: set[str] = set()
    for document in await _lists(db, required):
        found.update(document.get("completed", []), document.get("resolved", []))
    return sorted(found)


async def waiting_count(db: Database, dependent: str) -> int | None:
    document = await db[TASKS].find_one({"_id": dependent}, {"depsLeft": 1})
    return None if document is None else int(document.get("depsLeft", 0))


def plan(
    satisfied_by: Mapping[str, Iterable[str]],
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split a batch of resolutions (required → the dependents it satisfies) into the
    dependents satisfied by exactly one of them, grouped by that required task (done with
    one update_many each), and those satisfied by several, with their required tasks (one
    conditional update each, removing all of them at once). Pure."""
    by_dependent: dict[str, list[str]] = {}
    for required, dependents in satisfied_by.items():
        for dependent in dependents:
            by_dependent.setdefault(dependent, []).append(required)
    single: dict[str, list[str]] = {}
    multi: dict[str, list[str]] = {}
    for dependent, requireds in by_dependent.items():
        if len(requireds) == 1:
            single.setdefault(requireds[0], []).append(dependent)
        else:
            multi[dependent] = sorted(requireds)
    return single, multi


async def satisfy_several(db: Database, dependent: str, requireds: list[str]) -> bool:
    """Mark several required tasks satisfied for one dependent in one update (a fan-in
    batch); returns whether it is now ready. Exactly once per edge: the update demands
    every key it removes, and is retried on a fresh read if another resolver got there."""
    for _attempt in range(20):
        document = await db[TASKS].find_one({"_id": dependent}, {"waiting": 1, "runs": 1})
        if document is None:
            return False
        present = [r for r in requireds if r in (document.get("waiting") or {})]
        if not present:
            return _ready(await db[TASKS].find_one({"_id": dependent}))
        after = await db[TASKS].find_one_and_update(
            {"_id": dependent, **{f"waiting.{r}": {"$exists": True} for r in present}},
            {"$unset": {f"waiting.{r}": "" for r in present}, "$inc": {"depsLeft": -len(present)}},
            return_document=ReturnDocument.AFTER,
        )
        if after is not None:  # read back in the same step: others may have counted too
            return _ready(after)
    raise RuntimeError(f"dependent {dependent} kept changing under us")


def _ready(document: Mapping[str, Any] | None) -> bool:
    return (
        document is not None and int(document.get("depsLeft", 0)) <= 0 and not document.get("runs")
    )
