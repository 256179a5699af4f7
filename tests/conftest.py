"""Fixtures shared by every test: the real MongoDB-protocol server, RabbitMQ and Docker.

`make test` starts them; if one is missing the suite fails loudly (never skips).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import docker
import docker.errors
import pytest

from shared import db as dbmod
from shared.broker import Broker, BrokerError
from shared.config import Settings, load_settings

T = TypeVar("T")


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture
async def mongo_db(settings: Settings) -> AsyncIterator[dbmod.Database]:
    """A fresh, empty database with Flotilla's indexes, dropped afterwards."""
    client = dbmod.connect(settings.mongo_url, serverSelectionTimeoutMS=5000)
    name = f"test_{uuid.uuid4().hex[:12]}"
    database = client[name]
    try:
        await client.admin.command("ping")
    except Exception as exc:  # pragma: no cover - the message is the point
        await client.close()
        pytest.fail(
            f"MongoDB-protocol server unreachable at {settings.mongo_url} ({exc}); "
            "run `make test`, which starts FerretDB"
        )
    await dbmod.ensure_indexes(database)
    try:
        yield database
    finally:
        if not os.environ.get("FLOTILLA_KEEP_TEST_DB"):
            await client.drop_database(name)
        await client.close()


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    """A confirming connection to the real RabbitMQ with the queue's exchanges declared."""
    try:
        connection = await Broker.connect(settings.amqp_url, prefix=settings.exchange_prefix)
    except BrokerError as exc:
        pytest.fail(f"RabbitMQ unreachable at {settings.amqp_url} ({exc}); run `make test`")
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The local Docker engine (started by `make test`)."""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"Docker engine unreachable ({exc}); run `make test`, which starts dockerd")
    try:
        yield client
    finally:
        client.close()


async def poll_until(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    what: str = "condition",
) -> T:
    """Await `probe()` until it returns something truthy; fail with `what` after timeout_s."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await probe()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
