"""Artifacts through the official client (reference §6), on both byte stores: the embedded
one (bytes in MongoDB, URLs served by the queue) and S3 (moto's standalone server)."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import taskcluster
import taskcluster.aio
from taskcluster.aio.download import downloadArtifactToBuf
from taskcluster.exceptions import TaskclusterArtifactError, TaskclusterRestFailure

from services.claim_expiry.reapers import Expirer
from shared import artifact_bytes
from shared import db as dbmod
from shared.broker import Broker
from shared.config import Settings, load_settings
from shared.outbox import Outbox
from shared.service import Runtime
from shared.taskstore import TaskStore
from shared.timeutil import utcnow
from tests.conftest import RunningService, _drop_database, launch_queue, stop_process
from tests.integration.queue_support import (
    claim_one,
    client_with_scopes,
    new_task_queue_id,
    root_queue,
    task_definition,
    worker_queue,
)
from tests.integration.test_queue_events import PREFIX, subscribe


class ArtifactQueue:
    def __init__(
        self, kind: str, service: RunningService, pid: int, settings: dict[str, Any]
    ) -> None:
        self.kind, self.service, self.pid = kind, service, pid
        self.settings = settings  # the store's settings, as load_settings overrides


@pytest.fixture(scope="module", params=["gridfs", "s3"])
def artifact_queue(
    request: pytest.FixtureRequest,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ArtifactQueue]:
    kind: str = request.param
    env = {"FLOTILLA_ARTIFACT_STORE": kind}
    if kind == "s3":
        moto_url: str = request.getfixturevalue("moto_server")
        env |= {
            "FLOTILLA_S3_ENDPOINT_URL": moto_url,
            "FLOTILLA_S3_BUCKET": f"artifacts-{uuid.uuid4().hex[:8]}",
            "FLOTILLA_S3_ACCESS_KEY_ID": "testing",
            "FLOTILLA_S3_SECRET_ACCESS_KEY": "testing",
        }
    database = f"test_artifacts_{uuid.uuid4().hex[:8]}"
    service, process = launch_queue(
        tmp_path_factory.mktemp("artifacts"), database=database, extra_env=env
    )
    try:
        overrides = {name.removeprefix("FLOTILLA_").lower(): value for name, value in env.items()}
        yield ArtifactQueue(kind, service, process.pid, overrides)
    finally:
        stop_process(process)
        _drop_database(settings.mongo_url, database)


def in_(duration: str) -> str:
    return taskcluster.fromNowJSON(duration)


def running_run(service: RunningService, **task: Any) -> tuple[str, taskcluster.Queue]:
    """A task claimed by a worker: (taskId, the worker's client)."""
    queue, tq, task_id = root_queue(service), new_task_queue_id(), taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, **task))
    return task_id, worker_queue(service, claim_one(queue, tq))


def put(url: str, data: Any, content_type: str, **headers: str) -> None:
    response = requests.put(url, data=data, headers={"Content-Type": content_type, **headers})
    assert response.status_code == 200, response.text


def status_of(url: str) -> int:
    return requests.get(url).status_code


def rest_error(call: Any, *args: Any) -> TaskclusterRestFailure:
    with pytest.raises(TaskclusterRestFailure) as raised:
        call(*args)
    return raised.value


def test_an_s3_artifact_round_trip(artifact_queue: ArtifactQueue) -> None:
    service = artifact_queue.service
    task_id, worker = running_run(service)
    created = worker.createArtifact(
        task_id,
        "0",
        "public/build/out.txt",
        {
            "storageType": "s3",
            "contentType": "text/plain",
            "expires": in_("1 day"),
        },
    )
    assert created["storageType"] == "s3" and created["contentType"] == "text/plain"
    put(created["putUrl"], b"hello artifacts\n", "text/plain")
    queue = root_queue(service)
    redirect = queue.getArtifact(task_id, "0", "public/build/out.txt")  # 303 + JSON body
    assert redirect["storageType"] == "s3"
    assert requests.get(redirect["url"]).content == b"hello artifacts\n"
    latest = queue.getLatestArtifact(task_id, "public/build/out.txt")
    assert requests.get(latest["url"]).content == b"hello artifacts\n"

    # the official download helper, and plain curl
    async def helper() -> tuple[Any, str]:
        async with taskcluster.aio.createSession() as session:
            client = taskcluster.aio.Queue(service.client_options(), session=session)
            return await downloadArtifactToBuf(
                taskId=task_id, name="public/build/out.txt", queueService=client
            )

    data, content_type = asyncio.run(helper())
    assert bytes(data) == b"hello artifacts\n" and content_type == "text/plain"
    url = queue.artifact(task_id, "0", "public/build/out.txt")["url"]
    curl = subprocess.run(["curl", "-sSf", url], capture_output=True, check=True)
    assert curl.stdout == b"hello artifacts\n"


