"""Task dependencies (reference §5), kept so that every step is a lookup by `_id`.

- A task with a few dependencies carries, in its own document, `waiting`: one key per
  dependency not yet satisfied, and `depsLeft`, their number. Satisfying an edge is one
  conditional update of the dependent (`waiting.<required>` must still be there), so it
  happens exactly once however often it is repeated.
- A task with many dependencies (a fan-in) keeps them in small *wait shards* of about
  SHARD_SIZE each (`waits` collection, `<dependent>#<k>`), shaped like the above; its own
  `waiting` then lists its shards (`#<k>`). An edge empties a key of one small shard, and
  only the edge that empties a shard touches the dependent: a fan-in of 10,000 costs O(1)
  per completed dependency, never a rewrite of a 10,000-key document (FerretDB rewrites
  the whole document on every update).
- Each required task has `dependents` lists naming the *targets* waiting for it: the
  dependent itself, or its shard (`<dependent>#<k>`), split by the dependents' `requires`
  (a failed or exception dependency satisfies only `all-resolved`).

createTask writes the shards and the dependents lists *before* reading the required
tasks' states, so a dependency resolving at the same moment is seen either by that read
or by the resolver: never by neither. Both paths use the same idempotent updates.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError

from shared.db import DUPLICATE_KEY, Database
from shared.models import RunState, TaskDefinition
from shared.timeutil import format_ts
from shared.transitions import TaskRecord

DEPENDENTS = "dependents"
WAITS = "waits"
SHARDS = 32  # dependents lists per required task
SHARD_SIZE = 64  # dependencies per wait shard; a task with at most this many keeps them inline
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


def _wait_shards(task: TaskDefinition) -> int:
    count = len(task.dependencies)
    return 0 if count <= SHARD_SIZE else -(-count // SHARD_SIZE)


def target(dependent: str, task: TaskDefinition, required: str) -> str:
    """Where the edge `dependent` → `required` is counted: the dependent itself, or (for a
    task with many dependencies) one of its wait shards."""
    shards = _wait_shards(task)
    if not shards:
        return dependent
    return f"{dependent}#{zlib.crc32(required.encode()) % shards}"


def dependent_of(target_id: str) -> str:
    return target_id.partition("#")[0]


def _shard_contents(dependent: str, task: TaskDefinition) -> dict[str, list[str]]:
    contents: dict[str, list[str]] = {}
    for required in task.dependencies:
        contents.setdefault(target(dependent, task, required), []).append(required)
    return contents


def waiting_fields(dependent: str, task: TaskDefinition) -> dict[str, Any]:
    """The fields a new task with dependencies is stored with: what it waits for (its
    dependencies, or its wait shards as `#<k>`) and how many."""
    if not _wait_shards(task):
        return {"waiting": dict.fromkeys(task.dependencies, 1), "depsLeft": len(task.dependencies)}
    keys = [f"#{shard.partition('#')[2]}" for shard in _shard_contents(dependent, task)]
    return {"waiting": dict.fromkeys(keys, 1), "depsLeft": len(keys)}


async def create_shards(db: Database, dependent: str, task: TaskDefinition) -> None:
    """Store a many-dependency task's wait shards (idempotent; before `register`)."""
    if not _wait_shards(task):
        return
    documents = [
        {"_id": shard, "waiting": dict.fromkeys(requireds, 1), "depsLeft": len(requireds)}
        for shard, requireds in _shard_contents(dependent, task).items()
    ]
    try:
        await db[WAITS].insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        if any(error.get("code") != DUPLICATE_KEY for error in exc.details["writeErrors"]):
            raise  # anything but "already there" (a repeated createTask) is a real failure


async def forget_waits(db: Database, dependent: str, task: TaskDefinition) -> None:
    """Drop a task's wait shards (it expired, or its creation was taken back)."""
    if _wait_shards(task):
        shards = list(_shard_contents(dependent, task))
        await db[WAITS].delete_many({"_id": {"$in": shards}})


