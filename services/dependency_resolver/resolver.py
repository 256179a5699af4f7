"""Turns resolved tasks into pending dependents, and announces resolved task groups.

Consumes task-completed / task-failed / task-exception from one durable queue shared by
every replica (competing consumers) and acknowledges a message only once its work is
stored, so a crash means redelivery, and every step below is safe to repeat:
satisfying an edge is a conditional update of the dependent, scheduling is a transition
that does nothing once run 0 exists.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

from aio_pika.abc import AbstractIncomingMessage

from services.dependency_resolver import release
from shared import dependencies, errors, events, resolution_queue, taskgroups, transitions
from shared.service import Runtime
from shared.taskstore import TASKS
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

PREFETCH = 512  # how many unacknowledged resolutions a replica holds
BATCH = 256
SCHEDULE_CONCURRENCY = 16
SWEEP_INTERVAL_S = 60.0
RETRY_DELAY_S = 1.0


class Resolver:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.db = runtime.db
        self.store = runtime.store
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def resolve_batch(self, task_ids: list[str]) -> int:
        """Handle a batch of resolutions together (a fan-in's completions arrive in bursts,
        and its sink is updated once per batch instead of once per completion); returns
        how many dependents it scheduled."""
        records = await self.store.load_many(task_ids, whole=False)
        satisfied_by: dict[str, list[str]] = {}
        groups: set[str] = set()
        for task_id, record in records.items():
            if record.is_open:
                continue  # retried or rerun since: not a resolution (any more)
            last = record.last_run
            assert last is not None
            satisfied_by[task_id] = await dependencies.dependents_of(
                self.db, task_id, completed=last.state == "completed"
            )
            if record.definition.taskGroupId:
                groups.add(record.definition.taskGroupId)
        # Edges kept in wait shards (fan-ins) first; then the edges on the tasks.
        edges = await dependencies.empty_shards(self.db, satisfied_by)
        single, several = dependencies.plan(edges)
        now, ready, bulk = utcnow(), [], 0
        for required, dependents in single.items():
            released = await release.release(self.store, required, dependents, now)
            bulk += released.scheduled
            ready += released.ready
        for dependent, requireds in several.items():
            if await dependencies.satisfy_several(self.db, dependent, requireds):
                ready.append(dependent)
        scheduled = await self.schedule(sorted(set(ready)))
        await dependencies.passed_on(self.db, dependencies.emptied_shards(edges))
        for group in sorted(groups):
            await self.announce_group(group)
        return bulk + scheduled

    async def schedule(self, task_ids: list[str]) -> int:
        limit = asyncio.Semaphore(SCHEDULE_CONCURRENCY)

        async def one(task_id: str) -> bool:
            async with limit:
                try:
                    outcome = await self.store.mutate(
                        task_id, lambda r: transitions.schedule(r, utcnow())
                    )
                except (errors.RequestConflict, errors.ResourceNotFound):
                    return False  # past its deadline (the deadline resolver has it) or gone
                return outcome.changed

        return sum(await asyncio.gather(*(one(task_id) for task_id in task_ids)))

    async def announce_group(self, task_group_id: str | None) -> None:
        group = await taskgroups.get(self.db, task_group_id) if task_group_id else None
        if group is not None and taskgroups.all_resolved(group):
            await self.store.publish([events.task_group_resolved(group)])

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    async def consume(self) -> None:
        queue = await resolution_queue.declare(self.rt.broker, self.rt.settings, prefetch=PREFETCH)
        await queue.consume(self.on_message)
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < BATCH and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            await self.handle(batch)

    async def handle(self, batch: list[AbstractIncomingMessage]) -> None:
        """Take a batch → handle it → ack only once its work is stored."""
        task_ids, usable = [], []
        for message in batch:
            try:
                task_ids.append(json.loads(message.body)["status"]["taskId"])
                usable.append(message)
            except (ValueError, KeyError, TypeError):
                log.error("dropping a message that names no task: %r", message.body[:200])
                await message.reject(requeue=False)
        try:
            count = await self.resolve_batch(sorted(set(task_ids)))
        except Exception:
            log.exception("resolving %d tasks failed; they will be redelivered", len(task_ids))
            await asyncio.sleep(RETRY_DELAY_S)
            for message in usable:
                await message.nack(requeue=True)
            return
        for message in usable:
            await message.ack()
        if count:
            log.info("scheduled %d dependents of %d resolved tasks", count, len(task_ids))

    async def sweep(self) -> None:
        """The safety net: a dependent whose dependencies are all satisfied but that a
        crash left unscheduled gets scheduled (reads every task on FerretDB, so rarely)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                cutoff = utcnow() - timedelta(seconds=SWEEP_INTERVAL_S / 2)
                cursor = self.db[TASKS].find(
                    {"depsLeft": {"$lte": 0}, "runs.0": {"$exists": False}},
                    {"_id": 1, "deadline": 1},
                )
                stuck = [d["_id"] async for d in cursor if d["deadline"] > cutoff]
                shards = await dependencies.unpassed_shards(self.db)
                if shards:  # emptied, but a crash kept that from reaching their tasks
                    log.warning("sweep passing on %d emptied wait shards", len(shards))
                    edges = dependencies.task_edges({}, shards)
                    stuck += await dependencies.count_down_tasks(self.db, edges)
                if stuck and (count := await self.schedule(stuck)):
                    log.warning("sweep scheduled %d dependents a crash left behind", count)
            except Exception:
                log.exception("dependency sweep failed; retrying")
