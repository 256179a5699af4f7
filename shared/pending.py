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

Publishing is mandatory: if the queue was deleted since this process declared it (its
`x-expires` ran out, an operator deleted it), RabbitMQ returns the message instead of
confirming a drop, and `publish` declares the queue again and publishes again.

A message lost all the same (a broker's disk lost, a queue deleted with its messages)
leaves its run pending in MongoDB with nothing in RabbitMQ to hand it out. `rebuild` is
the operator's repair (`flotilla pending rebuild`): it republishes one task queue's
pending runs from MongoDB and makes its count exact again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import BaseModel, ConfigDict

from shared.broker import PUBLISH_FAILURES, Broker, BrokerError, Unroutable
from shared.db import Database
from shared.models import RunState
from shared.routing import pending_queue
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

PRIORITY_LEVELS = 7  # upstream's lowest (1) .. highest (7)
CORRECTIONS = "pending_corrections"  # per task queue: stale messages still in RabbitMQ
TASKS = "tasks"
PUBLISH_ATTEMPTS = 3  # declares again after a return; then the outbox relay retries


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


@dataclass(frozen=True)
class Snapshot:
    """One look at a task queue for a rebuild's settling: RabbitMQ's ready messages and
    the stored correction, each read before and after MongoDB's pending runs."""

    ready: int
    stale: int
    pending: int  # runs MongoDB says are pending (past their deadline included)
    expired: int  # of those, past their deadline
    outbox_busy: bool  # a task of the queue has effects not yet carried out
    ready_again: int
    stale_again: int


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild did to one task queue."""

    task_queue_id: str
    republished: int
    depth_before: int  # messages waiting before (stale ones included)
    depth_after: int
    pending: int  # the count (pendingTasks) afterwards
    exact: bool  # the count settled; False: the queue never held still, run it again


def encode(run: PendingRun) -> aio_pika.Message:
    return aio_pika.Message(
        run.model_dump_json().encode(),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=run.priority,
        content_type="application/json",
        # Unique per publish: a returned message finds its publish by this id, and one run
        # may be published twice at once (a rebuild beside the outbox).
        message_id=f"{run.taskId}/{run.runId}/{secrets.token_hex(4)}",
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
        """Queue the run (persistent, confirmed). The queue is declared on first use, and
        again if it was deleted since (RabbitMQ returns the message rather than dropping
        it). Raises BrokerError if it still cannot be routed: the outbox keeps the effect
        and its relay tries again."""
        broker = self._broker()
        name = self.name(run.taskQueueId)
        for _ in range(PUBLISH_ATTEMPTS):
            if name not in self._declared:
                await self._declare(broker.channel, name)
                self._declared.add(name)
            try:
                await broker.publish_to_queue(name, encode(run))
                return
            except Unroutable:
                self._declared.discard(name)
                fields = {"taskQueueId": run.taskQueueId, "taskId": run.taskId, "runId": run.runId}
                log.warning("pending queue was gone; declaring it again", extra=fields)
        raise BrokerError(f"pending queue {name} disappeared {PUBLISH_ATTEMPTS} times in a row")

    # --- taking -----------------------------------------------------------------------------

    async def _claim_channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._broker().open_channel()
            self._queues.clear()
        return self._channel

    async def take(self, task_queue_id: str) -> Delivery | None:
        """The best message of the queue, unacknowledged, or None if it is empty.
        Undecodable messages (never written by Flotilla) are dropped with a log line.
        A queue deleted since this channel declared it is declared again (once)."""
        redeclared = False
        while True:
            try:
                channel = await self._claim_channel()
                queue = self._queues.get(task_queue_id)
                if queue is None:
                    queue = await self._declare(channel, self.name(task_queue_id))
                    self._queues[task_queue_id] = queue
                message = await queue.get(no_ack=False, fail=False)
            except aiormq.exceptions.ChannelNotFoundEntity as exc:
                self._channel = None  # the broker closed it; the next one declares anew
                if redeclared:
                    raise BrokerError(f"cannot take from the pending queue: {exc}") from exc
                redeclared = True
                continue
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
        return _depth(await self._declare(self._broker().channel, self.name(task_queue_id)))

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

    async def _stale(self, task_queue_id: str) -> int:
        correction = await self.db[CORRECTIONS].find_one({"_id": task_queue_id})
        return int(correction.get("stale", 0)) if correction is not None else 0

    # --- rebuilding (an operator's repair) --------------------------------------------------
    #
    # A rebuild never stops claimers, nor the runs that become pending or leave it meanwhile,
    # so it works in two steps.
    #
    # 1. Republish. Purge the queue (every ready message: live, stale or duplicate), set the
    #    correction to 0, then read the runs MongoDB says are pending and publish each, best
    #    first. Reading after the purge leaves no run without a message: one whose message
    #    the purge took is in the read. The reverse can happen, a run with two messages:
    #    one made pending between the purge and the read whose own publish came after the
    #    purge, or one whose message a claimer held through the purge (a purge takes only
    #    ready messages) and gave back. Claims stay right (the conditional update hands a
    #    run out once; a claimer skips the other message), but an uncounted duplicate makes
    #    the count one too high for good, and a Dequeue landing after the reset counts a
    #    stale message the purge already took: one too low.
    # 2. Settle. The count is exact when the correction equals the messages claimers will
    #    skip: ready messages less the runs MongoDB says are pending. That can be read only
    #    while nothing is in flight, so the rebuild takes snapshots (correction and ready
    #    messages before and after MongoDB's pending runs, and whether a task of the queue
    #    still has undelivered outbox effects) until one holds still, sets the correction
    #    from it with a conditional update (a concurrent made_stale or skip makes it miss:
    #    look again), and is done when two further steady snapshots, a pause apart, agree
    #    with what is stored. Duplicates so become counted stale messages that their skips
    #    take off; phantom corrections go. A claim in flight during a snapshot (message
    #    taken, MongoDB not yet updated) reads as a run without a message: the snapshot
    #    is refused if that leaves fewer messages than runs not past their deadline, and
    #    the pause lets such claims land before the verifying snapshots. A claim in flight
    #    through all of them can still leave the count one too high. A queue that never
    #    holds still ends with every run published and `exact=False`: run it again.

    async def rebuild(
        self, task_queue_id: str, *, settle_rounds: int = 50, settle_pause_s: float = 0.1
    ) -> Rebuilt:
        """Republish every run MongoDB says is pending in this task queue, best first,
        after purging its RabbitMQ queue; then make its count exact (see above)."""
        broker = self._broker()
        name = self.name(task_queue_id)
        queue = await self._declare(broker.channel, name)
        self._declared.add(name)
        depth_before = _depth(queue)
        try:
            await queue.purge()
        except PUBLISH_FAILURES as exc:
            raise BrokerError(f"cannot purge pending queue {name}: {exc}") from exc
        await self.db[CORRECTIONS].update_one(
            {"_id": task_queue_id}, {"$set": {"stale": 0}}, upsert=True
        )
        runs = await self._pending_runs(task_queue_id)
        for run in runs:
            await self.publish(run)
        exact = await self._settle(task_queue_id, settle_rounds, settle_pause_s)
        log.info(
            "rebuilt a pending queue: %d runs republished (count %s)",
            len(runs),
            "exact" if exact else "unsettled",
            extra={"taskQueueId": task_queue_id},
        )
        return Rebuilt(
            task_queue_id,
            republished=len(runs),
            depth_before=depth_before,
            depth_after=await self.ready(task_queue_id),
            pending=await self.count(task_queue_id),
            exact=exact,
        )

    async def _pending_runs(self, task_queue_id: str) -> list[PendingRun]:
        documents = self.db[TASKS].find(_pending_in(task_queue_id), REBUILD_FIELDS)
        return republish_order(task_queue_id, [document async for document in documents])

    async def _settle(self, task_queue_id: str, rounds: int, pause_s: float) -> bool:
        agreed = 0
        for _ in range(rounds):
            snapshot = await self._snapshot(task_queue_id)
            target = settled_correction(snapshot)
            if target is None:
                agreed = 0
            elif target == snapshot.stale:
                agreed += 1
                if agreed == 2:
                    return True
            else:
                agreed = 0
                await self.db[CORRECTIONS].update_one(
                    {"_id": task_queue_id, "stale": snapshot.stale}, {"$set": {"stale": target}}
                )
            await asyncio.sleep(pause_s)
        return False

    async def _snapshot(self, task_queue_id: str) -> Snapshot:
        tasks = self.db[TASKS]
        stale = await self._stale(task_queue_id)
        ready = await self.ready(task_queue_id)
        pending = await tasks.count_documents(_pending_in(task_queue_id))
        expired = await tasks.count_documents(
            {**_pending_in(task_queue_id), "deadline": {"$lte": utcnow()}}
        )
        busy = await tasks.find_one(
            {"taskQueueId": task_queue_id, "outboxDue": {"$exists": True}}, {"_id": 1}
        )
        return Snapshot(
            ready=ready,
            stale=stale,
            pending=pending,
            expired=expired,
            outbox_busy=busy is not None,
            ready_again=await self.ready(task_queue_id),
            stale_again=await self._stale(task_queue_id),
        )


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


# --- rebuilding: the decisions ------------------------------------------------------------

REBUILD_FIELDS = {"runs": 1, "priority": 1, "deadline": 1, "pendingSince": 1}


def _pending_in(task_queue_id: str) -> dict[str, Any]:
    """The tasks of a task queue whose latest run is pending (as listPendingTasks reads)."""
    return {"taskQueueId": task_queue_id, "pendingSince": {"$exists": True}}


def _depth(queue: AbstractQueue) -> int:
    result = queue.declaration_result
    return int(result.message_count or 0) if result is not None else 0


def republish_order(task_queue_id: str, documents: Iterable[Mapping[str, Any]]) -> list[PendingRun]:
    """The pending runs among these task documents, in the order claimers would have been
    handed them: highest priority first, then the time each became pending, then taskId
    (so a repeat gives the same order). Tasks whose latest run is not pending are left out."""
    found: list[tuple[int, datetime, str, PendingRun]] = []
    for document in documents:
        runs = document.get("runs") or []
        if not runs or runs[-1].get("state") != RunState.PENDING:
            continue
        priority = int(document["priority"])
        run = pending_run(
            task_queue_id, document["_id"], len(runs) - 1, priority, document["deadline"]
        )
        found.append((-priority, document["pendingSince"], document["_id"], run))
    found.sort(key=lambda entry: entry[:3])
    return [entry[3] for entry in found]


def settled_correction(snapshot: Snapshot) -> int | None:
    """The correction that makes the count exact, as this snapshot shows it: the ready
    messages no pending run will take. None when the snapshot cannot be trusted: something
    moved while it was taken, an outbox effect is still on its way, or fewer messages wait
    than runs not past their deadline (a claim in flight). A run past its deadline may
    rightly lack one: a claimer skipped its message (taking one off the correction) and
    the deadline resolver will put it back."""
    if snapshot.outbox_busy:
        return None
    if snapshot.ready != snapshot.ready_again or snapshot.stale != snapshot.stale_again:
        return None
    extra = snapshot.ready - snapshot.pending
    if extra < -snapshot.expired:
        return None
    return extra
