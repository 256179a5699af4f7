"""Live task-group updates: one private RabbitMQ queue per console process, bound to a
group's routing keys while at least one browser watches that group.

Events go to each watcher's inbox as compact summaries; the page's server-sent-event
stream forwards them. A watcher too slow to keep up loses events, then gets a `resync`
marker (its page fetches a fresh snapshot) rather than stalling the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import uuid
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from shared.broker import Binding, Broker
from shared.routing import (
    TASK_EXCHANGES,
    task_group_events_pattern,
    task_group_tasks_pattern,
    web_console_queue,
)

log = logging.getLogger(__name__)

INBOX_SIZE = 10_000
# A page starts watching before it lists the group and hands its stream this long to
# adopt the inbox (so nothing between the listing and the stream is lost, and a large
# group is not listed twice).
PARK_S = 60.0
RESYNC: dict[str, Any] = {"resync": True}
CLOSED: dict[str, Any] = {"closed": True}
# Exchanges a watched group is bound to (task-priority-changed does not change the view).
WATCHED_TASK_EVENTS = tuple(e for e in TASK_EXCHANGES if e != "task-priority-changed")


def bindings_for(task_group_id: str) -> list[Binding]:
    return [
        *(Binding(event, task_group_tasks_pattern(task_group_id)) for event in WATCHED_TASK_EVENTS),
        Binding("task-group-resolved", task_group_events_pattern(task_group_id)),
    ]


def summarize(exchange: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(taskGroupId, what a page needs) from an event body; None for a foreign body."""
    if exchange.endswith("task-group-resolved"):
        group = body.get("taskGroupId")
        return (group, {"groupResolved": True}) if isinstance(group, str) else None
    status = body.get("status")
    if not isinstance(status, dict) or not isinstance(status.get("taskGroupId"), str):
        return None
    runs = status.get("runs") or []
    last = runs[-1] if runs and isinstance(runs[-1], dict) else {}
    return status["taskGroupId"], {
        "taskId": status.get("taskId"),
        "state": status.get("state"),
        "runs": len(runs),
        "taskQueueId": status.get("taskQueueId"),
        "started": last.get("started"),
        "resolved": last.get("resolved"),
    }


class GroupEvents:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._queue: AbstractQueue | None = None
        self._watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._lock = asyncio.Lock()
        self._parked: dict[str, tuple[str, asyncio.Queue[dict[str, Any]], float]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = await self._broker.bind_queue(
            web_console_queue(uuid.uuid4().hex), [], durable=False, exclusive=True
        )
        await self._queue.consume(self._on_message, no_ack=True)
        self._sweeper = asyncio.create_task(self._sweep_parked(), name="parked inbox sweeper")

    async def park(self, task_group_id: str) -> str:
        """Watch now, for a stream to adopt within PARK_S; returns the adoption token."""
        inbox = await self.watch(task_group_id)
        token = secrets.token_urlsafe(18)
        deadline = asyncio.get_running_loop().time() + PARK_S
        self._parked[token] = (task_group_id, inbox, deadline)
        return token

    async def release(self, token: str) -> None:
        entry = self._parked.pop(token, None)
        if entry is not None:
            await self.unwatch(entry[0], entry[1])

    async def adopt(self, token: str, task_group_id: str) -> asyncio.Queue[dict[str, Any]] | None:
        """The parked inbox (with every event since `park`), or None if the token is
        unknown, expired, already used or for another group."""
        entry = self._parked.pop(token, None)
        if entry is None:
            return None
        if entry[0] != task_group_id:
            await self.unwatch(entry[0], entry[1])
            return None
        return entry[1]

    async def _sweep_parked(self) -> None:
        while True:
            await asyncio.sleep(PARK_S / 4)
            now = asyncio.get_running_loop().time()
            for token in [t for t, (_, _, due) in self._parked.items() if due < now]:
                with contextlib.suppress(Exception):
                    await self.release(token)

    async def watch(self, task_group_id: str) -> asyncio.Queue[dict[str, Any]]:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(INBOX_SIZE)
        async with self._lock:
            watchers = self._watchers.setdefault(task_group_id, set())
            if not watchers and self._queue is not None:
                for binding in bindings_for(task_group_id):
                    await self._broker.bind(self._queue, binding)
            watchers.add(inbox)
        return inbox

    async def unwatch(self, task_group_id: str, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        async with self._lock:
            watchers = self._watchers.get(task_group_id, set())
            watchers.discard(inbox)
            if not watchers:
                self._watchers.pop(task_group_id, None)
                if self._queue is not None:
                    for binding in bindings_for(task_group_id):
                        try:
                            await self._broker.unbind(self._queue, binding)
                        except Exception:  # the connection may be closing; the queue dies too
                            log.warning("unbind failed", extra={"taskGroupId": task_group_id})

    def close(self) -> None:
        """Shutting down: every open stream ends now."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for watchers in self._watchers.values():
            for inbox in watchers:
                _offer(inbox, CLOSED)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            body = json.loads(message.body)
            summary = summarize(message.exchange or "", body) if isinstance(body, dict) else None
        except ValueError:
            summary = None
        if summary is None:
            return
        group, update = summary
        for inbox in list(self._watchers.get(group, ())):
            _offer(inbox, update)


def _offer(inbox: asyncio.Queue[dict[str, Any]], item: dict[str, Any]) -> None:
    try:
        inbox.put_nowait(item)
    except asyncio.QueueFull:
        # Drop what is queued and ask the page to fetch a snapshot instead.
        while not inbox.empty():
            inbox.get_nowait()
        inbox.put_nowait(RESYNC)
