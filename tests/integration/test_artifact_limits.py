"""Artifact uploads to the embedded store are bounded (issue 18, finding 5): the declared
contentLength is enforced, and so is the per-artifact maximum, before anything is stored,
so what artifact-info says stays true."""

from __future__ import annotations

import socket
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from shared.config import Settings
from tests.conftest import RunningService, _drop_database, launch_queue, stop_process
from tests.integration.queue_support import (
    claim_one,
    new_task_queue_id,
    root_queue,
    task_definition,
    worker_queue,
)

MAX_BYTES = 1000


@pytest.fixture(scope="module")
def small_queue(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    database = f"test_limits_{uuid.uuid4().hex[:8]}"
    service, process = launch_queue(
        tmp_path_factory.mktemp("limits"),
        database=database,
        extra_env={"FLOTILLA_ARTIFACT_MAX_BYTES": str(MAX_BYTES)},
    )
    try:
        yield service
    finally:
        stop_process(process)
        _drop_database(settings.mongo_url, database)


def new_artifact(service: RunningService, **request: Any) -> tuple[str, taskcluster.Queue, Any]:
    queue, tq, task_id = root_queue(service), new_task_queue_id(), taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    worker = worker_queue(service, claim_one(queue, tq))
    body = {"storageType": "s3", "contentType": "text/plain", "expires": in_day(), **request}
    return task_id, worker, worker.createArtifact(task_id, "0", "public/a.txt", body)


def in_day() -> str:
    return taskcluster.fromNowJSON("1 day")


def put(url: str, data: Any) -> requests.Response:
    return requests.put(url, data=data, headers={"Content-Type": "text/plain"}, timeout=30)


def chunked(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), 100):
        yield data[start : start + 100]


def stored(service: RunningService, task_id: str) -> int:
    redirect = root_queue(service).getArtifact(task_id, "0", "public/a.txt")
    return requests.get(redirect["url"], timeout=30).status_code


def test_the_declared_length_is_enforced(small_queue: RunningService) -> None:
    task_id, _, created = new_artifact(small_queue, contentLength=10)
    for body in (b"x" * 100_000, chunked(b"x" * 500), b"x" * 9, b"x" * 11):
        response = put(created["putUrl"], body)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "InputError"
        assert stored(small_queue, task_id) == 404  # nothing was kept
    assert put(created["putUrl"], b"0123456789").status_code == 200
    assert stored(small_queue, task_id) == 200
    info = root_queue(small_queue).artifactInfo(task_id, "0", "public/a.txt")
    assert info["contentLength"] == 10


def test_the_per_artifact_maximum_is_enforced(small_queue: RunningService) -> None:
    queue, tq, task_id = root_queue(small_queue), new_task_queue_id(), taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    worker = worker_queue(small_queue, claim_one(queue, tq))
    request = {"storageType": "s3", "contentType": "text/plain", "expires": in_day()}
    with pytest.raises(TaskclusterRestFailure) as refused:
        worker.createArtifact(task_id, "0", "public/a.txt", {**request, "contentLength": 1001})
    assert (refused.value.status_code, refused.value.body["code"]) == (400, "InputError")
    assert str(MAX_BYTES) in refused.value.body["message"]
    with pytest.raises(TaskclusterRestFailure):
        queue.artifactInfo(task_id, "0", "public/a.txt")  # not created

    task_id, _, created = new_artifact(small_queue)  # no declared length
    for body in (b"x" * 1001, chunked(b"x" * 5000)):
        response = put(created["putUrl"], body)
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "InputTooLarge"
        assert stored(small_queue, task_id) == 404
    assert put(created["putUrl"], b"x" * MAX_BYTES).status_code == 200


def test_an_oversized_upload_is_refused_before_its_body_is_sent(
    small_queue: RunningService,
) -> None:
    _, _, created = new_artifact(small_queue)
    url = urllib.parse.urlsplit(created["putUrl"])
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            "Content-Type: text/plain\r\nContent-Length: 100000000000\r\n\r\n".encode()
        )
        answer = sock.recv(65536).decode(errors="replace")  # no body byte was sent
    assert answer.startswith("HTTP/1.1 413"), answer
    assert '"InputTooLarge"' in answer