def _list_shard(required: str, dependent: str) -> str:
    # Split across a few documents, so a fan-out of 10,000 never rewrites one big list
    # per new dependent (FerretDB rewrites the whole document on every update).
    return f"{required}/{zlib.crc32(dependent.encode()) % SHARDS}"


def _list_shards(required: str) -> list[str]:
    return [f"{required}/{shard}" for shard in range(SHARDS)]


async def register(db: Database, dependent: str, task: TaskDefinition) -> None:
    """Add `dependent` (or its shards) to the dependents lists of each of its dependencies
    (idempotent)."""
    field = _LISTS[task.requires]
    for required in task.dependencies:
        await db[DEPENDENTS].update_one(
            {"_id": _list_shard(required, dependent)},
            {"$addToSet": {field: target(dependent, task, required)}},
            upsert=True,
        )


async def unregister(db: Database, dependent: str, task: TaskDefinition) -> None:
    field = _LISTS[task.requires]
    for required in task.dependencies:
        await db[DEPENDENTS].update_one(
            {"_id": _list_shard(required, dependent)},
            {"$pull": {field: target(dependent, task, required)}},
        )
    await forget_waits(db, dependent, task)


async def _lists(db: Database, required: str) -> list[dict[str, Any]]:
    return [d async for d in db[DEPENDENTS].find({"_id": {"$in": _list_shards(required)}})]


async def forget(db: Database, required: str) -> None:
    """Drop the dependents lists of a task (it expired)."""
    await db[DEPENDENTS].delete_many({"_id": {"$in": _list_shards(required)}})


async def dependents_of(db: Database, required: str, *, completed: bool) -> list[str]:
    """The targets a resolution of `required` satisfies: every dependent if it completed,
    only the `all-resolved` ones if it failed or ended in an exception."""
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
    return sorted({dependent_of(target_id) for target_id in found})


async def waiting_count(db: Database, dependent: str) -> int | None:
    document = await db[TASKS].find_one({"_id": dependent}, {"depsLeft": 1})
    return None if document is None else int(document.get("depsLeft", 0))