def test_raw_http_shows_the_303_and_its_headers(artifact_queue: ArtifactQueue) -> None:
    service = artifact_queue.service
    task_id, worker = running_run(service)
    worker.createArtifact(
        task_id,
        "0",
        "public/ref",
        {
            "storageType": "reference",
            "url": "https://example.com/x",
            "contentType": "text/html",
            "expires": in_("1 day"),
        },
    )
    url = f"{service.root_url}/api/queue/v1/task/{task_id}/runs/0/artifacts/public%2Fref"
    response = requests.get(url, allow_redirects=False)  # anonymous: public/ is readable
    assert response.status_code == 303
    assert response.headers["Location"] == "https://example.com/x"
    assert response.headers["x-taskcluster-artifact-storage-type"] == "reference"
    assert response.json() == {"storageType": "reference", "url": "https://example.com/x"}


def test_range_requests_and_gzip_content_are_served_as_stored(
    artifact_queue: ArtifactQueue,
) -> None:
    service = artifact_queue.service
    task_id, worker = running_run(service)
    text = b"".join(b"line %d\n" % i for i in range(5000))
    packed = gzip.compress(text)
    created = worker.createArtifact(
        task_id,
        "0",
        "public/logs/live_backing.log",
        {
            "storageType": "s3",
            "contentType": "text/plain; charset=utf-8",
            "expires": in_("1 day"),
        },
    )
    put(created["putUrl"], packed, "text/plain; charset=utf-8", **{"Content-Encoding": "gzip"})
    url = root_queue(service).artifact(task_id, "0", "public/logs/live_backing.log")["url"]
    raw = requests.get(url, stream=True)
    assert raw.headers["Content-Encoding"] == "gzip"
    assert raw.raw.read() == packed  # the stored bytes, not re-encoded
    assert requests.get(url).content == text  # a client that decodes gzip gets the text
    ranged = requests.get(url, headers={"Range": "bytes=10-19"}, stream=True)
    assert ranged.status_code == 206
    assert ranged.raw.read() == packed[10:20]


def test_reference_link_and_error_artifacts(artifact_queue: ArtifactQueue) -> None:
    service = artifact_queue.service
    task_id, worker = running_run(service)
    expires = in_("1 day")
    worker.createArtifact(
        task_id,
        "0",
        "public/target",
        {
            "storageType": "reference",
            "url": "https://example.com/t",
            "contentType": "text/plain",
            "expires": expires,
        },
    )
    worker.createArtifact(
        task_id,
        "0",
        "public/b",
        {
            "storageType": "link",
            "artifact": "public/target",
            "expires": expires,
        },
    )
    worker.createArtifact(
        task_id,
        "0",
        "public/a",
        {
            "storageType": "link",
            "artifact": "public/b",
            "expires": expires,
        },
    )
    worker.createArtifact(
        task_id,
        "0",
        "public/missing",
        {
            "storageType": "error",
            "reason": "file-missing-on-worker",
            "message": "no such file",
            "expires": expires,
        },
    )
    queue = root_queue(service)
    assert queue.getArtifact(task_id, "0", "public/a")["url"] == "https://example.com/t"
    assert queue.artifact(task_id, "0", "public/a") == {
        "storageType": "reference",
        "url": "https://example.com/t",
    }
    assert queue.artifact(task_id, "0", "public/missing") == {
        "storageType": "error",
        "reason": "file-missing-on-worker",
        "message": "no such file",
    }
    url = f"{service.root_url}/api/queue/v1/task/{task_id}/runs/0/artifacts/public%2Fmissing"
    response = requests.get(url, allow_redirects=False)
    assert response.status_code == 424
    assert response.json() == {"reason": "file-missing-on-worker", "message": "no such file"}

    async def download_error() -> None:
        async with taskcluster.aio.createSession() as session:
            client = taskcluster.aio.Queue(service.client_options(), session=session)
            await downloadArtifactToBuf(taskId=task_id, name="public/missing", queueService=client)

    with pytest.raises(TaskclusterArtifactError):
        asyncio.run(download_error())
    # A cycle is the caller's error; an unknown name is 404.
    worker.createArtifact(
        task_id,
        "0",
        "public/loop1",
        {
            "storageType": "link",
            "artifact": "public/loop2",
            "expires": expires,
        },
    )
    worker.createArtifact(
        task_id,
        "0",
        "public/loop2",
        {
            "storageType": "link",
            "artifact": "public/loop1",
            "expires": expires,
        },
    )
    assert rest_error(queue.getArtifact, task_id, "0", "public/loop1").status_code == 400
    assert rest_error(queue.getArtifact, task_id, "0", "public/nope").status_code == 404


