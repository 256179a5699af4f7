"""Resolving what time ran out on: claims past `takenUntil`, tasks past their deadline,
and data past its `expires`.

Each loop sleeps until the earliest thing it knows is due (claims: the first
`takenUntil` among the runs held, woken early by task-running events; deadlines: the
next second boundary), rather than polling on a fixed period. Every action is a
transition through the task store, so a reclaim that moved `takenUntil`, a report, or
another replica acting first turns it into a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from shared import (
    artifacts,
    claims,
    deadlines,
    dependencies,
    errors,
    logs,
    taskgroups,
    transitions,
)
from shared.artifact_bytes.base import ByteStore
from shared.broker import Binding
from shared.loops import FailureBudget
from shared.service import Runtime
from shared.taskstore import SIDE_DEPENDENCIES, TASKS, from_document
from shared.timeutil import parse_ts, utcnow

log = logging.getLogger(__name__)

MAX_SLEEP_S = 30.0
CLAIM_BATCH = 100
EXPIRY_INTERVAL_S = 600.0
FIRST_SWEEP_S = 30.0
EXPIRY_BATCH = 500
PARALLELISM = 16  # lapsed claims (or deadlines) worked on at once


def expiry_batch(
    batch: list[dict[str, Any]], now: datetime, *, full: bool
) -> tuple[list[dict[str, Any]], datetime | None]:
    """Split claims in due order into those lapsed by `now` and when to look next: the
    first one still held, else `now` if the batch was full (more may be waiting), else
    None (nothing held). Pure."""
    for index, held in enumerate(batch):
        taken_until = held.get("takenUntil")
        if taken_until is not None and taken_until > now:
            return batch[:index], taken_until
    return batch, now if full else None


def wakes_for(task_running_body: bytes, sleeping_until: datetime | None) -> bool:
    """Whether a task-running event must wake the claim reaper: its claim lapses before
    the reaper's next look (or the body cannot be read, or the reaper is not asleep). Pure."""
    if sleeping_until is None:
        return True
    try:
        taken_until = parse_ts(json.loads(task_running_body)["takenUntil"])
    except (ValueError, KeyError, TypeError):
        return True
    return taken_until < sleeping_until


async def in_parallel(work: list[Coroutine[Any, Any, None]], what: str) -> None:
    """Run independent, idempotent steps PARALLELISM at a time: one at a time, a burst of
    lapsed claims was worked off at the speed of one task's round trips, not of the
    database. A step that fails is logged; the others go on (the sweeps repeat it)."""
    limit = asyncio.Semaphore(PARALLELISM)

    async def one(step: Coroutine[Any, Any, None]) -> None:
        async with limit:
            await step

    for result in await asyncio.gather(*(one(step) for step in work), return_exceptions=True):
        if isinstance(result, Exception):
            log.error("%s step failed; the next pass repeats it", what, exc_info=result)


class ClaimReaper:
    def __init__(self, runtime: Runtime) -> None:
        self.db = runtime.db
        self.store = runtime.store
        self.broker = runtime.broker
        self.wake = asyncio.Event()
        self.sleeping_until: datetime | None = None  # the loop's next look, while it sleeps

    async def on_task_running(self, message: AbstractIncomingMessage) -> None:
        """A new claim wakes the loop only if it expires before the loop's next look (with
        one claim timeout for all, it never does): no re-read for every claim."""
        if wakes_for(message.body, self.sleeping_until):
            self.wake.set()

    async def run(self) -> None:
        wakeups = await self.broker.bind_queue(
            "", [Binding("task-running", "#")], durable=False, exclusive=True
        )
        await wakeups.consume(self.on_task_running, no_ack=True)
        budget = FailureBudget("claim reaper")
        while True:
            self.wake.clear()
            next_due = None
            async with budget.attempt():
                next_due = await self.reap(utcnow())
            delay = MAX_SLEEP_S
            if next_due is not None:
                delay = min(delay, max(0.0, (next_due - utcnow()).total_seconds()))
            self.sleeping_until = utcnow() + timedelta(seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)
            self.sleeping_until = None

    async def reap(self, now: datetime) -> datetime | None:
        """Expire the claims due by `now` (a batch, concurrently); return when the next
        one falls due: `now` itself when the batch was full, so the loop goes on at once
        instead of sleeping while more lapsed claims wait."""
        batch = await claims.due(self.db, limit=CLAIM_BATCH)
        lapsed, next_due = expiry_batch(batch, now, full=len(batch) == CLAIM_BATCH)
        await in_parallel([self.expire(held, now) for held in lapsed], "claim expiry")
        return next_due

    async def expire(self, held: dict[str, Any], now: datetime) -> None:
        task_id, run_id = held["taskId"], held["runId"]
        record = await self.store.load(task_id)
        run = record.run(run_id) if record is not None else None
        if (
            record is None
            or run is None
            or record.taken_until is None
            or run is not record.last_run
        ):
            await claims.ended(self.db, task_id, run_id)  # no longer held: stale bookkeeping
            return
        if record.taken_until > now:  # reclaimed: our copy of takenUntil was behind
            await claims.extended(self.db, task_id, run_id, record.taken_until)
            return
        if record.definition.deadline <= now:
            decide = lambda r: transitions.deadline_exceeded(r, now)  # noqa: E731
        else:
            taken_until = record.taken_until
            decide = lambda r: transitions.expire_claim(r, run_id, taken_until, now)  # noqa: E731
        outcome = await self.store.mutate(task_id, decide)
        if outcome.changed:
            log.info(
                logs.TASK_RESOLVED,
                extra=logs.task_fields(task_id, run_id, reason="claim-expired"),
            )


