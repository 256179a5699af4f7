"""Slow and abusive connections are cut off (issue 18, finding 6): request headers must
arrive within FLOTILLA_HTTP_HEADER_TIMEOUT, a body at FLOTILLA_HTTP_BODY_MIN_RATE once
FLOTILLA_HTTP_BODY_GRACE has passed; long polls and uploads at normal speed are untouched.
The queue here runs with tiny limits; the assertions are about outcomes, not durations."""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import taskcluster

from shared.config import Settings
from tests.conftest import RunningService, _drop_database, launch_queue, stop_process
from tests.integration.queue_support import (
    claim_one,
    new_task_queue_id,
    root_queue,
    task_definition,
    worker_queue,
)

PATIENCE_S = 30.0  # how long the tests keep trickling before declaring the server patient


@pytest.fixture(scope="module")
def strict_queue(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    database = f"test_slow_{uuid.uuid4().hex[:8]}"
    service, process = launch_queue(
        tmp_path_factory.mktemp("slow"),
        database=database,
        extra_env={
            "FLOTILLA_HTTP_HEADER_TIMEOUT": "2",
            "FLOTILLA_HTTP_BODY_GRACE": "1",
            "FLOTILLA_HTTP_BODY_MIN_RATE": "10000",
            "FLOTILLA_CLAIM_WORK_WAIT": "5",
        },
    )
    try:
        yield service
    finally:
        stop_process(process)
        _drop_database(settings.mongo_url, database)


def trickle(url: str, head: str, pieces: Iterator[bytes]) -> tuple[bool, bytes]:
    """Send `head`, then one piece every 0.1 s; (whether the server cut us off before we
    ran out of patience, whatever it answered)."""
    parts = urllib.parse.urlsplit(url)
    answer = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=PATIENCE_S) as sock:
        sock.sendall(head.encode())
        give_up = time.monotonic() + PATIENCE_S
        sock.settimeout(0.1)
        for piece in pieces:
            if time.monotonic() > give_up:
                return False, answer
            try:
                sock.sendall(piece)
                chunk = sock.recv(65536)
            except TimeoutError:
                continue  # nothing to read yet: keep trickling
            except OSError:
                return True, answer  # reset: cut off
            if not chunk:
                return True, answer  # closed: cut off
            answer += chunk
        return False, answer


def forever(piece: bytes) -> Iterator[bytes]:
    while True:
        yield piece


def test_slowloris_headers_are_cut_off(strict_queue: RunningService) -> None:
    url = f"{strict_queue.root_url}/api/queue/v1/ping"
    head = "GET /api/queue/v1/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    cut, _ = trickle(url, head, forever(b"y"))  # one header that never ends
    assert cut, "a request whose headers never end kept its connection"
    assert requests.get(url, timeout=10).status_code == 200  # and the queue still serves


def test_a_one_byte_per_tick_body_is_cut_off(strict_queue: RunningService) -> None:
    url = f"{strict_queue.root_url}/api/queue/v1/task/{taskcluster.slugId()}"
    path = urllib.parse.urlsplit(url).path
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    cut, answer = trickle(url, head, forever(b" "))
    assert cut, "a body sent one byte at a time kept its connection"
    assert answer.startswith(b"HTTP/1.1 408"), answer
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["code"] == "RequestTimeout" and set(body) == {"code", "message", "requestInfo"}


def test_a_slow_artifact_upload_is_cut_off_and_a_fast_big_one_is_not(
    strict_queue: RunningService,
) -> None:
    queue, tq, task_id = root_queue(strict_queue), new_task_queue_id(), taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    worker = worker_queue(strict_queue, claim_one(queue, tq))
    request = {"storageType": "s3", "contentType": "text/plain"}
    slow = worker.createArtifact(
        task_id, "0", "public/slow", {**request, "expires": taskcluster.fromNowJSON("1 day")}
    )
    parts = urllib.parse.urlsplit(slow["putUrl"])
    head = (
        f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\n"
    )
    cut, answer = trickle(slow["putUrl"], head, forever(b"x"))
    assert cut and answer.startswith(b"HTTP/1.1 408"), answer
    redirect = queue.getArtifact(task_id, "0", "public/slow")
    assert requests.get(redirect["url"], timeout=30).status_code == 404  # nothing stored

    fast = worker.createArtifact(
        task_id, "0", "public/fast", {**request, "expires": taskcluster.fromNowJSON("1 day")}
    )
    data = b"y" * (4 * 1024 * 1024)  # 400 s at the minimum rate: it must not matter
    response = requests.put(
        fast["putUrl"], data=data, headers={"Content-Type": "text/plain"}, timeout=60
    )
    assert response.status_code == 200, response.text


def test_long_polls_outlive_the_header_timeout(strict_queue: RunningService) -> None:
    queue = root_queue(strict_queue)
    tq = new_task_queue_id()
    # claimWork waits its full 5 s with nothing to hand out: more than two header timeouts
    answer = queue.claimWork(tq, {"workerGroup": "wg", "workerId": "w", "tasks": 1})
    assert answer == {"tasks": []}
    # and a keep-alive connection carries several requests in a row
    with requests.Session() as session:
        for _ in range(3):
            ping = session.get(f"{strict_queue.root_url}/api/queue/v1/ping", timeout=10)
            assert ping.status_code == 200