def test_public_artifacts_are_anonymous_and_links_check_every_hop(
    artifact_queue: ArtifactQueue,
) -> None:
    service = artifact_queue.service
    task_id, worker = running_run(service)
    expires = in_("1 day")
    for name in ("public/open", "private/secret"):
        worker.createArtifact(
            task_id,
            "0",
            name,
            {
                "storageType": "reference",
                "url": f"https://example.com/{name}",
                "contentType": "text/plain",
                "expires": expires,
            },
        )
    worker.createArtifact(
        task_id,
        "0",
        "public/sneaky",
        {
            "storageType": "link",
            "artifact": "private/secret",
            "expires": expires,
        },
    )
    anonymous = taskcluster.Queue({"rootUrl": service.root_url, "maxRetries": 0})
    assert anonymous.getArtifact(task_id, "0", "public/open")["url"].endswith("public/open")
    assert rest_error(anonymous.getArtifact, task_id, "0", "private/secret").status_code == 403
    assert rest_error(anonymous.getArtifact, task_id, "0", "public/sneaky").status_code == 403
    reader = client_with_scopes(service, ["queue:get-artifact:private/*"])
    assert reader.getArtifact(task_id, "0", "public/sneaky")["url"].endswith("private/secret")
    # getLatestArtifact checks scopes before looking for the task
    missing_task = taskcluster.slugId()
    assert rest_error(anonymous.getLatestArtifact, missing_task, "private/x").status_code == 403
    assert rest_error(anonymous.getLatestArtifact, missing_task, "public/x").status_code == 404


def test_create_artifact_checks_in_upstreams_order(artifact_queue: ArtifactQueue) -> None:
    service = artifact_queue.service
    queue = root_queue(service)
    body = {"storageType": "reference", "url": "https://example.com/", "contentType": "text/plain"}
    task_id, worker = running_run(service)
    # expires more than 15 minutes in the past; a run that does not exist
    stale = {**body, "expires": in_("-20 minutes")}
    assert rest_error(worker.createArtifact, task_id, "0", "public/x", stale).status_code == 400
    fresh = {**body, "expires": in_("1 day")}
    assert rest_error(queue.createArtifact, task_id, "3", "public/x", fresh).status_code == 400
    # beyond the task's expiry
    late = {**body, "expires": in_("400 days")}
    assert rest_error(worker.createArtifact, task_id, "0", "public/x", late).status_code == 400
    # a run never claimed (pending) is an input error, before the scope check
    pending_task, tq = taskcluster.slugId(), new_task_queue_id()
    queue.createTask(pending_task, task_definition(tq))
    nobody = client_with_scopes(service, [])
    assert (
        rest_error(nobody.createArtifact, pending_task, "0", "public/x", fresh).status_code == 400
    )
    # someone else's run: 403
    assert rest_error(nobody.createArtifact, task_id, "0", "public/x", fresh).status_code == 403
    # schema errors are 400 (`object` artifacts: test_object_artifacts.py)
    odd = {"storageType": "s3", "expires": in_("1 day")}
    assert rest_error(worker.createArtifact, task_id, "0", "public/o", odd).status_code == 400
    # re-creating: identical is fine, reference -> link is fine, other changes are 409
    first = worker.createArtifact(task_id, "0", "public/x", fresh)
    again = worker.createArtifact(task_id, "0", "public/x", fresh)
    assert first == again == {"storageType": fresh["storageType"]}
    other_type = {**fresh, "contentType": "text/html"}
    assert (
        rest_error(worker.createArtifact, task_id, "0", "public/x", other_type).status_code == 409
    )
    shorter = {**fresh, "expires": in_("1 hour")}
    assert rest_error(worker.createArtifact, task_id, "0", "public/x", shorter).status_code == 409
    link = {"storageType": "link", "artifact": "public/y", "expires": in_("2 days")}
    assert worker.createArtifact(task_id, "0", "public/x", link) == {"storageType": "link"}
    assert (
        root_queue(artifact_queue.service).artifactInfo(task_id, "0", "public/x")["storageType"]
        == "link"
    )
    error = {
        "storageType": "error",
        "reason": "file-missing-on-worker",
        "message": "m",
        "expires": in_("2 days"),
    }
    assert rest_error(worker.createArtifact, task_id, "0", "public/x", error).status_code == 409
    # finishArtifact is for object artifacts only
    assert (
        rest_error(worker.finishArtifact, task_id, "0", "public/x", {"uploadId": "u"}).status_code
        == 400
    )
    # a resolved run takes no more artifacts, except within 25 minutes of an exception
    worker.reportCompleted(task_id, "0")
    assert rest_error(worker.createArtifact, task_id, "0", "public/z", fresh).status_code == 409
    failed_task, failed_worker = running_run(service)
    failed_worker.reportException(failed_task, "0", {"reason": "malformed-payload"})
    failed_worker.createArtifact(failed_task, "0", "public/after-exception", fresh)


