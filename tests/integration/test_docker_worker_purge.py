"""The docker-worker honours purge-cache: a cache purged through `taskcluster.PurgeCache`
starts empty for the worker's next task, and only once. Real worker, Docker, queue and
purge-cache service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import taskcluster.aio

from tests.conftest import RunningService, stop_process
from tests.integration.queue_support import new_task_queue_id
from tests.integration.test_docker_worker import busybox, resolved, running_worker, submit
from tests.integration.test_purge_cache import PurgeCacheService, start_purge_cache

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def purge_cache(
    queue_service: RunningService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PurgeCacheService]:
    service, process = start_purge_cache(queue_service, tmp_path_factory.mktemp("purge"))
    try:
        yield service
    finally:
        stop_process(process)


async def test_a_purged_cache_starts_empty_for_the_next_task_only(
    queue_service: RunningService, purge_cache: PurgeCacheService, tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    scopes = ["docker-worker:cache:purge-*"]
    cache = {"purge-me": "/cache", "purge-not": "/kept"}
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(queue_service.client_options(), session=session)

        async def run(script: str) -> str:
            task_id = await submit(queue, tq, busybox(script, cache=cache), scopes=scopes)
            return str((await resolved(queue, task_id))["state"])

        async with running_worker(queue_service, tmp_path, tq, purge_cache_url=purge_cache.url):
            assert await run("echo old > /cache/f && echo old > /kept/f") == "completed"
            purge_cache.client().purgeCache(tq, {"cacheName": "purge-me"})
            # the purged cache is new and empty; the other one is kept
            assert await run("[ ! -e /cache/f ] && [ -e /kept/f ] && echo new > /cache/g") == (
                "completed"
            )
            # the request was carried out once: the cache made since is kept
            assert await run('[ "$(cat /cache/g)" = new ]') == "completed"
