"""`object` artifacts and the object service, through the official client's helpers, on
both byte stores (embedded in MongoDB, and S3 on moto's server).

Real processes: the queue, the object service and, in front of both, the ingress (nginx
rendered from deploy/ingress/) as the one root URL (`/api/object/` to the object service,
the queue's paths to the queue), because the client's `downloadArtifact` reaches the
object service at the queue's root URL.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import requests
import taskcluster
import taskcluster.aio
from taskcluster import download, upload
from taskcluster.aio import upload as aio_upload
from taskcluster.exceptions import TaskclusterRestFailure

from shared.broker import Broker
from shared.config import Settings
from tests.conftest import (
    RunningService,
    _drop_database,
    _free_port,
    launch_queue,
    launch_service,
    stop_process,
)
from tests.ingress_support import launch_ingress
from tests.integration.queue_support import (
    claim_one,
    client_with_scopes,
    new_task_queue_id,
    root_queue,
    task_definition,
    worker_queue,
)
from tests.integration.test_queue_events import PREFIX, subscribe
from tests.integration.test_slow_clients import forever, trickle

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class Deployment:
    kind: str
    service: RunningService  # root_url: the ingress
    object_url: str  # the object service's own port: for the slow-client test only


def _wait_ok(url: str, process: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{what} did not answer {url} within 30 s")


MAX_BYTES = 1_000_000  # FLOTILLA_ARTIFACT_MAX_BYTES of these deployments


@pytest.fixture(scope="module", params=["mongodb", "s3"])
def deployment(
    request: pytest.FixtureRequest, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    kind: str = request.param
    directory = tmp_path_factory.mktemp(f"objects-{kind}")
    ingress_port, queue_port, object_port = _free_port(), _free_port(), _free_port()
    root_url = f"http://127.0.0.1:{ingress_port}"
    database = f"test_objects_{uuid.uuid4().hex[:8]}"
    token = f"tok-{uuid.uuid4().hex}"
    env = {
        "FLOTILLA_ARTIFACT_STORE": kind,
        "FLOTILLA_ROOT_URL": root_url,
        "FLOTILLA_OBJECT_URL": f"http://127.0.0.1:{object_port}",
        "FLOTILLA_OBJECT_PORT": str(object_port),
        "FLOTILLA_ROOT_ACCESS_TOKEN": token,
        "FLOTILLA_ARTIFACT_MAX_BYTES": str(MAX_BYTES),
    }
    if kind == "s3":
        env |= {
            "FLOTILLA_S3_ENDPOINT_URL": request.getfixturevalue("moto_server"),
            "FLOTILLA_S3_BUCKET": f"objects-{uuid.uuid4().hex[:8]}",
            "FLOTILLA_S3_ACCESS_KEY_ID": "testing",
            "FLOTILLA_S3_SECRET_ACCESS_KEY": "testing",
        }
    processes = []
    try:
        queue, queue_process = launch_queue(
            directory, database=database, port=queue_port, token=token, extra_env=env
        )
        processes.append(queue_process)
        # A body must keep up 10 kB/s after 1 s (the slow-upload test); the rest is fast.
        slow_bodies = {"FLOTILLA_HTTP_BODY_GRACE": "1", "FLOTILLA_HTTP_BODY_MIN_RATE": "10000"}
        processes.append(
            launch_service("object", directory, database=database, extra_env=env | slow_bodies)
        )
        _wait_ok(f"http://127.0.0.1:{object_port}/api/object/v1/ping", processes[-1], "object")
        ingress = launch_ingress(
            {"queue": [f"127.0.0.1:{queue_port}"], "object": [f"127.0.0.1:{object_port}"]},
            directory,
            port=ingress_port,
        )
        processes.append(ingress.process)
        _wait_ok(f"{root_url}/api/object/v1/ping", ingress.process, "ingress")
        yield Deployment(kind, replace(queue, root_url=root_url), f"http://127.0.0.1:{object_port}")
    finally:
        for process in reversed(processes):
            stop_process(process)
        _drop_database(settings.mongo_url, database)


def options(service: RunningService, credentials: dict[str, str]) -> dict[str, Any]:
    return {"rootUrl": service.root_url, "credentials": credentials, "maxRetries": 0}


def running_run(service: RunningService) -> tuple[str, taskcluster.Queue]:
    queue, tq, task_id = root_queue(service), new_task_queue_id(), taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, projectId="proj-a"))
    return task_id, worker_queue(service, claim_one(queue, tq))


EXPIRES = taskcluster.fromNowJSON("1 day")  # a retrying worker repeats its expires


def create_object_artifact(
    worker: taskcluster.Queue, task_id: str, name: str, data: bytes
) -> dict[str, Any]:
    body = {
        "storageType": "object",
        "contentType": "application/octet-stream",
        "contentLength": len(data),
        "expires": EXPIRES,
    }
    return worker.createArtifact(task_id, "0", name, body)


def upload_as_worker(service: RunningService, created: dict[str, Any], data: bytes) -> None:
    """What generic-worker does with createArtifact's answer: the client's upload helper."""
    upload.uploadFromBuf(
        projectId=created["projectId"],
        name=created["name"],
        contentType="application/octet-stream",
        contentLength=len(data),
        expires=created["expires"],
        uploadId=created["uploadId"],
        data=data,
        maxRetries=0,
        objectService=taskcluster.Object(options(service, created["credentials"])),
    )


def rest_error(call: Any, *args: Any, **kwargs: Any) -> TaskclusterRestFailure:
    with pytest.raises(TaskclusterRestFailure) as raised:
        call(*args, **kwargs)
    return raised.value


@pytest.mark.parametrize("size", [100, 300_000])  # dataInline; putUrl over two chunks
def test_a_worker_uploads_an_object_artifact_and_a_reader_downloads_it(
    deployment: Deployment, size: int
) -> None:
    service = deployment.service
    task_id, worker = running_run(service)
    data = os.urandom(size)
    name = "public/build/out.bin"
    created = create_object_artifact(worker, task_id, name, data)
    assert created["storageType"] == "object"
    assert created["name"] == f"t/{task_id}/0/{name}"
    assert created["projectId"] == "proj-a"
    assert created["credentials"]["clientId"] == f"artifact-upload/{task_id}/0/on/wg/w1"
    # an identical repeat (a worker retrying) hands out the same upload
    again = create_object_artifact(worker, task_id, name, data)
    assert (again["uploadId"], again["expires"]) == (created["uploadId"], created["expires"])
    reader = client_with_scopes(service, ["queue:get-artifact:public/*"])
    # not present until finished: neither downloadable nor listed
    assert rest_error(reader.getArtifact, task_id, "0", name).status_code == 404
    assert rest_error(reader.latestArtifact, task_id, name).status_code == 404
    assert root_queue(service).listArtifacts(task_id, "0")["artifacts"] == []

    upload_as_worker(service, created, data)
    worker.finishArtifact(task_id, "0", name, {"uploadId": created["uploadId"]})
    worker.finishArtifact(task_id, "0", name, {"uploadId": created["uploadId"]})  # idempotent

    buf, content_type = download.downloadArtifactToBuf(
        taskId=task_id, name=name, maxRetries=0, queueService=reader
    )
    assert bytes(buf) == data and content_type == "application/octet-stream"
    buf, _ = download.downloadArtifactToBuf(
        taskId=task_id, runId=0, name=name, maxRetries=0, queueService=reader
    )
    assert bytes(buf) == data
    # getArtifact: 303 + {storageType, url}, the simple URL serving the bytes
    got = reader.getArtifact(task_id, "0", name)
    assert got["storageType"] == "object"
    assert requests.get(got["url"]).content == data
    listed = root_queue(service).listArtifacts(task_id, "0")["artifacts"]
    assert [(a["name"], a["storageType"], a.get("contentLength")) for a in listed] == [
        (name, "object", size)
    ]
    # the object's metadata carries the hashes the uploader sent
    meta = taskcluster.Object(service.client_options()).object(created["name"])
    assert meta["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_the_object_service_round_trip_with_the_client_helpers(deployment: Deployment) -> None:
    service = deployment.service
    name = f"things/{uuid.uuid4().hex}/file with spaces.txt"
    objects = taskcluster.Object(service.client_options())
    data = b"hello object service\n" * 1000
    expires = taskcluster.fromNow("1 hour")
    upload.uploadFromBuf(
        projectId="proj-b",
        name=name,
        contentType="text/plain",
        contentLength=len(data),
        expires=expires,
        data=data,
        objectService=objects,
    )
    buf, content_type = download.downloadToBuf(name=name, objectService=objects)
    assert bytes(buf) == data and content_type == "text/plain"
    simple = objects.startDownload(name, {"acceptDownloadMethods": {"simple": True}})
    assert simple["method"] == "simple"
    assert requests.get(simple["url"]).content == data
    response = requests.get(objects.buildSignedUrl("download", name), allow_redirects=False)
    assert response.status_code == 303
    assert requests.get(response.headers["Location"]).content == data
    assert rest_error(objects.startDownload, name, {"acceptDownloadMethods": {}}).status_code == 406


def test_bad_input_is_refused_and_changes_nothing(deployment: Deployment) -> None:
    service = deployment.service
    objects = taskcluster.Object(service.client_options())
    name = f"bad/{uuid.uuid4().hex}"
    data = b"twelve bytes"
    expires = taskcluster.fromNowJSON("1 hour")
    upload_id = taskcluster.slugId()

    def create(**fields: Any) -> dict[str, Any]:
        body = {
            "projectId": "p",
            "uploadId": upload_id,
            "expires": expires,
            "proposedUploadMethods": {},
            **fields,
        }
        return objects.createUpload(name, body)

    inline = {"contentType": "text/plain", "objectData": base64.b64encode(data).decode()}
    wrong = {"sha256": hashlib.sha256(b"other").hexdigest()}
    # declared hashes that the inline data contradicts, bad base64, malformed hashes: 400
    bad_calls = [
        {"hashes": wrong, "proposedUploadMethods": {"dataInline": inline}},
        {"proposedUploadMethods": {"dataInline": {**inline, "objectData": "not base64!"}}},
        {"hashes": {"sha256": "abc"}},
        {"uploadId": "not-a-slugid"},
        # more than an artifact may hold (S3 would take what the URL is signed for)
        {
            "proposedUploadMethods": {
                "putUrl": {"contentType": "text/plain", "contentLength": MAX_BYTES + 1}
            }
        },
    ]
    for fields in bad_calls:
        assert rest_error(create, **fields).status_code == 400, fields
    # none of them locked the name: a fresh upload id is still welcome
    upload_id = taskcluster.slugId()
    created = create(
        proposedUploadMethods={"putUrl": {"contentType": "text/plain", "contentLength": len(data)}}
    )
    put_url = created["uploadMethod"]["putUrl"]
    # locked in: another uploadId, projectId or expires is 409
    assert rest_error(create, uploadId=taskcluster.slugId()).status_code == 409
    assert rest_error(create, projectId="q").status_code == 409
    # finishing before the bytes are there is 400, and nothing is finished
    finish = {"projectId": "p", "uploadId": upload_id}
    assert rest_error(objects.finishUpload, name, finish).status_code == 400
    assert rest_error(objects.object, name).status_code == 404
    if deployment.kind == "mongodb":  # the length is signed into the embedded store's URL
        other = requests.put(
            put_url["url"], data=data + b"!", headers={"Content-Type": "text/plain"}
        )
        assert other.status_code == 400, other.text
        assert rest_error(objects.finishUpload, name, finish).status_code == 400
    response = requests.put(put_url["url"], data=data, headers=put_url["headers"])
    assert response.status_code == 200, response.text
    # wrong uploadId 409, wrong projectId 400; hashes differing from declared ones 409
    assert (
        rest_error(
            objects.finishUpload, name, {**finish, "uploadId": taskcluster.slugId()}
        ).status_code
        == 409
    )
    assert rest_error(objects.finishUpload, name, {**finish, "projectId": "q"}).status_code == 400
    good = {"sha256": hashlib.sha256(data).hexdigest()}
    create(hashes=good)
    assert rest_error(objects.finishUpload, name, {**finish, "hashes": wrong}).status_code == 409
    assert rest_error(objects.object, name).status_code == 404
    objects.finishUpload(name, {**finish, "hashes": good})
    objects.finishUpload(name, {**finish, "hashes": good})  # a repeat is fine
    assert objects.object(name)["hashes"] == good
    # finished objects are immutable
    assert rest_error(create).status_code == 409
    assert rest_error(objects.finishUpload, name, {**finish, "hashes": wrong}).status_code == 409


# Only the embedded store serves the byte URLs itself (S3 serves its own presigned ones).
@pytest.mark.parametrize("deployment", ["mongodb"], indirect=True)
def test_a_trickled_put_to_a_signed_object_url_is_cut_off(deployment: Deployment) -> None:
    objects = taskcluster.Object(deployment.service.client_options())
    name = f"slow/{uuid.uuid4().hex}"
    body = {
        "projectId": "p",
        "uploadId": taskcluster.slugId(),
        "expires": taskcluster.fromNowJSON("1 hour"),
        "proposedUploadMethods": {
            "putUrl": {"contentType": "text/plain", "contentLength": 100_000}
        },
    }
    url = objects.createUpload(name, body)["uploadMethod"]["putUrl"]["url"]
    parts = urllib.parse.urlsplit(url)
    head = (
        f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\n"
    )
    cut, answer = trickle(deployment.object_url, head, forever(b"x"))
    assert cut and answer.startswith(b"HTTP/1.1 408"), answer
    finish = {"projectId": "p", "uploadId": body["uploadId"]}
    assert rest_error(objects.finishUpload, name, finish).status_code == 400  # nothing stored


def test_queue_object_artifacts_refuse_bad_finishes(deployment: Deployment) -> None:
    service = deployment.service
    task_id, worker = running_run(service)
    data = b"x" * 50
    created = create_object_artifact(worker, task_id, "public/a", data)
    # the upload is not finished yet
    finish = {"uploadId": created["uploadId"]}
    assert rest_error(worker.finishArtifact, task_id, "0", "public/a", finish).status_code == 400
    upload_as_worker(service, created, data)
    wrong = {"uploadId": taskcluster.slugId()}
    assert rest_error(worker.finishArtifact, task_id, "0", "public/a", wrong).status_code == 400
    assert rest_error(root_queue(service).getArtifact, task_id, "0", "public/a").status_code == 404
    # an object artifact's expires is locked with its object
    later = {
        "storageType": "object",
        "contentType": "application/octet-stream",
        "contentLength": len(data),
        "expires": taskcluster.fromNowJSON("2 days"),
    }
    assert rest_error(worker.createArtifact, task_id, "0", "public/a", later).status_code == 409
    worker.finishArtifact(task_id, "0", "public/a", finish)
    assert (
        requests.get(root_queue(service).getArtifact(task_id, "0", "public/a")["url"]).content
        == data
    )


def test_an_upload_of_another_length_cannot_be_finished(deployment: Deployment) -> None:
    """The embedded store refuses such a PUT; S3 would too (the length is signed into its
    URL), but moto does not check presigned signatures and stores it, so finishUpload must
    refuse it: the artifact stays unfinished, and a correct upload still finishes it."""
    service = deployment.service
    task_id, worker = running_run(service)
    data = os.urandom(10_000)
    created = create_object_artifact(worker, task_id, "public/a", data)
    objects = taskcluster.Object(options(service, created["credentials"]))
    common = {"projectId": created["projectId"], "uploadId": created["uploadId"]}
    method = {"putUrl": {"contentType": "application/octet-stream", "contentLength": len(data)}}
    answer = objects.createUpload(
        created["name"], {**common, "expires": created["expires"], "proposedUploadMethods": method}
    )
    put = answer["uploadMethod"]["putUrl"]
    content_type = {"Content-Type": put["headers"]["Content-Type"]}
    queue, finish = root_queue(service), {"uploadId": created["uploadId"]}
    for wrong in (data + b"!", data[:-1]):
        requests.put(put["url"], data=wrong, headers=content_type, timeout=30)
        refused = rest_error(objects.finishUpload, created["name"], common)
        assert (refused.status_code, refused.body["code"]) == (400, "InputError")
        # the wrong bytes are gone: finishing again finds nothing uploaded
        again = rest_error(objects.finishUpload, created["name"], common)
        assert "No data was uploaded" in again.body["message"]
        refused = rest_error(worker.finishArtifact, task_id, "0", "public/a", finish)
        assert (refused.status_code, refused.body["code"]) == (400, "InputError")
        assert rest_error(queue.artifactInfo, task_id, "0", "public/a").status_code == 404
        assert rest_error(queue.getArtifact, task_id, "0", "public/a").status_code == 404
    response = requests.put(put["url"], data=data, headers=put["headers"], timeout=30)
    assert response.status_code == 200, response.text
    objects.finishUpload(created["name"], common)
    worker.finishArtifact(task_id, "0", "public/a", finish)
    assert queue.artifactInfo(task_id, "0", "public/a")["contentLength"] == len(data)
    assert requests.get(queue.getArtifact(task_id, "0", "public/a")["url"]).content == data


def test_object_scopes_are_enforced(deployment: Deployment) -> None:
    service = deployment.service
    task_id, worker = running_run(service)
    data = b"secret bytes"
    created = create_object_artifact(worker, task_id, "private/a", data)
    uploader = taskcluster.Object(options(service, created["credentials"]))
    # the upload credentials cover that one object only
    other = {
        "projectId": created["projectId"],
        "uploadId": taskcluster.slugId(),
        "expires": created["expires"],
        "proposedUploadMethods": {},
    }
    assert rest_error(uploader.createUpload, f"t/{task_id}/0/private/b", other).status_code == 403
    assert (
        rest_error(
            uploader.startDownload, created["name"], {"acceptDownloadMethods": {"getUrl": True}}
        ).status_code
        == 403
    )
    upload_as_worker(service, created, data)
    worker.finishArtifact(task_id, "0", "private/a", {"uploadId": created["uploadId"]})
    # a reader without queue:get-artifact:private/a gets nothing from the queue ...
    public_only = client_with_scopes(service, ["queue:get-artifact:public/*"])
    assert rest_error(public_only.artifact, task_id, "0", "private/a").status_code == 403
    # ... nor from the object service directly
    nobody = taskcluster.Object(options(service, public_only.options["credentials"]))
    assert (
        rest_error(
            nobody.startDownload, created["name"], {"acceptDownloadMethods": {"getUrl": True}}
        ).status_code
        == 403
    )
    # a reader with it gets download credentials for that object alone
    reader = client_with_scopes(service, ["queue:get-artifact:private/a"])
    content = reader.artifact(task_id, "0", "private/a")
    assert content["storageType"] == "object" and content["name"] == created["name"]
    downloader = taskcluster.Object(options(service, content["credentials"]))
    buf, _ = download.downloadToBuf(name=created["name"], objectService=downloader)
    assert bytes(buf) == data
    other_object = {"acceptDownloadMethods": {"getUrl": True}}
    assert (
        rest_error(downloader.startDownload, f"t/{task_id}/0/private/b", other_object).status_code
        == 403
    )


async def test_artifact_created_is_published_on_finish(
    deployment: Deployment, broker: Broker
) -> None:
    service = deployment.service
    task_id, worker = running_run(service)
    received = await subscribe(
        broker, [{"exchange": PREFIX + "artifact-created", "routingKeyPattern": f"*.{task_id}.#"}]
    )
    data = b"event me"
    created = create_object_artifact(worker, task_id, "public/e", data)
    async with taskcluster.aio.createSession() as session:
        await aio_upload.uploadFromBuf(
            projectId=created["projectId"],
            name=created["name"],
            contentType="application/octet-stream",
            contentLength=len(data),
            expires=created["expires"],
            uploadId=created["uploadId"],
            data=data,
            maxRetries=0,
            objectService=taskcluster.aio.Object(
                options(service, created["credentials"]), session=session
            ),
        )
    assert received.messages.empty()  # nothing until finished: the artifact is not there yet
    worker.finishArtifact(task_id, "0", "public/e", {"uploadId": created["uploadId"]})
    message = await received.next(10)
    assert message.body["artifact"]["name"] == "public/e"
    assert message.body["artifact"]["storageType"] == "object"
    assert message.routing_key.startswith(f"primary.{task_id}.0.wg.w1.")
