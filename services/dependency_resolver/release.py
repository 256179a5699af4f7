"""Scheduling the dependents of one resolved task in bulk (a fan-out).

When a resolution is a dependent's last edge, counting it down and scheduling run 0 are
one change of the dependent, and a whole batch of them is stored with one conditional
`update_many` per group of identical changes, instead of a read-decide-write round trip
per dependent. The decision is still the pure transition's (`transitions.schedule`),
and the stored change is exactly the one `TaskStore.mutate` would store, conditioned on
the version and the waiting edge that were read.

The effects (run 0 queued, task-pending published) are carried out right after, in
bulk, without an outbox: the resolution that caused them is acknowledged only once they
are out, so a crash in between means redelivery, and a redelivered resolution announces
again every dependent it finds scheduled and still pending (at least once, like every
event). A dependent that changed under us is counted down the ordinary way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared import dependencies, transitions
from shared.taskstore import TaskStore, from_document, update_for
from shared.transitions import Effect, Outcome, TaskRecord

CHUNK = 500  # dependents read, stored and announced together


@dataclass
class ReleasePlan:
    """What to do with each dependent of a resolved task (`plan_release`)."""

    schedule: list[tuple[TaskRecord, Outcome]] = field(default_factory=list)
    count_down: list[str] = field(default_factory=list)
    announce: list[TaskRecord] = field(default_factory=list)


@dataclass(frozen=True)
class BulkUpdate:
    filter: dict[str, Any]
    update: dict[str, Any]
    outcomes: list[Outcome]


@dataclass(frozen=True)
class Released:
    scheduled: int  # dependents this call scheduled in bulk
    ready: list[str]  # dependents now waiting for nothing, to schedule one by one


def plan_release(
    documents: Iterable[Mapping[str, Any]], required: str, now: datetime
) -> ReleasePlan:
    """Per dependent: `required` is its last edge → schedule it with the countdown; it
    waits for more (or is past its deadline: the one-by-one path refuses it) → plain
    countdown; it no longer waits for `required` and has one run → announce that run
    again if it is still pending (a repeat after a crash). Pure."""
    plan = ReleasePlan()
    for document in documents:
        record = from_document(document)
        waiting = document.get("waiting") or {}
        if required in waiting:
            last_edge = len(waiting) == 1 and document.get("depsLeft") == 1
            if last_edge and not record.runs and record.definition.deadline > now:
                plan.schedule.append((record, transitions.schedule(record, now)))
            else:
                plan.count_down.append(record.task_id)
        elif not waiting and len(record.runs) == 1:
            plan.announce.append(record)
    return plan


def bulk_updates(
    required: str, scheduled: list[tuple[TaskRecord, Outcome]], now: datetime
) -> list[BulkUpdate]:
    """Group the dependents whose stored change is identical (same version read, same
    run 0) into one conditional update each: the task's own update (`update_for`, as
    `TaskStore.mutate` stores it, without an outbox) plus the countdown of its last
    edge. Pure."""
    groups: dict[str, BulkUpdate] = {}
    for before, outcome in scheduled:
        update = update_for(before, outcome.record, [], now)
        update["$set"]["depsLeft"] = 0
        update["$unset"] = {**update.get("$unset", {}), f"waiting.{required}": ""}
        key = repr(update)
        if key not in groups:
            condition = {
                "version": before.version,
                f"waiting.{required}": {"$exists": True},
                "depsLeft": 1,
                "runs.0": {"$exists": False},
            }
            groups[key] = BulkUpdate({"_id": {"$in": []}, **condition}, update, [])
        groups[key].filter["_id"]["$in"].append(before.task_id)
        groups[key].outcomes.append(outcome)
    return list(groups.values())


async def release(
    store: TaskStore, required: str, dependents: list[str], now: datetime
) -> Released:
    """Count `required` down for these dependents (tasks, not wait shards), scheduling
    in bulk those for which it was the last edge; carry out their effects."""
    scheduled, ready = 0, []
    announcing: asyncio.Task[None] | None = None  # the previous chunk's, overlapping ours
    # Dates go through the database at millisecond precision: decide with what is stored.
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    try:
        for start in range(0, len(dependents), CHUNK):
            count, chunk_ready, effects = await _store_chunk(
                store, required, dependents[start : start + CHUNK], now
            )
            scheduled, ready = scheduled + count, ready + chunk_ready
            if announcing is not None:
                await announcing
            announcing = asyncio.create_task(store.outbox.perform_batch(effects))
        if announcing is not None:
            await announcing
    except BaseException:
        if announcing is not None:
            announcing.cancel()  # the resolution is redelivered and announces again
        raise
    return Released(scheduled, ready)


async def _store_chunk(
    store: TaskStore, required: str, chunk: list[str], now: datetime
) -> tuple[int, list[str], list[Effect]]:
    """Read, decide and store one chunk; return how many it scheduled, the dependents
    now ready to schedule one by one, and the effects to carry out."""
    scheduled, ready = 0, []
    documents = [d async for d in store.tasks.find({"_id": {"$in": chunk}})]
    plan = plan_release(documents, required, now)
    effects: list[Effect] = [e for r in plan.announce for e in transitions.announce_pending(r)]
    changed_under_us: list[str] = []
    for bulk in bulk_updates(required, plan.schedule, now):
        result = await store.tasks.update_many(bulk.filter, bulk.update)
        if result.modified_count == len(bulk.outcomes):
            effects += [effect for outcome in bulk.outcomes for effect in outcome.effects]
            scheduled += len(bulk.outcomes)
        else:
            changed_under_us += bulk.filter["_id"]["$in"]
    if changed_under_us:  # rare: decide again from a fresh read, announcing at least once
        again = [d async for d in store.tasks.find({"_id": {"$in": changed_under_us}})]
        retry = plan_release(again, required, now)
        effects += [e for r in retry.announce for e in transitions.announce_pending(r)]
        plan.count_down += [before.task_id for before, _ in retry.schedule]
        plan.count_down += retry.count_down
    if plan.count_down:
        ready += await dependencies.satisfy(store.db, required, plan.count_down)
    return scheduled, ready, effects