def plan(
    satisfied_by: Mapping[str, Iterable[str]],
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split a batch of resolutions (required → the targets it satisfies) into the targets
    satisfied by exactly one of them, grouped by that required task (done with one
    update_many each), and those satisfied by several, with their required tasks (one
    conditional update each, removing all of them at once). Pure."""
    by_target: dict[str, list[str]] = {}
    for required, targets in satisfied_by.items():
        for target_id in targets:
            by_target.setdefault(target_id, []).append(required)
    single: dict[str, list[str]] = {}
    multi: dict[str, list[str]] = {}
    for target_id, requireds in by_target.items():
        if len(requireds) == 1:
            single.setdefault(requireds[0], []).append(target_id)
        else:
            multi[target_id] = sorted(set(requireds))
    return single, multi


def task_edges(
    satisfied_by: Mapping[str, Iterable[str]], emptied: Iterable[str]
) -> dict[str, list[str]]:
    """The edges to count down on tasks: those kept on the task itself, and one `#<k>`
    edge per wait shard that emptied. Pure."""
    edges: dict[str, list[str]] = {}
    for required, targets in satisfied_by.items():
        inline = [t for t in targets if "#" not in t]
        if inline:
            edges.setdefault(required, []).extend(inline)
    for shard in emptied:
        dependent, _, number = shard.partition("#")
        edges.setdefault(f"#{number}", []).append(dependent)
    return edges


async def empty_shards(
    db: Database, satisfied_by: Mapping[str, Iterable[str]]
) -> dict[str, list[str]]:
    """Count the edges kept in wait shards down; return the edges left to count down on
    tasks (see task_edges). Safe to repeat: a shard already emptied (or already passed on
    and deleted) is not reported again unless it still waits in its task."""
    sharded = {r: [t for t in targets if "#" in t] for r, targets in satisfied_by.items()}
    single, several = plan({r: targets for r, targets in sharded.items() if targets})
    emptied: list[str] = []
    for required, shards in single.items():
        emptied += await satisfy(db, required, shards, collection=WAITS)
    for shard, requireds in several.items():
        if await satisfy_several(db, shard, requireds, collection=WAITS):
            emptied.append(shard)
    return task_edges(satisfied_by, emptied)


async def passed_on(db: Database, shards: Iterable[str]) -> None:
    """Emptied shards whose `#<k>` edge has been counted on their task: drop them. (A
    redelivery then finds no shard, and the task no longer waits for it: nothing to do.)"""
    ids = list(shards)
    if ids:
        await db[WAITS].delete_many({"_id": {"$in": ids}, "depsLeft": {"$lte": 0}})


async def satisfy_edges(db: Database, satisfied_by: Mapping[str, Iterable[str]]) -> list[str]:
    """Count down every edge (required → targets), shards first; return the dependents
    now waiting for nothing and still unscheduled. Safe to repeat."""
    return await count_down_tasks(db, await empty_shards(db, satisfied_by))


async def count_down_tasks(db: Database, edges: Mapping[str, Iterable[str]]) -> list[str]:
    """Count down edges on tasks (`task_edges`); return the tasks now ready. Drops the
    wait shards whose edges these were."""
    single, several = plan(edges)
    ready: list[str] = []
    for required, dependents in single.items():
        ready += await satisfy(db, required, dependents)
    for dependent, requireds in several.items():
        if await satisfy_several(db, dependent, requireds):
            ready.append(dependent)
    await passed_on(db, emptied_shards(edges))
    return ready


def emptied_shards(edges: Mapping[str, Iterable[str]]) -> list[str]:
    """The shard ids behind the `#<k>` edges of `task_edges`. Pure."""
    return [
        f"{dependent}{key}"
        for key, dependents in edges.items()
        if key.startswith("#")
        for dependent in dependents
    ]


async def satisfy(
    db: Database, required: str, dependents: Iterable[str], *, collection: str = TASKS
) -> list[str]:
    """Mark `required` satisfied for these dependents (tasks, or wait shards); return
    those now waiting for nothing (and, for tasks, still unscheduled). Safe to repeat."""
    ready: list[str] = []
    ids = list(dependents)
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        await db[collection].update_many(
            {"_id": {"$in": batch}, f"waiting.{required}": {"$exists": True}},
            {"$unset": {f"waiting.{required}": ""}, "$inc": {"depsLeft": -1}},
        )
        cursor = db[collection].find(
            {"_id": {"$in": batch}, "depsLeft": {"$lte": 0}, "runs.0": {"$exists": False}},
            {"_id": 1},
        )
        ready += [document["_id"] async for document in cursor]
    return ready


async def satisfy_several(
    db: Database, dependent: str, requireds: list[str], *, collection: str = TASKS
) -> bool:
    """Mark several required tasks satisfied for one dependent (or shard) in one update (a
    fan-in batch); returns whether it is now ready. Exactly once per edge: the update
    demands every key it removes, and is retried on a fresh read if another resolver got
    there."""
    for _attempt in range(20):
        document = await db[collection].find_one({"_id": dependent}, {"waiting": 1, "runs": 1})
        if document is None:
            return False
        present = [r for r in requireds if r in (document.get("waiting") or {})]
        if not present:
            return _ready(await db[collection].find_one({"_id": dependent}))
        after = await db[collection].find_one_and_update(
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


async def unpassed_shards(db: Database) -> list[str]:
    """Emptied shards never passed on to their task (a crash in between, with nothing left
    to redeliver): the sweep's work. Reads the whole collection on FerretDB."""
    cursor = db[WAITS].find({"depsLeft": {"$lte": 0}}, {"_id": 1})
    return [document["_id"] async for document in cursor]
