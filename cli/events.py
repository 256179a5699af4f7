"""A private subscription to the queue's exchanges: an exclusive, auto-deleted RabbitMQ
queue bound with Taskcluster-style patterns, its messages handed over in order."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from cli.config import CliConfig
from shared.broker import Binding, Broker


@dataclass(frozen=True)
class Event:
    exchange: str  # full name, `exchange/taskcluster-queue/v1/<event>`
    event: str  # `<event>`
    routing_key: str
    body: dict[str, Any]


class Subscription:
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._received: asyncio.Queue[Event] = asyncio.Queue()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            body = json.loads(message.body)
        except ValueError:
            return  # not one of the queue's messages
        exchange = message.exchange or ""
        self._received.put_nowait(
            Event(exchange, exchange.removeprefix(self._prefix), message.routing_key or "", body)
        )

    async def next(self) -> Event:
        return await self._received.get()

    def next_nowait(self) -> Event | None:
        try:
            return self._received.get_nowait()
        except asyncio.QueueEmpty:
            return None


@asynccontextmanager
async def subscribe(config: CliConfig, bindings: Sequence[Binding]) -> AsyncIterator[Subscription]:
    """Bound and consuming on entry (no event after that is missed); deleted on exit."""
    events = sorted({binding.event for binding in bindings})
    broker = await Broker.connect(config.amqp_url, prefix=config.exchange_prefix, events=events)
    try:
        queue = await broker.bind_queue(
            f"flotilla-cli/{uuid.uuid4().hex}", bindings, durable=False, exclusive=True
        )
        subscription = Subscription(config.exchange_prefix)
        await queue.consume(subscription.on_message, no_ack=True)
        yield subscription
    finally:
        await broker.close()