def test_listing_and_info(artifact_queue: ArtifactQueue) -> None:
    service = artifact_queue.service
    task_id, worker = running_run(service, retries=1)
    names = [f"public/file-{i:02d}" for i in range(7)]
    for name in names:
        worker.createArtifact(
            task_id,
            "0",
            name,
            {
                "storageType": "s3",
                "contentType": "application/octet-stream",
                "contentLength": 3,
                "expires": in_("1 day"),
            },
        )
    queue = root_queue(service)
    listed: list[dict[str, Any]] = []
    page = queue.listArtifacts(task_id, "0", query={"limit": 3})
    listed += page["artifacts"]
    while "continuationToken" in page:
        page = queue.listArtifacts(
            task_id, "0", query={"limit": 3, "continuationToken": page["continuationToken"]}
        )
        listed += page["artifacts"]
    assert [a["name"] for a in listed] == names
    assert set(listed[0]) == {"storageType", "name", "expires", "contentType", "contentLength"}
    assert queue.listLatestArtifacts(task_id)["artifacts"] == listed
    info = queue.artifactInfo(task_id, "0", names[0])
    assert info == listed[0]
    assert queue.latestArtifactInfo(task_id, names[0]) == info
    assert rest_error(queue.artifactInfo, task_id, "0", "public/none").status_code == 404
    assert rest_error(queue.listArtifacts, task_id, "5").status_code == 404
    # "latest" is the last run, whatever its state
    worker.reportException(task_id, "0", {"reason": "worker-shutdown"})  # retried: run 1
    assert queue.listLatestArtifacts(task_id)["artifacts"] == []
    assert rest_error(queue.getLatestArtifact, task_id, names[0]).status_code == 404


def test_an_expired_artifact_is_gone(artifact_queue: ArtifactQueue) -> None:
    service = artifact_queue.service
    task_id, worker = running_run(service)
    soon = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)).isoformat()
    worker.createArtifact(
        task_id,
        "0",
        "public/short",
        {
            "storageType": "reference",
            "url": "https://example.com/",
            "contentType": "text/plain",
            "expires": soon.replace("+00:00", "Z"),
        },
    )
    time.sleep(1.2)
    assert (
        rest_error(root_queue(service).getArtifact, task_id, "0", "public/short").status_code == 410
    )


async def test_artifact_created_is_published(artifact_queue: ArtifactQueue, broker: Broker) -> None:
    service = artifact_queue.service
    task_id, worker = running_run(service)
    received = await subscribe(
        broker, [{"exchange": PREFIX + "artifact-created", "routingKeyPattern": f"*.{task_id}.#"}]
    )
    worker.createArtifact(
        task_id,
        "0",
        "public/r",
        {
            "storageType": "reference",
            "url": "https://example.com/",
            "contentType": "text/plain",
            "expires": in_("1 day"),
        },
    )
    message = await received.next(10)
    assert message.body["artifact"]["name"] == "public/r"
    assert message.body["artifact"]["storageType"] == "reference"
    assert message.body["workerGroup"] == "wg" and message.body["runId"] == 0
    assert message.routing_key.startswith(f"primary.{task_id}.0.wg.w1.")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_200_mb_artifact_streams_in_constant_memory(artifact_queue: ArtifactQueue) -> None:
    service = artifact_queue.service
    size, block = 200 * 1024 * 1024, os.urandom(1024 * 1024)
    task_id, worker = running_run(service)
    created = worker.createArtifact(
        task_id,
        "0",
        "public/big.bin",
        {
            "storageType": "s3",
            "contentType": "application/octet-stream",
            "expires": in_("1 day"),
        },
    )
    before = rss_kb(artifact_queue.pid)

    async def blocks() -> Any:
        for _ in range(size // len(block)):
            yield block

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        async with session.put(created["putUrl"], data=blocks(), headers=headers) as response:
            assert response.status == 200, await response.text()
        url = root_queue(service).artifact(task_id, "0", "public/big.bin")["url"]
        received, peak, digest = 0, 0, hashlib.sha256()
        async with session.get(url) as response:
            async for chunk in response.content.iter_chunked(1024 * 1024):
                digest.update(chunk)
                received += len(chunk)
                peak = max(peak, rss_kb(artifact_queue.pid))
    assert received == size
    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)
    assert digest.digest() == expected.digest()
    growth_mb = (max(peak, rss_kb(artifact_queue.pid)) - before) / 1024
    assert growth_mb < 64, f"the queue grew by {growth_mb:.0f} MB for a 200 MB artifact"


