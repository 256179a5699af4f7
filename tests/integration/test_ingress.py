"""One root URL: the official client, configured only from the environment a user's shell
gets (`source .flotilla/env`), reaches every API through the ingress (real nginx)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import taskcluster
import taskcluster.aio
from aiohttp import web
from taskcluster.exceptions import TaskclusterRestFailure

from tests.conftest import _free_port, poll_until
from tests.ingress_support import IngressPlatform, ingress_fixture, launch_ingress  # noqa: F401
from tests.integration.queue_support import new_task_queue_id, task_definition


@pytest.fixture
def options(ingress: IngressPlatform, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """`taskcluster.optionsFromEnvironment()` in a shell that sourced .flotilla/env."""
    for name, value in ingress.environment().items():
        monkeypatch.setenv(name, value)
    options = taskcluster.optionsFromEnvironment()
    assert options["rootUrl"] == ingress.root_url
    return {**options, "maxRetries": 0}


def test_every_served_client_pings_through_the_one_root_url(options: dict[str, Any]) -> None:
    for client in (taskcluster.Queue, taskcluster.Auth, taskcluster.WorkerManager):
        assert client(options).ping()["alive"] is True, client
    # Hawk verified through the proxy: the service saw the host and port the client signed
    assert taskcluster.Auth(options).currentScopes()["scopes"] == ["*"]


def test_a_service_not_run_here_answers_a_404_that_names_it(options: dict[str, Any]) -> None:
    with pytest.raises(TaskclusterRestFailure) as raised:
        taskcluster.Secrets(options).get("some/secret")
    failure = raised.value
    assert failure.status_code == 404
    assert failure.body["code"] == "ResourceNotFound"
    assert "requestInfo" in failure.body
    assert "`secrets` is not served by this deployment" in str(failure)
    response = requests.get(f"{options['rootUrl']}/api/hooks/v1/hooks")
    assert response.headers["Content-Type"] == "application/json"
    assert "`hooks`" in response.json()["message"]


def test_a_dead_replica_is_skipped(ingress: IngressPlatform, tmp_path: Path) -> None:
    live = ingress.queue.root_url.removeprefix("http://")
    running = launch_ingress({"queue": [f"127.0.0.1:{_free_port()}", live]}, tmp_path)
    try:
        queue = taskcluster.Queue({"rootUrl": running.root_url, "maxRetries": 0})
        assert all(queue.ping()["alive"] for _ in range(4))
    finally:
        running.stop()


def test_a_route_whose_service_is_down_answers_json_naming_it(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{_free_port()}"
    running = launch_ingress({"queue": [dead]}, tmp_path)
    try:
        with pytest.raises(TaskclusterRestFailure) as raised:
            taskcluster.Queue({"rootUrl": running.root_url, "maxRetries": 0}).ping()
        assert raised.value.status_code in (502, 503)
        assert "`queue` is not answering" in raised.value.body["message"]
        assert set(raised.value.body) == {"code", "message", "requestInfo"}
    finally:
        running.stop()


def test_the_main_flow_through_the_ingress(
    ingress: IngressPlatform, options: dict[str, Any]
) -> None:
    tq, task_id = new_task_queue_id(), taskcluster.slugId()
    # a client made with Auth, then used: both through the one root URL
    client_id = f"test/ingress-{uuid.uuid4().hex[:8]}"
    scopes = [
        "queue:create-task:lowest:*",
        "queue:create-task:project:none",
        "queue:scheduler-id:-",
    ]
    created = taskcluster.Auth(options).createClient(
        client_id,
        {"expires": taskcluster.fromNowJSON("1 hour"), "description": "", "scopes": scopes},
    )
    submitter = {
        **options,
        "credentials": {"clientId": client_id, "accessToken": created["accessToken"]},
    }
    taskcluster.Queue(submitter).createTask(task_id, task_definition(tq))
    queue = taskcluster.Queue(options)
    claim = queue.claimWork(tq, {"workerGroup": "wg", "workerId": "w1", "tasks": 1})["tasks"][0]
    worker = taskcluster.Queue({**options, "credentials": claim["credentials"]})
    worker.reportCompleted(task_id, "0")
    assert queue.status(task_id)["status"]["state"] == "completed"


async def test_a_claim_work_long_poll_is_held_and_woken_through_the_ingress(
    options: dict[str, Any],
) -> None:
    tq, task_id = new_task_queue_id(), taskcluster.slugId()
    provisioner_id, worker_type = tq.split("/")
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(options, session=session)
        poll = asyncio.create_task(
            queue.claimWork(tq, {"workerGroup": "wg", "workerId": "poller", "tasks": 1})
        )

        async def waiting() -> bool:  # the queue has seen the worker: its call is waiting
            try:
                await queue.getWorker(provisioner_id, worker_type, "wg", "poller")
            except TaskclusterRestFailure:
                return False
            return not poll.done()

        await poll_until(waiting, what="the long poll to reach the queue")
        await queue.createTask(task_id, task_definition(tq))
        claimed = await poll
    assert [c["status"]["taskId"] for c in claimed["tasks"]] == [task_id]


async def test_a_large_artifact_streams_through_the_signed_urls(
    ingress: IngressPlatform, options: dict[str, Any]
) -> None:
    queue = taskcluster.Queue(options)
    tq, task_id = new_task_queue_id(), taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    claim = queue.claimWork(tq, {"workerGroup": "wg", "workerId": "w1", "tasks": 1})["tasks"][0]
    worker = taskcluster.Queue({**options, "credentials": claim["credentials"]})
    created = worker.createArtifact(
        task_id,
        "0",
        "public/big.bin",
        {
            "storageType": "s3",
            "contentType": "application/octet-stream",
            "expires": taskcluster.fromNowJSON("1 day"),
        },
    )
    # Signed with the root URL: the bytes go through the ingress too.
    assert created["putUrl"].startswith(f"{ingress.root_url}/artifact-bytes/")
    block, blocks = os.urandom(1024 * 1024), 8  # far past nginx's default 1 MB body cap

    async def body() -> Any:
        for _ in range(blocks):
            yield block

    expected = hashlib.sha256(block * blocks).hexdigest()
    async with aiohttp.ClientSession() as session:
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(block) * blocks),
        }
        async with session.put(created["putUrl"], data=body(), headers=headers) as response:
            assert response.status == 200, await response.text()
        url = queue.artifact(task_id, "0", "public/big.bin")["url"]
        assert url.startswith(ingress.root_url)
        digest, received = hashlib.sha256(), 0
        async with session.get(url) as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(1024 * 1024):
                digest.update(chunk)
                received += len(chunk)
    assert (received, digest.hexdigest()) == (len(block) * blocks, expected)


@pytest.fixture
def echo_server() -> Iterator[str]:
    """A real HTTP server answering with what it received (method, raw path, headers)."""
    loop = asyncio.new_event_loop()

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"path": request.raw_path, "headers": dict(request.headers)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    port = _free_port()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_host_and_x_forwarded_headers_reach_the_service(echo_server: str, tmp_path: Path) -> None:
    running = launch_ingress({"worker-manager": [echo_server]}, tmp_path)
    port = running.root_url.rsplit(":", 1)[1]
    try:
        seen = requests.get(f"{running.root_url}/api/worker-manager/v1/workers/a%2Fb").json()
        headers = seen["headers"]
        assert seen["path"] == "/api/worker-manager/v1/workers/a%2Fb"  # as the client sent it
        assert headers["Host"] == f"127.0.0.1:{port}"
        assert headers["X-Forwarded-Host"] == f"127.0.0.1:{port}"
        assert headers["X-Forwarded-Port"] == port
        assert headers["X-Forwarded-Proto"] == "http"
        assert headers["X-Forwarded-For"] == "127.0.0.1"
        # behind an outer proxy (TLS terminator), its word is kept
        outer = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "tc.example",
            "X-Forwarded-Port": "443",
        }
        seen = requests.get(f"{running.root_url}/api/worker-manager/v1/x", headers=outer).json()
        assert {k: seen["headers"][k] for k in outer} == outer
    finally:
        running.stop()
