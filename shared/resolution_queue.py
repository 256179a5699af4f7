"""The dependency-resolver's durable queue, declared by every service that publishes
resolutions (the queue, claim-expiry) as well as by the resolver itself.

RabbitMQ drops a message that no queue is bound for. Declared only by the resolver, the
queue would not exist until the first resolver had started, and a task resolved before
that (a new deployment, a resolver slow to start) would never count down its
dependents: no sweep looks for an edge whose dependency resolved unnoticed. Declaring
is idempotent, so whoever comes first creates it and the others find it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractQueue
from pamqp.commands import Basic

from shared.broker import Binding, Broker, BrokerError
from shared.config import Settings
from shared.routing import RESOLUTION_EVENTS, dependency_resolver_queue

ATTEMPTS_HEADER = "x-flotilla-attempts"  # how often the resolver has failed a message


def dead_letter_queue(database: str) -> str:
    """Where resolutions that kept failing are kept for an operator to look at."""
    return dependency_resolver_queue(database) + "/dead-letter"


async def declare(
    broker: Broker, settings: Settings, *, prefetch: int | None = None
) -> AbstractQueue:
    return await broker.bind_queue(
        dependency_resolver_queue(settings.mongo_db),
        [Binding(event, "#") for event in RESOLUTION_EVENTS],
        durable=True,
        prefetch=prefetch,
        expires_s=settings.resolver_queue_expires_s,
    )


async def declare_dead_letters(broker: Broker, settings: Settings) -> AbstractQueue:
    return await broker.bind_queue(
        dead_letter_queue(settings.mongo_db),
        [],
        durable=True,
        expires_s=settings.resolver_queue_expires_s,
    )


async def send(
    broker: Broker, queue: str, body: bytes, headers: Mapping[str, Any] | None = None
) -> None:
    """Put a message straight into one queue (the default exchange), with a confirm."""
    message = aio_pika.Message(
        body,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        content_type="application/json",
        headers=dict(headers or {}),
    )
    try:
        confirmation = await broker.channel.default_exchange.publish(message, routing_key=queue)
    except (OSError, aiormq.exceptions.AMQPError, aio_pika.exceptions.DeliveryError) as exc:
        raise BrokerError(f"sending to {queue} failed: {exc}") from exc
    if not isinstance(confirmation, Basic.Ack):
        raise BrokerError(f"broker did not confirm the message for {queue}: {confirmation!r}")
