"""The index service as a real process (`python -m services.index`) on the session queue's
database, driven through `taskcluster.Index`; completed tasks reach it through the real
RabbitMQ from the real queue."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from shared import db as dbmod
from shared.broker import Broker
from shared.routing import task_routing_key
from tests.conftest import (
    RunningService,
    _drop_database,
    _free_port,
    launch_queue,
    launch_service,
    poll_until,
    stop_process,
)
from tests.integration.queue_support import (
    claim_one,
    client_with_scopes,
    new_task_queue_id,
    root_queue,
    task_definition,
    worker_queue,
)


@dataclass
class IndexService:
    process: subprocess.Popen[bytes]
    url: str
    queue: RunningService
    log_path: Path

    def index(self, **credentials: str) -> taskcluster.Index:
        options = {**self.queue.client_options(**credentials), "rootUrl": self.url}
        return taskcluster.Index(options)


def start_index(queue: RunningService, directory: Path, port: int | None = None) -> IndexService:
    port = port or _free_port()
    process = launch_service(
        "index",
        directory,
        database=queue.mongo_db,
        extra_env={
            "FLOTILLA_INDEX_PORT": str(port),
            "FLOTILLA_ROOT_URL": queue.root_url,
            "FLOTILLA_ROOT_ACCESS_TOKEN": queue.root_access_token,
            "FLOTILLA_INDEX_QUEUE_EXPIRES": "60",
        },
    )
    url = f"http://127.0.0.1:{port}"
    log_path = max(directory.glob("index-*.log"), key=lambda p: p.stat().st_mtime)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"index exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/index/v1/ping", timeout=1):
                return IndexService(process, url, queue, log_path)
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail("index did not answer its ping")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def index_service(
    queue_service: RunningService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IndexService]:
    service = start_index(queue_service, tmp_path_factory.mktemp("index"))
    try:
        yield service
    finally:
        stop_process(service.process)


def ns(*keys: str) -> str:
    return ".".join([f"t{uuid.uuid4().hex[:8]}", *keys])


def entry(task_id: str, rank: float = 0, expires: str = "1 day", **data: Any) -> dict[str, Any]:
    return {
        "taskId": task_id,
        "rank": rank,
        "data": data,
        "expires": taskcluster.fromNowJSON(expires),
    }


def complete_task(queue: RunningService, **task: Any) -> str:
    client = root_queue(queue)
    task_queue_id = new_task_queue_id()
    task_id = taskcluster.slugId()
    client.createTask(task_id, task_definition(task_queue_id, **task))
    claim = claim_one(client, task_queue_id)
    worker_queue(queue, claim).reportCompleted(task_id, "0")
    return task_id


def test_insert_find_and_list_with_paging(index_service: IndexService) -> None:
    index = index_service.index()
    top = ns()
    a, b, c = taskcluster.slugId(), taskcluster.slugId(), taskcluster.slugId()
    assert index.ping()["alive"] is True
    stored = index.insertTask(f"{top}.proj.a", entry(a, 3, build="x"))
    assert (stored["namespace"], stored["taskId"], stored["rank"]) == (f"{top}.proj.a", a, 3)
    index.insertTask(f"{top}.proj.b", entry(b))
    index.insertTask(f"{top}.proj.deeper.c", entry(c))
    index.insertTask(f"{top}.other.x", entry(c))

    found = index.findTask(f"{top}.proj.a")
    assert (found["taskId"], found["data"], found["rank"]) == (a, {"build": "x"}, 3)

    # direct children only, in name order, one per page
    first = index.listTasks(f"{top}.proj", query={"limit": 1})
    assert [t["taskId"] for t in first["tasks"]] == [a]
    second = index.listTasks(
        f"{top}.proj", query={"limit": 1, "continuationToken": first["continuationToken"]}
    )
    assert [t["namespace"] for t in second["tasks"]] == [f"{top}.proj.b"]
    assert index.listTasks(f"{top}.proj.deeper")["tasks"][0]["taskId"] == c

    names = index.listNamespaces(top)["namespaces"]
    assert [(n["namespace"], n["name"]) for n in names] == [
        (f"{top}.other", "other"),
        (f"{top}.proj", "proj"),
    ]
    assert [n["name"] for n in index.listNamespaces(f"{top}.proj")["namespaces"]] == ["deeper"]
    # the top level (no namespace) includes ours
    seen: list[str] = []
    query: dict[str, Any] = {}
    while True:
        page = index.listNamespaces("", query=query)
        seen += [n["namespace"] for n in page["namespaces"]]
        if "continuationToken" not in page:
            break
        query = {"continuationToken": page["continuationToken"]}
    assert top in seen

    with pytest.raises(TaskclusterRestFailure) as missing:
        index.findTask(f"{top}.proj.nothing")
    assert missing.value.status_code == 404
    with pytest.raises(TaskclusterRestFailure) as bad:
        index.insertTask(f"{top}..x", entry(a))
    assert bad.value.status_code == 400
    with pytest.raises(TaskclusterRestFailure) as bad_body:
        index.insertTask(f"{top}.y", {"taskId": a, "rank": "high", "data": {}, "expires": "x"})
    assert bad_body.value.status_code == 400
    assert index.listTasks(top)["tasks"] == []  # neither bad insert stored anything


def test_a_lower_rank_does_not_replace_an_equal_one_does(index_service: IndexService) -> None:
    index = index_service.index()
    path = ns("latest")
    first, lower, equal = taskcluster.slugId(), taskcluster.slugId(), taskcluster.slugId()
    index.insertTask(path, entry(first, 5))
    answer = index.insertTask(path, entry(lower, 4))
    assert (answer["taskId"], answer["rank"]) == (first, 5)  # the existing entry
    assert index.findTask(path)["taskId"] == first
    index.insertTask(path, entry(equal, 5))
    assert index.findTask(path)["taskId"] == equal


def test_expired_entries_are_not_found(index_service: IndexService) -> None:
    index = index_service.index()
    parent = ns()
    old, new = taskcluster.slugId(), taskcluster.slugId()
    index.insertTask(f"{parent}.gone", entry(old, 10, expires="-1 hour"))
    with pytest.raises(TaskclusterRestFailure) as missing:
        index.findTask(f"{parent}.gone")
    assert missing.value.status_code == 404
    assert index.listTasks(parent)["tasks"] == []
    # an expired entry, whatever its rank, does not block a new one
    index.insertTask(f"{parent}.gone", entry(new, 0))
    assert index.findTask(f"{parent}.gone")["taskId"] == new


def test_insert_needs_the_namespace_scope(index_service: IndexService) -> None:
    allowed = ns()
    holder = client_with_scopes(index_service.queue, [f"index:insert-task:{allowed}.*"])
    index = index_service.index(**holder.options["credentials"])
    task_id = taskcluster.slugId()
    with pytest.raises(TaskclusterRestFailure) as refused:
        index.insertTask(ns("elsewhere"), entry(task_id))
    assert refused.value.status_code == 403
    assert "index:insert-task:" in str(refused.value)
    index.insertTask(f"{allowed}.mine", entry(task_id))
    # reading needs index:find-task, which only the anonymous role could give
    assert index_service.index().findTask(f"{allowed}.mine")["taskId"] == task_id


async def test_find_artifact_from_task_redirects_to_the_queue(
    index_service: IndexService,
) -> None:
    queue = index_service.queue
    client = root_queue(queue)
    task_queue_id = new_task_queue_id()
    task_id = taskcluster.slugId()
    client.createTask(task_id, task_definition(task_queue_id))
    claim = claim_one(client, task_queue_id)
    worker = worker_queue(queue, claim)
    for name in ("public/where", "private/where", "public/per%41cent"):
        worker.createArtifact(
            task_id,
            "0",
            name,
            {
                "storageType": "reference",
                "expires": taskcluster.fromNowJSON("1 day"),
                "url": f"https://example.com/{name}",
                "contentType": "text/plain",
            },
        )
    path = ns("artifacts")
    index = index_service.index()
    index.insertTask(path, entry(task_id))

    async with aiohttp.ClientSession() as http:

        async def get(url: str) -> aiohttp.ClientResponse:
            async with http.get(url, allow_redirects=False) as response:
                await response.read()
                return response

        public = index.buildUrl("findArtifactFromTask", path, "public/where")
        answer = await get(public)  # no credentials: public names need no scope
        assert answer.status == 303
        location = answer.headers["Location"]
        assert location.startswith(f"{queue.root_url}/api/queue/v1/task/{task_id}/artifacts/")
        followed = await get(location)
        assert (followed.status, followed.headers["Location"]) == (
            303,
            "https://example.com/public/where",
        )

        # a '%' in a name is the name's own, decoded once
        answer = await get(index.buildUrl("findArtifactFromTask", path, "public/per%41cent"))
        followed = await get(answer.headers["Location"])
        assert followed.headers["Location"] == "https://example.com/public/per%41cent"

        private = index.buildUrl("findArtifactFromTask", path, "private/where")
        assert (await get(private)).status == 403  # anonymous lacks queue:get-artifact:private/*
        signed = index.buildSignedUrl("findArtifactFromTask", path, "private/where")
        answer = await get(signed)
        assert answer.status == 303
        # the index signed the queue URL: it works with no credentials of the caller's own
        followed = await get(answer.headers["Location"])
        assert (followed.status, followed.headers["Location"]) == (
            303,
            "https://example.com/private/where",
        )
        missing = index.buildUrl("findArtifactFromTask", ns("none"), "public/where")
        assert (await get(missing)).status == 404


async def test_completed_tasks_index_routes_are_indexed(index_service: IndexService) -> None:
    index = index_service.index()
    path = ns("my", "ns", "latest")
    task_id = complete_task(
        index_service.queue,
        routes=[f"index.{path}", "other.route"],
        extra={"index": {"rank": 7, "data": {"rev": "abc"}}},
    )

    async def indexed() -> dict[str, Any] | None:
        try:
            return index.findTask(path)
        except TaskclusterRestFailure:
            return None

    found = await poll_until(indexed, what="the completed task in the index")
    assert (found["taskId"], found["rank"], found["data"]) == (task_id, 7, {"rev": "abc"})
    # the task's expiry, as upstream (no extra.index.expires)
    task = root_queue(index_service.queue).task(task_id)
    assert found["expires"] == task["expires"]


async def test_a_killed_index_service_loses_no_completed_task(
    settings: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Tasks complete before, while and after the index service is SIGKILLed; once it is
    back, every one of them is indexed (its durable queue kept the events)."""
    directory = tmp_path_factory.mktemp("index-kill")
    database = f"test_index_{uuid.uuid4().hex[:10]}"
    queue, queue_process = launch_queue(directory, database=database)
    try:
        service = start_index(queue, directory)
        port = int(service.url.rsplit(":", 1)[1])
        parent = ns()
        paths = [f"{parent}.t{i}" for i in range(6)]
        ids = []
        for i, path in enumerate(paths):
            if i == 2:
                os.kill(service.process.pid, signal.SIGKILL)
                service.process.wait()
            ids.append(complete_task(queue, routes=[f"index.{path}"]))
        service = start_index(queue, directory, port=port)
        index = service.index()

        async def all_indexed() -> bool:
            return len(index.listTasks(parent)["tasks"]) == len(paths)

        await poll_until(all_indexed, what="every completed task in the index")
        assert [t["taskId"] for t in index.listTasks(parent)["tasks"]] == ids
        stop_process(service.process)
    finally:
        stop_process(queue_process)
        _drop_database(settings.mongo_url, database)


