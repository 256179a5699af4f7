"""Artifact uploads to the embedded store are bounded (issue 18, finding 5): the declared
contentLength is enforced, and so is the per-artifact maximum, before anything is stored,
so what artifact-info says stays true.

On the S3 store the maximum is applied at createArtifact and the declared length is signed
into the PUT URL, for S3 to enforce. moto's server does not check presigned signatures at
all, so the tests check the signature as S3 would (SigV4, by hand). For object artifacts
the object service's finishUpload checks the stored length too (test_object_artifacts).
"""

from __future__ import annotations

import hashlib
import hmac
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


S3_SECRET = "testing"


@pytest.fixture(scope="module")
def small_s3_queue(
    request: pytest.FixtureRequest, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    database = f"test_limits_s3_{uuid.uuid4().hex[:8]}"
    service, process = launch_queue(
        tmp_path_factory.mktemp("limits-s3"),
        database=database,
        extra_env={
            "FLOTILLA_ARTIFACT_MAX_BYTES": str(MAX_BYTES),
            "FLOTILLA_ARTIFACT_STORE": "s3",
            "FLOTILLA_S3_ENDPOINT_URL": request.getfixturevalue("moto_server"),
            "FLOTILLA_S3_BUCKET": f"limits-{uuid.uuid4().hex[:8]}",
            "FLOTILLA_S3_ACCESS_KEY_ID": "testing",
            "FLOTILLA_S3_SECRET_ACCESS_KEY": S3_SECRET,
        },
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


def s3_accepts(url: str, *, length: int, content_type: str = "text/plain") -> bool:
    """Whether S3 would take a PUT of `length` bytes at this presigned URL: its SigV4
    query signature recomputed over the headers it names, as S3 checks it."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    given = dict(query)
    headers = {"host": parts.netloc, "content-length": str(length), "content-type": content_type}
    signed = given["X-Amz-SignedHeaders"].split(";")
    canonical = "\n".join(
        [
            "PUT",
            parts.path,
            "&".join(
                f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                for k, v in sorted(query)
                if k != "X-Amz-Signature"
            ),
            "".join(f"{name}:{headers[name]}\n" for name in signed),
            ";".join(signed),
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = given["X-Amz-Credential"].split("/", 1)[1]
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"AWS4-HMAC-SHA256\n{given['X-Amz-Date']}\n{scope}\n{digest}"
    key = f"AWS4{S3_SECRET}".encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature, given["X-Amz-Signature"])


def test_s3_put_urls_hold_the_declared_length(small_s3_queue: RunningService) -> None:
    task_id, _, created = new_artifact(small_s3_queue, contentLength=10)
    url = created["putUrl"]
    assert s3_accepts(url, length=10)
    for length in (0, 9, 11, MAX_BYTES):
        assert not s3_accepts(url, length=length), length
    assert not s3_accepts(url, length=10, content_type="text/html")
    # moto takes any PUT (it checks no presigned signature); the right one round-trips
    assert put(url, b"0123456789").status_code == 200
    queue = root_queue(small_s3_queue)
    download = queue.getArtifact(task_id, "0", "public/a.txt")["url"]
    assert requests.get(download, timeout=30).content == b"0123456789"
    assert queue.artifactInfo(task_id, "0", "public/a.txt")["contentLength"] == 10


def test_the_per_artifact_maximum_is_enforced_on_s3(small_s3_queue: RunningService) -> None:
    queue, tq, task_id = root_queue(small_s3_queue), new_task_queue_id(), taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    worker = worker_queue(small_s3_queue, claim_one(queue, tq))
    request = {"contentType": "text/plain", "expires": in_day()}
    for storage in ("s3", "object"):  # refused before the object service is asked
        too_big = {**request, "storageType": storage, "contentLength": MAX_BYTES + 1}
        with pytest.raises(TaskclusterRestFailure) as refused:
            worker.createArtifact(task_id, "0", "public/a.txt", too_big)
        assert (refused.value.status_code, refused.value.body["code"]) == (400, "InputError")
        assert str(MAX_BYTES) in refused.value.body["message"]
        with pytest.raises(TaskclusterRestFailure):
            queue.artifactInfo(task_id, "0", "public/a.txt")  # not created
    created = worker.createArtifact(
        task_id, "0", "public/a.txt", {**request, "storageType": "s3", "contentLength": MAX_BYTES}
    )
    assert s3_accepts(created["putUrl"], length=MAX_BYTES)
    assert put(created["putUrl"], b"x" * MAX_BYTES).status_code == 200
