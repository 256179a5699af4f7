"""Carrying out a task's effects: publish its events and pending runs, keep counts in step.

Effects are stored in the task document's `outbox` by the same update that changes its
state (see shared.taskstore), performed in the order they were decided, then cleared.
A relay picks up any outbox left behind by a crash (or a broker outage) after a grace
period, so every effect happens at least once: consumers tolerate duplicates, and every
effect here is idempotent or harmless to repeat.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pymongo import UpdateOne

from shared import claims, group_commit, loops
from shared.broker import Broker, BrokerError
from shared.db import Database
from shared.events import Message
from shared.pending import PendingQueues, PendingRun, pending_run
from shared.timeutil import utcnow
from shared.transitions import (
    ClaimEnded,
    ClaimExtended,
    ClaimStarted,
    Dequeue,
    Effect,
    Enqueue,
)

log = logging.getLogger(__name__)

RELAY_BATCH = 200
RECENT_DELIVERIES = 4096  # (task, entry) pairs remembered after delivery


def effect_document(effect: Effect) -> dict[str, Any]:
    """The stored form of an effect. Message bodies are kept as JSON text: tags and routes
    may hold keys MongoDB cannot store as field names."""
    if isinstance(effect, Message):
        return {
            "kind": "publish",
            "event": effect.event,
            "routingKey": effect.routing_key,
            "body": json.dumps(effect.body, separators=(",", ":")),
            "cc": list(effect.cc),
        }
    if isinstance(effect, Enqueue):
        return {
            "kind": "enqueue",
            "taskQueueId": effect.task_queue_id,
            "priority": effect.priority,
            "insertedAt": effect.inserted_at,
            "taskId": effect.task_id,
            "runId": effect.run_id,
            "deadline": effect.deadline,
        }
    if isinstance(effect, Dequeue):
        return {
            "kind": "dequeue",
            "taskId": effect.task_id,
            "runId": effect.run_id,
            "taskQueueId": effect.task_queue_id,
        }
    if isinstance(effect, ClaimStarted):
        return {
            "kind": "claim-started",
            "taskQueueId": effect.task_queue_id,
            "taskId": effect.task_id,
            "runId": effect.run_id,
            "workerGroup": effect.worker_group,
            "workerId": effect.worker_id,
            "started": effect.started,
            "takenUntil": effect.taken_until,
        }
    if isinstance(effect, ClaimExtended):
        return {
            "kind": "claim-extended",
            "taskId": effect.task_id,
            "runId": effect.run_id,
            "takenUntil": effect.taken_until,
        }
    if isinstance(effect, ClaimEnded):
        return {"kind": "claim-ended", "taskId": effect.task_id, "runId": effect.run_id}
    return {
        "kind": "reprioritize",
        "taskId": effect.task_id,
        "runId": effect.run_id,
        "priority": effect.priority,
        "taskQueueId": effect.task_queue_id,
        "deadline": effect.deadline,
    }


class Outbox:
    def __init__(
        self,
        db: Database,
        broker: Broker,
        *,
        tasks_collection: str = "tasks",
        pending_expires_s: float | None = None,
    ) -> None:
        self.db = db
        self.broker = broker
        # The broker may be set later (the queue connects after start-up): look it up.
        self.pending = PendingQueues(db, lambda: self.broker, expires_s=pending_expires_s)
        self._tasks = db[tasks_collection]
        self._locks: dict[str, asyncio.Lock] = {}
        self._done: dict[str, set[str]] = {}
        self._users: dict[str, int] = {}
        # Entries this process delivered lately, kept after their delivery ends: a writer
        # that read the task before that delivery cleared them finds them as leftovers,
        # and must not publish them a second time (a claim's task-running, delivered in the
        # background, then repeated by the report that follows at once).
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def perform(self, documents: list[dict[str, Any]]) -> None:
        """Carry out effects in order; raises (BrokerError, pymongo errors) on failure."""
        for document in documents:
            await self._apply(document)

    async def perform_batch(self, effects: list[Effect], *, concurrency: int = 64) -> None:
        """Carry out the effects of many tasks at once (a bulk scheduling): runs are queued
        and events published concurrently. Takes only queueing and publishing effects:
        their order across tasks does not matter."""
        unexpected = [e for e in effects if not isinstance(e, (Enqueue, Message))]
        if unexpected:
            raise ValueError(f"perform_batch takes Enqueue and Message effects: {unexpected[0]!r}")
        limit = asyncio.Semaphore(concurrency)

        async def one(effect: Effect) -> None:
            async with limit:
                await self._apply(effect_document(effect))

        # Runs first, so a worker woken by task-pending finds its message.
        await asyncio.gather(*(one(e) for e in effects if isinstance(e, Enqueue)))
        await asyncio.gather(*(one(e) for e in effects if isinstance(e, Message)))

    async def _apply(self, document: Mapping[str, Any]) -> None:
        kind = document["kind"]
        if kind == "publish":
            await self.broker.publish(
                document["event"],
                document["routingKey"],
                json.loads(document["body"]),
                document.get("cc", ()),
            )
        elif kind == "enqueue":
            await self.pending.publish(
                pending_run(
                    document["taskQueueId"],
                    document["taskId"],
                    document["runId"],
                    document["priority"],
                    document["deadline"],
                )
            )
        elif kind == "dequeue":
            if task_queue_id := await self._task_queue_of(document):
                await self.pending.made_stale(task_queue_id)
        elif kind == "claim-started":
            await claims.started(self.db, document)
        elif kind == "claim-extended":
            await claims.extended(
                self.db, document["taskId"], document["runId"], document["takenUntil"]
            )
        elif kind == "claim-ended":
            await claims.ended(self.db, document["taskId"], document["runId"])
        elif kind == "group-member-resolved":
            pass  # left by an earlier version, which counted groups down; tasks say it now
        elif kind == "reprioritize":
            if run := await self._requeued(document):
                await self.pending.publish(run)
                await self.pending.made_stale(run.taskQueueId)
        else:  # pragma: no cover - only this module writes effects
            log.error("unknown outbox effect %r", kind)

    async def _task_queue_of(self, document: Mapping[str, Any]) -> str | None:
        """Effects stored before the pending queue moved onto RabbitMQ lack the task queue:
        look it up (only outboxes left over from an upgrade)."""
        if "taskQueueId" in document:
            return str(document["taskQueueId"])
        task = await self._tasks.find_one({"_id": document["taskId"]}, {"taskQueueId": 1})
        return str(task["taskQueueId"]) if task is not None else None

    async def _requeued(self, document: Mapping[str, Any]) -> PendingRun | None:
        if "deadline" in document:
            deadline = document["deadline"]
        else:  # left over from before the upgrade
            task = await self._tasks.find_one({"_id": document["taskId"]}, {"deadline": 1})
            if task is None:
                return None
            deadline = task["deadline"]
        task_queue_id = await self._task_queue_of(document)
        if task_queue_id is None:
            return None
        return pending_run(
            task_queue_id, document["taskId"], document["runId"], document["priority"], deadline
        )

    async def deliver(self, task_id: str, version: int, outbox: Mapping[str, Any]) -> bool:
        """Perform a task's outbox entries in key order and clear them. Returns False (and
        leaves them for the relay) if one could not be carried out.

        Deliveries for one task are serialised in this process and skip entries this
        process already carried out, so a claim answered before its task-running went out
        cannot have its task-completed overtake it (nor repeat it), however fast the
        worker reports."""
        self._users[task_id] = self._users.get(task_id, 0) + 1
        try:
            async with self._locks.setdefault(task_id, asyncio.Lock()):
                done = self._done.setdefault(task_id, set())
                return await self._deliver(task_id, version, outbox, done)
        finally:
            self._users[task_id] -= 1
            if not self._users[task_id]:
                del self._users[task_id], self._locks[task_id], self._done[task_id]

    async def _deliver(
        self, task_id: str, version: int, outbox: Mapping[str, Any], done: set[str]
    ) -> bool:
        keys = sorted(outbox)
        for key in keys:
            if key in done or (task_id, key) in self._recent:
                continue
            try:
                await self._apply(outbox[key])
            except (BrokerError, OSError) as exc:
                log.warning("effects left for the relay: %s", exc, extra={"taskId": task_id})
                return False
            done.add(key)
            self._recent[(task_id, key)] = None
            if len(self._recent) > RECENT_DELIVERIES:
                self._recent.popitem(last=False)
        # Only the writer of the newest version clears: a newer write read these entries
        # as leftovers, delivers them (skipping what this process already did) and clears
        # them with its own. Unconditional otherwise, so concurrent clears leave together.
        await group_commit.of(self._tasks).write(
            UpdateOne(
                {"_id": task_id, "version": version},
                {"$unset": {**{f"outbox.{key}": "" for key in keys}, "outboxDue": ""}},
            )
        )
        return True

    async def relay_once(self, *, grace_s: float) -> int:
        """Deliver every outbox due for longer than the grace period. Returns how many."""
        due = utcnow() - timedelta(seconds=grace_s)
        cursor = self._tasks.find(
            {"outboxDue": {"$lte": due}}, {"outbox": 1, "version": 1}, limit=RELAY_BATCH
        )
        delivered = 0
        async for document in cursor:
            if await self.deliver(
                document["_id"], document["version"], document.get("outbox") or {}
            ):
                delivered += 1
        return delivered

    async def run_relay(self, *, first_s: float, interval_s: float, grace_s: float) -> None:
        """The safety net, forever: effects a crash or an outage left behind go out. A
        relay that keeps failing spends its budget and takes the process down."""
        await asyncio.sleep(first_s)
        budget = loops.FailureBudget("outbox relay")
        while True:
            async with budget.attempt() as summary:
                summary["relayed"] = await self.relay_once(grace_s=grace_s)
            await asyncio.sleep(interval_s)
