"""The Dockerflow endpoints: `__heartbeat__` checks what it says (MongoDB and RabbitMQ
reachable), `__lbheartbeat__` and `__version__` answer without credentials."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from shared.config import Settings
from tests.conftest import RunningService, _drop_database, _free_port, launch_queue, stop_process


class Cuttable:
    """A TCP forwarder to a real server that the test can cut, as a network fault would."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = _free_port()
        self.target = (target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        async def cut() -> None:
            assert self.server is not None
            self.server.close()
            for writer in self.writers:
                writer.transport.abort()

        asyncio.run_coroutine_threadsafe(cut(), self.loop).result(10)

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_lbheartbeat_and_version_need_no_credentials(queue_service: RunningService) -> None:
    for api in ("queue", "auth"):
        base = f"{queue_service.root_url}/api/{api}/v1"
        assert requests.get(f"{base}/__lbheartbeat__", timeout=10).json() == {}
        version = requests.get(f"{base}/__version__", timeout=10).json()
        assert version["source"] == "flotilla" and version["version"]
        heartbeat = requests.get(f"{base}/__heartbeat__", timeout=10)
        assert heartbeat.status_code == 200
        assert heartbeat.json() == {"mongodb": "ok", "rabbitmq": "ok"}


@pytest.fixture(params=["mongodb", "rabbitmq"])
def cut_off_queue(
    request: pytest.FixtureRequest, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, RunningService, Cuttable]]:
    url = settings.mongo_url if request.param == "mongodb" else settings.amqp_url
    parts = urlsplit(url)
    proxy = Cuttable(parts.hostname or "127.0.0.1", parts.port or 0)
    proxied = url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    variable = "FLOTILLA_MONGO_URL" if request.param == "mongodb" else "FLOTILLA_AMQP_URL"
    database = f"test_heartbeat_{uuid.uuid4().hex[:8]}"
    service, process = launch_queue(
        tmp_path_factory.mktemp("heartbeat"), database=database, extra_env={variable: proxied}
    )
    try:
        yield request.param, service, proxy
    finally:
        stop_process(process)
        proxy.close()
        _drop_database(settings.mongo_url, database)


def test_heartbeat_is_a_503_when_a_dependency_is_unreachable(
    cut_off_queue: tuple[str, RunningService, Cuttable],
) -> None:
    name, service, proxy = cut_off_queue
    url = f"{service.root_url}/api/queue/v1/__heartbeat__"
    assert requests.get(url, timeout=10).status_code == 200
    proxy.cut()
    # the client library notices a cut connection as soon as its reader runs
    deadline = time.monotonic() + 20
    while (response := requests.get(url, timeout=30)).status_code == 200:
        assert time.monotonic() < deadline, "the heartbeat never noticed the cut"
        time.sleep(0.1)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "ServiceUnavailable"
    assert set(body) == {"code", "message", "requestInfo"}
    assert name in body["message"]
    # the answer says what is wrong, not that the process is dead
    assert requests.get(f"{service.root_url}/api/queue/v1/__lbheartbeat__", timeout=10).ok
