"""The purge-cache service as a real process (`python -m services.purge_cache`) on the
session queue's database (its clients and roles), driven through `taskcluster.PurgeCache`."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from tests.conftest import RunningService, _free_port, launch_service, stop_process
from tests.integration.queue_support import client_with_scopes


@dataclass
class PurgeCacheService:
    url: str
    queue: RunningService

    def client(self, **credentials: str) -> taskcluster.PurgeCache:
        options = {**self.queue.client_options(**credentials), "rootUrl": self.url}
        return taskcluster.PurgeCache(options)


def start_purge_cache(queue: RunningService, directory: Path) -> tuple[PurgeCacheService, Any]:
    port = _free_port()
    process = launch_service(
        "purge_cache",
        directory,
        database=queue.mongo_db,
        extra_env={
            "FLOTILLA_PURGE_CACHE_PORT": str(port),
            "FLOTILLA_ROOT_URL": queue.root_url,
            "FLOTILLA_ROOT_ACCESS_TOKEN": queue.root_access_token,
        },
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"purge_cache exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/purge-cache/v1/ping", timeout=1):
                return PurgeCacheService(url, queue), process
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail("purge_cache did not answer its ping")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def purge_cache_service(
    queue_service: RunningService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PurgeCacheService]:
    service, process = start_purge_cache(queue_service, tmp_path_factory.mktemp("purge-cache"))
    try:
        yield service
    finally:
        stop_process(process)


def pool() -> str:
    return f"prov-{uuid.uuid4().hex[:8]}/wt-{uuid.uuid4().hex[:6]}"


def test_purge_requests_per_pool_with_since(purge_cache_service: PurgeCacheService) -> None:
    client = purge_cache_service.client()
    assert client.ping()["alive"] is True
    mine, other = pool(), pool()
    assert client.purgeRequests(mine)["requests"] == []
    client.purgeCache(mine, {"cacheName": "checkouts.v1"})
    client.purgeCache(other, {"cacheName": "elsewhere"})
    [request] = client.purgeRequests(mine)["requests"]
    provisioner, worker_type = mine.split("/")
    assert {k: v for k, v in request.items() if k != "before"} == {
        "provisionerId": provisioner,
        "workerType": worker_type,
        "cacheName": "checkouts.v1",
    }
    before = request["before"]
    # since: requests at or after it
    assert len(client.purgeRequests(mine, query={"since": before})["requests"]) == 1
    later = taskcluster.fromNowJSON("1 second")
    assert client.purgeRequests(mine, query={"since": later})["requests"] == []
    # a repeated purge moves `before` on, so a worker that checked since then sees it again
    time.sleep(0.01)  # distinct milliseconds, not readiness
    client.purgeCache(mine, {"cacheName": "checkouts.v1"})
    [again] = client.purgeRequests(mine, query={"since": before})["requests"]
    assert again["before"] > before
    for bad in ("yesterday", "1970-01-01T00:00:00.000Z"):
        with pytest.raises(TaskclusterRestFailure) as refused:
            client.purgeRequests(mine, query={"since": bad})
        assert refused.value.status_code == 400


def test_all_purge_requests_are_ordered_and_paged(
    purge_cache_service: PurgeCacheService,
) -> None:
    client = purge_cache_service.client()
    prefix = f"all-{uuid.uuid4().hex[:8]}"
    pools = [f"{prefix}/b", f"{prefix}/a"]
    for name in ("z", "y"):
        for worker_pool in pools:
            client.purgeCache(worker_pool, {"cacheName": name})
    seen: list[tuple[str, str]] = []
    query: dict[str, Any] = {"limit": 3}
    while True:
        page = client.allPurgeRequests(query=query)
        assert len(page["requests"]) <= 3
        seen += [
            (f"{r['provisionerId']}/{r['workerType']}", r["cacheName"]) for r in page["requests"]
        ]
        if not page.get("continuationToken"):
            break
        query = {"limit": 3, "continuationToken": page["continuationToken"]}
    assert [s for s in seen if s[0].startswith(prefix)] == [
        (f"{prefix}/a", "y"),
        (f"{prefix}/a", "z"),
        (f"{prefix}/b", "y"),
        (f"{prefix}/b", "z"),
    ]


def test_purging_needs_the_pool_and_cache_scope(purge_cache_service: PurgeCacheService) -> None:
    worker_pool = pool()
    holder = client_with_scopes(purge_cache_service.queue, [f"purge-cache:{worker_pool}:mine"])
    client = purge_cache_service.client(**holder.options["credentials"])
    with pytest.raises(TaskclusterRestFailure) as refused:
        client.purgeCache(worker_pool, {"cacheName": "theirs"})
    assert refused.value.status_code == 403
    client.purgeCache(worker_pool, {"cacheName": "mine"})
    names = [
        r["cacheName"] for r in purge_cache_service.client().purgeRequests(worker_pool)["requests"]
    ]
    assert names == ["mine"]
    with pytest.raises(TaskclusterRestFailure) as bad:
        purge_cache_service.client().purgeCache(worker_pool, {"cacheName": 3})
    assert bad.value.status_code == 400
