"""RabbitMQ: declare the queue's topic exchanges, publish with confirms, bind consumers.

Publishing is persistent (delivery mode 2) JSON with publisher confirms, and a task's
routes travel in the AMQP `CC` header as `route.<r>` keys (RabbitMQ's sender-selected
distribution: a queue bound to several matching keys still gets the message once).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)
from pamqp.commands import Basic

from shared import commandstats
from shared.routing import EXCHANGES, exchange_name

log = logging.getLogger(__name__)


class BrokerError(Exception):
    """Publishing or declaring failed. Always worth retrying: the broker may come back."""

    retryable = True


class Unroutable(BrokerError):
    """The broker returned a mandatory message: no queue matched its routing key (the
    queue it was meant for was deleted, by `x-expires` or by hand)."""


# What a publish raises while the broker is unreachable (a closed connection or channel,
# while the robust connection reconnects, raises ChannelInvalidStateError).
PUBLISH_FAILURES = (
    OSError,
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.DeliveryError,
)


def encode_body(body: Mapping[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Binding:
    """Bind `queue` to the exchange for `event` with a Taskcluster-style topic pattern."""

    event: str
    pattern: str


class Broker:
    """One connection and one confirming channel; create with `await Broker.connect(...)`."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractChannel,
        exchanges: Mapping[str, AbstractExchange],
        prefix: str,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._exchanges = dict(exchanges)
        self.prefix = prefix

    @classmethod
    async def connect(
        cls, amqp_url: str, *, prefix: str, events: Iterable[str] = EXCHANGES
    ) -> Broker:
        commandstats.recorder()  # counts this process's AMQP operations when benchmarking
        try:
            connection = await aio_pika.connect_robust(amqp_url)
            channel = await connection.channel(publisher_confirms=True)
            exchanges = {
                event: await channel.declare_exchange(
                    exchange_name(prefix, event), aio_pika.ExchangeType.TOPIC, durable=True
                )
                for event in events
            }
        except (OSError, aiormq.exceptions.AMQPError) as exc:
            raise BrokerError(f"cannot connect to RabbitMQ: {exc}") from exc
        return cls(connection, channel, exchanges, prefix)

    @property
    def channel(self) -> AbstractChannel:
        return self._channel

    async def open_channel(self) -> AbstractChannel:
        """A further channel on the same connection (taking and acking messages apart
        from the confirming channel that publishes)."""
        try:
            return await self._connection.channel()
        except (OSError, aiormq.exceptions.AMQPError) as exc:
            raise BrokerError(f"cannot open a channel: {exc}") from exc

    async def publish_to_queue(self, queue: str, message: aio_pika.Message) -> None:
        """Publish straight to a declared queue (the default exchange) and wait for the
        broker's confirm. Mandatory: a queue that no longer exists raises Unroutable (the
        broker returns the message before confirming it) instead of dropping it unseen.
        aiormq matches a returned message to its publish by `message_id`, so messages
        published at once on this channel must have distinct ones."""
        try:
            confirmation = await self._channel.default_exchange.publish(
                message, routing_key=queue, mandatory=True
            )
        except aiormq.exceptions.PublishError as exc:  # a channel with on_return_raises
            raise Unroutable(f"no queue {queue}: the broker returned the message") from exc
        except PUBLISH_FAILURES as exc:
            raise BrokerError(f"publish to queue {queue} failed: {exc}") from exc
        if isinstance(confirmation, aiormq.abc.DeliveredMessage):
            raise Unroutable(f"no queue {queue}: the broker returned the message")
        if not isinstance(confirmation, Basic.Ack):
            raise BrokerError(f"broker did not confirm the message for {queue}: {confirmation!r}")

    async def publish(
        self,
        event: str,
        routing_key: str,
        body: Mapping[str, object],
        cc: Sequence[str] = (),
    ) -> None:
        """Publish and wait for the broker's confirm; raise BrokerError if it is refused."""
        message = aio_pika.Message(
            encode_body(body),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            content_encoding="utf-8",
            headers={"CC": list(cc)} if cc else None,
        )
        try:
            confirmation = await self._exchanges[event].publish(
                message, routing_key=routing_key, mandatory=False
            )
        except PUBLISH_FAILURES as exc:
            raise BrokerError(f"publish to {event} failed: {exc}") from exc
        if not isinstance(confirmation, Basic.Ack):
            raise BrokerError(f"broker did not confirm the {event} message: {confirmation!r}")

    async def bind_queue(
        self,
        name: str,
        bindings: Iterable[Binding],
        *,
        durable: bool = True,
        exclusive: bool = False,
        prefetch: int | None = None,
        expires_s: float | None = None,
    ) -> AbstractQueue:
        """Declare a queue (durable and shared, or private and auto-deleted) and bind it.
        `expires_s`: RabbitMQ deletes the queue once it has had no consumer that long."""
        if prefetch is not None:
            await self._channel.set_qos(prefetch_count=prefetch)
        arguments = {"x-expires": int(expires_s * 1000)} if expires_s else None
        queue = await self._channel.declare_queue(
            name, durable=durable, exclusive=exclusive, auto_delete=not durable, arguments=arguments
        )
        for binding in bindings:
            await queue.bind(self._exchanges[binding.event], routing_key=binding.pattern)
        return queue

    async def bind(self, queue: AbstractQueue, binding: Binding) -> None:
        await queue.bind(self._exchanges[binding.event], routing_key=binding.pattern)

    async def unbind(self, queue: AbstractQueue, binding: Binding) -> None:
        await queue.unbind(self._exchanges[binding.event], routing_key=binding.pattern)

    async def close(self) -> None:
        await self._connection.close()
