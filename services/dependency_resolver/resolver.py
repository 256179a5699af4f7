"""Turns resolved tasks into pending dependents, and announces resolved task groups.

Consumes task-completed / task-failed / task-exception from one durable queue shared by
every replica (competing consumers) and acknowledges a message only once its work is
stored, so a crash means redelivery, and every step below is safe to repeat:
satisfying an edge is a conditional update of the dependent, scheduling is a transition
that does nothing once run 0 exists.

A batch is handled together; when it fails, each of its messages is handled on its own,
so one poison message cannot hold back the rest. A message that fails is sent back to the
queue with its attempt count, and after MAX_ATTEMPTS it goes to the dead-letter queue
(logged and counted). Failures that say the database or broker is away (a retry can
help) are not held against a message: its batch is requeued and the loop's failure
budget counts the pass, so a long outage ends the process (exit 70) instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

import aiormq
import pymongo.errors
from aio_pika.abc import AbstractIncomingMessage

from services.dependency_resolver import release
from shared import (
    dependencies,
    errors,
    events,
    logs,
    resolution_queue,
    taskgroups,
    transitions,
)
from shared.broker import BrokerError
from shared.loops import FailureBudget
from shared.routing import dependency_resolver_queue as dependency_queue_name
from shared.service import Runtime
from shared.taskstore import TASKS
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

PREFETCH = 512  # how many unacknowledged resolutions a replica holds
BATCH = 256
SCHEDULE_CONCURRENCY = 16
SWEEP_INTERVAL_S = 60.0
RETRY_DELAY_S = 1.0
MAX_ATTEMPTS = 3  # failures of one message before it is dead-lettered


def is_transient(exc: BaseException) -> bool:
    """Whether the failure says MongoDB or RabbitMQ is away (a retry can help), rather
    than something wrong with the message."""
    return isinstance(
        exc,
        pymongo.errors.ConnectionFailure
        | BrokerError
        | OSError
        | TimeoutError
        | aiormq.exceptions.AMQPConnectionError,
    )


class Resolver:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.db = runtime.db
        self.store = runtime.store
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.ready = asyncio.Event()  # consuming
        self.budget = FailureBudget("dependency resolver")
        self.sweep_budget = FailureBudget("dependency sweep")
        self.acked = 0
        self.dead_lettered = 0

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
                if outcome.changed:
                    log.info(logs.TASK_PENDING, extra=logs.task_fields(task_id, 0))
                return outcome.changed

        return sum(await asyncio.gather(*(one(task_id) for task_id in task_ids)))

    async def announce_group(self, task_group_id: str | None) -> bool:
        """Publish task-group-resolved if every task of the group has resolved. Returns
        whether it did."""
        if not task_group_id or await taskgroups.any_open(self.db, task_group_id):
            return False  # the common answer, in one indexed lookup
        group = await taskgroups.get(self.db, task_group_id)
        if group is None or not taskgroups.all_resolved(group):
            return False
        await self.store.publish([events.task_group_resolved(group)])
        return True

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    async def consume(self) -> None:
        queue = await resolution_queue.declare(self.rt.broker, self.rt.settings, prefetch=PREFETCH)
        await queue.consume(self.on_message)
        self.ready.set()
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < BATCH and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            async with self.budget.attempt() as summary:
                summary.update(await self.handle(batch))

    async def handle(self, batch: list[AbstractIncomingMessage]) -> dict[str, Any]:
        """Take a batch → handle it → ack only what succeeded; returns the pass summary."""
        usable: list[tuple[AbstractIncomingMessage, str]] = []
        for message in batch:
            try:
                usable.append((message, json.loads(message.body)["status"]["taskId"]))
            except (ValueError, KeyError, TypeError):
                log.error("dropping a message that names no task: %r", message.body[:200])
                await message.reject(requeue=False)
        summary = {"messages": len(batch), "scheduled": 0, "failed": 0}
        try:
            summary["scheduled"] = await self.resolve_batch(sorted({t for _, t in usable}))
        except Exception as exc:
            if is_transient(exc):
                await self._requeue_all([m for m, _ in usable])
                raise
            log.warning("a batch of %d failed; handling each on its own", len(usable))
            for position, (message, task_id) in enumerate(usable):
                try:
                    summary["scheduled"] += await self.resolve_batch([task_id])
                except Exception as one:
                    if is_transient(one):
                        await self._requeue_all([m for m, _ in usable[position:]])
                        raise
                    summary["failed"] += 1
                    await self._failed(message, task_id, one)
                    continue
                await self._ack(message)
        else:
            for message, _ in usable:
                await self._ack(message)
        return {**summary, "acked": self.acked, "deadLettered": self.dead_lettered}

    async def _ack(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        self.acked += 1

    async def _requeue_all(self, messages: list[AbstractIncomingMessage]) -> None:
        await asyncio.sleep(RETRY_DELAY_S)  # the database or broker is away: not too fast
        for message in messages:
            await message.nack(requeue=True)

    async def _failed(self, message: AbstractIncomingMessage, task_id: str, exc: Exception) -> None:
        """Send a message that failed back with its attempt count, or dead-letter it;
        the copy is stored (confirmed) before the original is acknowledged."""
        attempts = int((message.headers or {}).get(resolution_queue.ATTEMPTS_HEADER, 0)) + 1
        headers = {resolution_queue.ATTEMPTS_HEADER: attempts}
        settings = self.rt.settings
        if attempts >= MAX_ATTEMPTS:
            await resolution_queue.declare_dead_letters(self.rt.broker, settings)
            target = resolution_queue.dead_letter_queue(settings.mongo_db)
            await resolution_queue.send(self.rt.broker, target, message.body, headers)
            self.dead_lettered += 1
            log.error(
                "dead-lettered a resolution that kept failing",
                exc_info=exc,
                extra={
                    "taskId": task_id,
                    "attempts": attempts,
                    "queue": target,
                    "deadLettered": self.dead_lettered,
                },
            )
        else:
            await asyncio.sleep(RETRY_DELAY_S)
            target = dependency_queue_name(settings.mongo_db)
            await resolution_queue.send(self.rt.broker, target, message.body, headers)
            log.warning(
                "resolution failed; sent back for another attempt",
                exc_info=exc,
                extra={"taskId": task_id, "attempts": attempts},
            )
        await message.ack()

    async def sweep(self) -> None:
        """The safety net: a dependent whose dependencies are all satisfied but that a
        crash left unscheduled gets scheduled (reads every task on FerretDB, so rarely)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            async with self.sweep_budget.attempt() as summary:
                summary["scheduled"] = await self.sweep_once()

    async def sweep_once(self) -> int:
        """One pass of the sweep; returns how many dependents it scheduled."""
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
        count = await self.schedule(stuck) if stuck else 0
        if count:
            log.warning("sweep scheduled %d dependents a crash left behind", count)
        return count
