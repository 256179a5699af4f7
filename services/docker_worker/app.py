"""Builds a worker and everything it needs from a `WorkerConfig`, and closes them in
reverse order. Used by `__main__` (the composition root) and by the tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import taskcluster.aio

from services.docker_worker.artifacts import Uploader
from services.docker_worker.caches import Caches, FetchRequests, PurgeChecker
from services.docker_worker.config import WorkerConfig
from services.docker_worker.containers import Docker
from services.docker_worker.livelog import LiveLogServer
from services.docker_worker.task_run import RunDeps
from services.docker_worker.worker import Worker
from shared.timeutil import format_ts


@contextlib.asynccontextmanager
async def open_worker(config: WorkerConfig) -> AsyncIterator[Worker]:
    async with contextlib.AsyncExitStack() as stack:
        # each running task holds a log-stream thread; leave room for waits, kills, tars
        docker = Docker(config.docker_url, threads=3 * config.capacity + 8)
        stack.callback(docker.close)
        await docker.ping()
        config.cache_root.mkdir(parents=True, exist_ok=True)
        if config.work_root is not None:
            config.work_root.mkdir(parents=True, exist_ok=True)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=0))
        )
        live_logs = LiveLogServer(
            config.live_log_bind_host, config.live_log_port, config.live_log_public_hostname
        )
        await live_logs.start()
        stack.push_async_callback(live_logs.stop)

        def queue_for(credentials: dict[str, str]) -> Any:
            options = {"rootUrl": config.root_url, "credentials": credentials}
            return taskcluster.aio.Queue(options, session=session)

        caches = Caches(config.cache_root)
        deps = RunDeps(
            config=config,
            docker=docker,
            caches=caches,
            live_logs=live_logs,
            uploader=Uploader(session, config.upload_attempts, config.upload_backoff_s),
            session=session,
            queue_for=queue_for,
            worker_queue=queue_for(config.credentials()),
            purges=PurgeChecker(caches, purge_requests(config, session)),
        )
        yield Worker(deps)


def purge_requests(config: WorkerConfig, session: aiohttp.ClientSession) -> FetchRequests:
    """purge-cache's purgeRequests for this worker's pool, with the worker's credentials
    (upstream workers rely on the anonymous role or `worker-pool:<id>` for the scope)."""
    options = {
        "rootUrl": config.purge_cache_url or config.root_url,
        "credentials": config.credentials(),
        "maxRetries": 1,
    }
    client = taskcluster.aio.PurgeCache(options, session=session)

    async def fetch(since: datetime | None) -> list[dict[str, Any]]:
        query = {"since": format_ts(since)} if since is not None else {}
        answer = await client.purgeRequests(config.task_queue_id, query=query)
        return list(answer["requests"])

    return fetch