async def test_expired_artifacts_are_deleted_with_their_bytes(
    artifact_queue: ArtifactQueue, broker: Broker, settings: Settings
) -> None:
    service = artifact_queue.service
    task_id, worker = running_run(service)
    soon = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)).isoformat()
    created = worker.createArtifact(
        task_id,
        "0",
        "public/old.bin",
        {"storageType": "s3", "contentType": "application/octet-stream", "expires": soon},
    )
    put(created["putUrl"], b"x" * 1000, "application/octet-stream")
    url = root_queue(service).artifact(task_id, "0", "public/old.bin")["url"]
    assert await asyncio.to_thread(status_of, url) == 200
    await asyncio.sleep(1.2)
    # claim-expiry's sweep, with the same store settings as the queue under test
    client = dbmod.connect(settings.mongo_url)
    try:
        db = client[service.mongo_db]
        queue_settings = load_settings(**artifact_queue.settings)
        byte_store = artifact_bytes.open_store(queue_settings, db)
        await byte_store.start()
        runtime = Runtime(queue_settings, db, broker, TaskStore(db, Outbox(db, broker)))
        assert await Expirer(runtime, byte_store).expire_artifacts(utcnow()) >= 1
    finally:
        await client.close()
    assert await asyncio.to_thread(status_of, url) in (403, 404)  # the bytes are gone
    listed = root_queue(service).listArtifacts(task_id, "0")["artifacts"]
    assert "public/old.bin" not in [a["name"] for a in listed]


def test_any_replica_serves_the_embedded_stores_urls(
    queue_service: RunningService, tmp_path: Path
) -> None:
    service = queue_service  # the default store: bytes in MongoDB, URLs served by replicas
    task_id, worker = running_run(service)
    created = worker.createArtifact(
        task_id,
        "0",
        "public/shared.txt",
        {"storageType": "s3", "contentType": "text/plain", "expires": in_("1 day")},
    )
    # A second replica on the same database: it takes the upload signed by the first...
    other, process = launch_queue(tmp_path, database=service.mongo_db)
    try:
        put(created["putUrl"].replace(service.root_url, other.root_url), b"both", "text/plain")
        # ...and the first serves what the second signed.
        url = root_queue(other).artifact(task_id, "0", "public/shared.txt")["url"]
        assert url.startswith(other.root_url)
        assert requests.get(url.replace(other.root_url, service.root_url)).content == b"both"
    finally:
        stop_process(process)


def test_latest_artifact_follows_the_last_run(artifact_queue: ArtifactQueue) -> None:
    service = artifact_queue.service
    task_id, worker = running_run(service, retries=1)
    request = {"storageType": "s3", "contentType": "text/plain", "expires": in_("1 day")}
    created = worker.createArtifact(task_id, "0", "public/run0.txt", request)
    put(created["putUrl"], b"from run 0", "text/plain")
    queue = root_queue(service)
    latest = queue.latestArtifact(task_id, "public/run0.txt")
    assert latest["storageType"] == "s3"
    assert requests.get(latest["url"]).content == b"from run 0"
    assert latest == queue.artifact(task_id, "0", "public/run0.txt") | {"url": latest["url"]}
    worker.reportException(task_id, "0", {"reason": "worker-shutdown"})  # retried: run 1
    assert rest_error(queue.latestArtifact, task_id, "public/run0.txt").status_code == 404
    assert queue.artifact(task_id, "0", "public/run0.txt")["storageType"] == "s3"