class DeadlineReaper:
    def __init__(self, runtime: Runtime) -> None:
        self.db = runtime.db
        self.store = runtime.store

    async def run(self) -> None:
        budget = FailureBudget("deadline reaper")
        while True:
            busy = False
            async with budget.attempt() as summary:
                seconds = await deadlines.take_seconds(self.db, utcnow())
                if seconds is not None:
                    summary["resolved"] = await self.resolve(seconds)
                    busy = True  # more seconds may be due: go on at once
            if not busy:
                now = utcnow()
                next_second = now.replace(microsecond=0) + timedelta(seconds=1)
                await asyncio.sleep((next_second - now).total_seconds() + 0.005)

    async def resolve(self, seconds: range) -> int:
        task_ids = await deadlines.tasks_in(self.db, seconds)
        await in_parallel([self.resolve_task(task_id) for task_id in task_ids], "deadline")
        await deadlines.drop(self.db, seconds)
        return len(task_ids)

    async def resolve_task(self, task_id: str) -> None:
        try:
            outcome = await self.store.mutate(
                task_id, lambda r: transitions.deadline_exceeded(r, utcnow())
            )
        except errors.ResourceNotFound:
            return  # never stored (createTask failed) or already expired away
        except Exception:
            log.exception("deadline resolution failed", extra={"taskId": task_id})
            return  # the periodic sweep repairs it
        if outcome.changed:
            log.info(
                logs.TASK_RESOLVED, extra=logs.task_fields(task_id, reason="deadline-exceeded")
            )


class Expirer:
    """Deletes tasks (and what hangs off them) and task groups past their `expires`. A
    sweep over whole collections on FerretDB, so it runs rarely."""

    def __init__(self, runtime: Runtime, byte_store: ByteStore) -> None:
        self.db = runtime.db
        self.store = runtime.store
        self.bytes = byte_store
        self.deadlines = DeadlineReaper(runtime)

    async def run(self) -> None:
        await asyncio.sleep(FIRST_SWEEP_S)
        budget = FailureBudget("expiry sweep", quiet_when_idle=False)
        while True:
            async with budget.attempt() as summary:
                await self.overdue(utcnow())
                summary["artifacts"] = await self.expire_artifacts(utcnow())
                summary["tasks"] = await self.expire(utcnow())
            await asyncio.sleep(EXPIRY_INTERVAL_S)

    async def overdue(self, now: datetime) -> None:
        """The safety net for deadlines: open tasks well past theirs (a crash between
        taking a second and resolving it, or tasks older than the cursor)."""
        cutoff = now - timedelta(seconds=60)
        cursor = (
            self.db[TASKS].find({"deadlineDue": {"$lt": cutoff}}, {"_id": 1}).limit(EXPIRY_BATCH)
        )
        for task_id in [document["_id"] async for document in cursor]:
            await self.deadlines.resolve_task(task_id)

    async def expire_artifacts(self, now: datetime) -> int:
        """Artifacts past their `expires`: bytes first, then the record, so a crash in
        between leaves a record whose (idempotent) deletion is simply repeated."""
        deleted = 0
        while True:
            cursor = self.db[artifacts.COLLECTION].find({"expires": {"$lt": now}})
            batch = [artifacts.from_document(d) async for d in cursor.limit(EXPIRY_BATCH)]
            if not batch:
                break
            await self.bytes.delete([a.key for a in batch if a.storage_type == "s3"])
            for artifact in batch:
                await self.db[artifacts.RUN_INDEX].update_one(
                    {"_id": f"{artifact.task_id}/{artifact.run_id}"},
                    {"$pull": {"names": artifact.name}},
                )
            ids = [artifacts.artifact_id(a.task_id, a.run_id, a.name) for a in batch]
            await self.db[artifacts.COLLECTION].delete_many({"_id": {"$in": ids}})
            deleted += len(batch)
            if len(batch) < EXPIRY_BATCH:
                break
        if deleted:
            log.info("deleted %d expired artifacts", deleted)
        return deleted

    async def expire(self, now: datetime) -> int:
        deleted = 0
        while True:
            cursor = self.db[TASKS].find({"expires": {"$lt": now}}).limit(EXPIRY_BATCH)
            batch = await self.store.complete([from_document(d) async for d in cursor])
            for record in batch:
                # A message of a run still pending (never claimed before its deadline) is
                # skipped by claimers, who find no task for it.
                for run in record.runs:
                    await claims.ended(self.db, record.task_id, run.runId)
                await dependencies.forget(self.db, record.task_id)
                await dependencies.forget_waits(self.db, record.task_id, record.definition)
                runs = [f"{record.task_id}/{run.runId}" for run in record.runs]
                await self.db[artifacts.RUN_INDEX].delete_many({"_id": {"$in": runs}})
                await self.store.delete(record)
                log.info(logs.TASK_EXPIRED, extra=logs.task_fields(record.task_id))
            deleted += len(batch)
            if len(batch) < EXPIRY_BATCH:
                break
        await self.db[taskgroups.COLLECTION].delete_many({"expires": {"$lt": now}})
        # Lists a crashed createTask stored for a task it never inserted, and any left over.
        await self.db[SIDE_DEPENDENCIES].delete_many({"expires": {"$lt": now}})
        if deleted:
            log.info("deleted %d expired tasks", deleted)
        return deleted
