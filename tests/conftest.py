"""Fixtures shared by every test: the real MongoDB-protocol server, RabbitMQ and Docker.

`make test` starts them; if one is missing the suite fails loudly (never skips).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import docker
import docker.errors
import pytest

from shared import db as dbmod
from shared.broker import Broker, BrokerError
from shared.config import Settings, load_settings

T = TypeVar("T")

# Test deployments are thrown away: RabbitMQ drops their pending queues once unused.
PENDING_QUEUE_EXPIRES = "600"


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


@dataclass(frozen=True)
class RunningService:
    root_url: str
    root_client_id: str
    root_access_token: str
    mongo_db: str
    log_path: Path

    def client_options(self, **credentials: str) -> dict[str, object]:
        """Options for `taskcluster.Queue(...)`; root credentials unless others are given."""
        creds = credentials or {
            "clientId": self.root_client_id,
            "accessToken": self.root_access_token,
        }
        return {"rootUrl": self.root_url, "credentials": creds, "maxRetries": 0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def queue_service(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """`python -m services.queue` as a real process on a free port, with its own database."""
    database = f"test_queue_{uuid.uuid4().hex[:10]}"
    service, process = launch_queue(tmp_path_factory.mktemp("queue"), database=database)
    try:
        yield service
    finally:
        stop_process(process)
        _drop_database(settings.mongo_url, database)


def launch_queue(
    directory: Path,
    *,
    database: str,
    port: int | None = None,
    token: str | None = None,
    extra_env: dict[str, str] | None = None,
    wait: bool = True,
) -> tuple[RunningService, subprocess.Popen[bytes]]:
    """Start a queue process (a test may run several, or restart one on the same port)."""
    port = port or _free_port()
    token = token or secrets.token_urlsafe(33)[:44]
    log_path = directory / f"queue-{port}-{uuid.uuid4().hex[:6]}.log"
    env = {
        **os.environ,
        "FLOTILLA_QUEUE_PORT": str(port),
        "FLOTILLA_ROOT_URL": f"http://127.0.0.1:{port}",
        "FLOTILLA_ROOT_ACCESS_TOKEN": token,
        "FLOTILLA_MONGO_DB": database,
        "FLOTILLA_CLAIM_TIMEOUT": os.environ.get("FLOTILLA_CLAIM_TIMEOUT", "1200"),
        # the queue declares the resolver's queue too: with the same arguments
        "FLOTILLA_RESOLVER_QUEUE_EXPIRES": "60",
        # every service declares the pending queues it uses: with the same arguments
        "FLOTILLA_PENDING_QUEUE_EXPIRES": PENDING_QUEUE_EXPIRES,
        **(extra_env or {}),
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.queue"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
    service = RunningService(
        f"http://127.0.0.1:{port}", load_settings().root_client_id, token, database, log_path
    )
    if wait:
        try:
            _wait_for_ping(service, process)
        except BaseException:
            stop_process(process)
            raise
    return service, process


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for_ping(service: RunningService, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    url = f"{service.root_url}/api/queue/v1/ping"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"queue exited with {process.returncode}:\n{service.log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"queue did not answer {url} within 30 s:\n{service.log_path.read_text()}")


def _drop_database(mongo_url: str, name: str) -> None:
    if os.environ.get("FLOTILLA_KEEP_TEST_DB"):
        return
    import pymongo

    with pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000) as client:
        client.drop_database(name)


def launch_service(
    module: str,
    directory: Path,
    *,
    database: str,
    extra_env: dict[str, str] | None = None,
    ready_event: str | None = "service ready",
) -> subprocess.Popen[bytes]:
    """Start a background service (`services.<module>`) against `database`; return once
    it logged `ready_event` (None: the caller waits for readiness its own way)."""
    log_path = directory / f"{module}-{uuid.uuid4().hex[:6]}.log"
    env = {
        **os.environ,
        "FLOTILLA_MONGO_DB": database,
        # one database (and resolver queue) per test platform: let RabbitMQ drop it after
        "FLOTILLA_RESOLVER_QUEUE_EXPIRES": "60",
        "FLOTILLA_PENDING_QUEUE_EXPIRES": PENDING_QUEUE_EXPIRES,
        **(extra_env or {}),
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{module}"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
    if ready_event is not None:
        wait_for_log_event(process, log_path, ready_event, what=f"services.{module}")
    return process


def wait_for_log_event(
    process: subprocess.Popen[bytes], log_path: Path, message: str, *, what: str
) -> None:
    """Wait until the process logs the JSON event `message` (its loops are running);
    fail at once if it exits instead."""
    deadline = time.monotonic() + 30
    needle = f'"message": "{message}"'
    while time.monotonic() < deadline:
        if needle in log_path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"{what} did not log {message!r} within 30 s:\n{log_path.read_text()}")


def assert_alive(process: subprocess.Popen[bytes], what: str = "the service") -> None:
    """For tests that rely on a background service: it must not have died meanwhile
    (a dead claim-expiry would make a test that waits for nothing pass)."""
    assert process.poll() is None, f"{what} exited with {process.returncode}"


@dataclass(frozen=True)
class Platform:
    queue: RunningService
    processes: dict[str, subprocess.Popen[bytes]]


@pytest.fixture(scope="session")
def platform(
    queue_service: RunningService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """The session's queue plus a dependency-resolver and a claim-expiry on its database."""
    directory = tmp_path_factory.mktemp("platform")
    processes = {
        name: launch_service(name, directory, database=queue_service.mongo_db)
        for name in ("dependency_resolver", "claim_expiry")
    }
    try:
        yield Platform(queue_service, processes)
    finally:
        for process in processes.values():
            stop_process(process)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3 (and friends) as a real process on a free port; yields its URL.

    A real server, not moto's in-process mocks: the code under test talks HTTP to it
    exactly as it would to S3, and so can aiohttp and curl in the tests.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto did not answer at {url} within 30 s")
                time.sleep(0.1)
        yield url
    finally:
        stop_process(process)
