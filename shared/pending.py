"""The pending queue: runs waiting for a worker, one durable RabbitMQ queue per task queue.

MongoDB stays the truth of every run's state; RabbitMQ holds only "which run to try next".
A run made pending (createTask, a retry, a rerun, a dependency resolving) is published,
persistent and confirmed, through the task's outbox: a crash between the MongoDB write
and the publish delays the message, never drops it.

Each task queue's RabbitMQ queue is a classic queue with seven priority levels
(`x-max-priority`), so one `basic.get` returns the highest-priority message, first in,
first out within a level. A claimer takes a message, claims the run with the one
conditional MongoDB update that already guarantees exactly one winner, and acks only
after that update is stored. A claimer that dies in between leaves the message unacked;
RabbitMQ hands it out again, and the next claimer finds the run pending (claims it) or
already running (acks and moves on). No lease is built by hand.

A message can go stale: claimTask, cancel, a deadline or a priority change leave it
behind. Claimers skip it (the claim's own check finds the run no longer pending; a past
deadline is visible in the message itself). Counts must not include stale messages, so
those rare paths add one to a per-queue correction in MongoDB, and a claimer that skips
one takes it off again: `count` = ready messages - corrections. The hot path (create,
claimWork, report) never touches the correction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import BaseModel, ConfigDict

from shared.broker import PUBLISH_FAILURES, Broker, BrokerError
from shared.db import Database
from shared.routing import pending_queue
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

PRIORITY_LEVELS = 7  # upstream's lowest (1) .. highest (7)
CORRECTIONS = "pending_corrections"  # per task queue: stale messages still in RabbitMQ


class PendingRun(BaseModel):
    """A message's body: what a claimer needs to try the run, and to skip it cheaply."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    taskQueueId: str
    taskId: str
    runId: int
    priority: int  # 1..7
    deadline: datetime


@dataclass
class Delivery:
    """A message taken from a pending queue and not yet acknowledged."""

    run: PendingRun
    message: AbstractIncomingMessage

    async def ack(self) -> None:
        """Done with it (claimed, or stale). If the channel died meanwhile RabbitMQ hands
        the message out again, and the next claimer skips it: harmless."""
        try:
            await self.message.ack()
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.MessageProcessError, OSError):
            log.warning("ack of a pending message failed; it will be skipped when redelivered")

    async def give_back(self) -> None:
        """The claim attempt failed for a passing reason: back where it was in the queue."""
        try:
            await self.message.nack(requeue=True)
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.MessageProcessError, OSError):
            log.warning("could not give a pending message back; RabbitMQ will redeliver it")


def encode(run: PendingRun) -> aio_pika.Message:
    return aio_pika.Message(
        run.model_dump_json().encode(),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=run.priority,
        content_type="application/json",
        message_id=f"{run.taskId}/{run.runId}",
    )


def decode(body: bytes) -> PendingRun | None:
    try:
        return PendingRun.model_validate(json.loads(body))
    except (ValueError, TypeError):
        return None


class PendingQueues:
    """The pending queues of one deployment (named after its database)."""

    def __init__(
        self, db: Database, broker: Callable[[], Broker], *, expires_s: float | None = None
    ) -> None:
        self.db = db
        self._broker = broker  # a getter: the queue's broker connects after start-up
        self._expires_s = expires_s
        self._declared: set[str] = set()
        self._channel: AbstractChannel | None = None
        self._queues: dict[str, AbstractQueue] = {}

    def name(self, task_queue_id: str) -> str:
        return pending_queue(self.db.name, task_queue_id)

    def _arguments(self) -> dict[str, Any]:
        # Every declarer must pass the same arguments, or RabbitMQ refuses the declare.
        arguments: dict[str, Any] = {"x-max-priority": PRIORITY_LEVELS}
        if self._expires_s:
            arguments["x-expires"] = int(self._expires_s * 1000)
        return arguments

    async def _declare(self, channel: AbstractChannel, name: str) -> AbstractQueue:
        try:
            return await channel.declare_queue(name, durable=True, arguments=self._arguments())
        except PUBLISH_FAILURES as exc:
            raise BrokerError(f"cannot declare pending queue {name}: {exc}") from exc

    # --- adding -----------------------------------------------------------------------------

    async def publish(self, run: PendingRun) -> None:
        """Queue the run (persistent, confirmed). The queue is declared on first use."""
        broker = self._broker()
        name = self.name(run.taskQueueId)
        if name not in self._declared:
            await self._declare(broker.channel, name)
            self._declared.add(name)
        await broker.publish_to_queue(name, encode(run))

    # --- taking -----------------------------------------------------------------------------

    async def _claim_channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._broker().open_channel()
            self._queues.clear()
        return self._channel

    async def take(self, task_queue_id: str) -> Delivery | None:
        """The best message of the queue, unacknowledged, or None if it is empty.
        Undecodable messages (never written by Flotilla) are dropped with a log line."""
        while True:
            try:
                channel = await self._claim_channel()
                queue = self._queues.get(task_queue_id)
                if queue is None:
                    queue = await self._declare(channel, self.name(task_queue_id))
                    self._queues[task_queue_id] = queue
                message = await queue.get(no_ack=False, fail=False)
            except (*PUBLISH_FAILURES, aio_pika.exceptions.AMQPException) as exc:
                self._channel = None
                raise BrokerError(f"cannot take from the pending queue: {exc}") from exc
            if message is None:
                return None
            run = decode(message.body)
            if run is not None:
                return Delivery(run, message)
            log.error(
                "dropping an unreadable pending message", extra={"taskQueueId": task_queue_id}
            )
            await message.ack()

    # --- counting ---------------------------------------------------------------------------

    async def ready(self, task_queue_id: str) -> int:
        """Messages waiting (stale ones included; those being claimed excluded)."""
        queue = await self._declare(self._broker().channel, self.name(task_queue_id))
        result = queue.declaration_result
        return int(result.message_count or 0) if result is not None else 0

    async def count(self, task_queue_id: str) -> int:
        """Claimable runs: waiting messages less the stale ones still among them. Exact as
        soon as the call that changed it has answered (createTask publishes before it
        answers, claimWork acks before, claimTask/cancel/deadline correct before)."""
        ready = await self.ready(task_queue_id)
        if not ready:
            return 0
        correction = await self.db[CORRECTIONS].find_one({"_id": task_queue_id})
        stale = int(correction.get("stale", 0)) if correction is not None else 0
        return max(0, ready - max(0, stale))

    async def made_stale(self, task_queue_id: str, count: int = 1) -> None:
        """A run left the pending state without its message being taken (claimTask, cancel,
        deadline) or was queued again at another priority: its old message is stale."""
        await self.db[CORRECTIONS].update_one(
            {"_id": task_queue_id}, {"$inc": {"stale": count}}, upsert=True
        )

    async def skipped(self, task_queue_id: str) -> None:
        """A claimer dropped a stale message."""
        await self.made_stale(task_queue_id, -1)


def pending_run(
    task_queue_id: str, task_id: str, run_id: int, priority: int, deadline: datetime
) -> PendingRun:
    return PendingRun(
        taskQueueId=task_queue_id,
        taskId=task_id,
        runId=run_id,
        priority=priority,
        deadline=deadline,
    )


def is_past_deadline(run: PendingRun, now: datetime | None = None) -> bool:
    """Never hand out a run whose deadline has passed (the deadline resolver resolves it)."""
    return run.deadline <= (now or utcnow())
