"""The dependency-resolver's durable queue, declared by every service that publishes
resolutions (the queue, claim-expiry) as well as by the resolver itself.

RabbitMQ drops a message that no queue is bound for. Declared only by the resolver, the
queue would not exist until the first resolver had started, and a task resolved before
that (a new deployment, a resolver slow to start) would never count down its
dependents: no sweep looks for an edge whose dependency resolved unnoticed. Declaring
is idempotent, so whoever comes first creates it and the others find it."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractQueue

from shared.broker import Binding, Broker
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
    """Put a message straight into one queue (the default exchange), with a confirm;
    raises BrokerError (Unroutable if the queue is gone) so the caller keeps the original."""
    message = aio_pika.Message(
        body,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        content_type="application/json",
        headers=dict(headers or {}),
        message_id=secrets.token_hex(8),  # a returned message finds its publish by it
    )
    await broker.publish_to_queue(queue, message)  # mandatory, confirmed
