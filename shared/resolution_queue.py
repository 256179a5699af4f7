"""The dependency-resolver's durable queue, declared by every service that publishes
resolutions (the queue, claim-expiry) as well as by the resolver itself.

RabbitMQ drops a message that no queue is bound for. Declared only by the resolver, the
queue would not exist until the first resolver had started, and a task resolved before
that (a new deployment, a resolver slow to start) would never count down its
dependents: no sweep looks for an edge whose dependency resolved unnoticed. Declaring
is idempotent, so whoever comes first creates it and the others find it."""

from __future__ import annotations

from aio_pika.abc import AbstractQueue

from shared.broker import Binding, Broker
from shared.config import Settings
from shared.routing import RESOLUTION_EVENTS, dependency_resolver_queue


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