async def test_a_poison_message_is_dropped_after_a_few_attempts(
    index_service: IndexService, broker: Broker, settings: Any
) -> None:
    """A task-completed event whose task cannot be read is retried a few times, then
    dropped (logged), and the events after it are indexed."""
    poison = taskcluster.slugId()
    client = dbmod.connect(settings.mongo_url)
    try:
        await client[index_service.queue.mongo_db]["tasks"].insert_one(
            {"_id": poison, "not": "a task"}
        )
        key = task_routing_key(
            task_id=poison,
            provisioner_id="p",
            worker_type="w",
            scheduler_id="s",
            task_group_id=poison,
        )
        body = {"status": {"taskId": poison}, "runId": 0}
        await broker.publish("task-completed", key, body, cc=["route.index.poison.x"])

        async def dropped() -> bool:
            return "dropping task after" in index_service.log_path.read_text() and (
                poison in index_service.log_path.read_text()
            )

        await poll_until(dropped, what="the poison message to be dropped")
    finally:
        await client[index_service.queue.mongo_db]["tasks"].delete_one({"_id": poison})
        await client.close()
    path = ns("after", "poison")
    task_id = complete_task(index_service.queue, routes=[f"index.{path}"])

    async def indexed() -> bool:
        try:
            return index_service.index().findTask(path)["taskId"] == task_id
        except TaskclusterRestFailure:
            return False

    await poll_until(indexed, what="the task completed after the poison message")
