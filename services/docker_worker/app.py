"""Builds a worker and everything it needs from a `WorkerConfig`, and closes them in
reverse order. Used by `__main__` (the composition root) and by the tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import taskcluster.aio

from services.docker_worker.artifacts import Uploader
from services.docker_worker.caches import Caches
from services.docker_worker.config import WorkerConfig
from services.docker_worker.containers import Docker
from services.docker_worker.livelog import LiveLogServer
from services.docker_worker.task_run import RunDeps
from services.docker_worker.worker import Worker


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

        deps = RunDeps(
            config=config,
            docker=docker,
            caches=Caches(config.cache_root),
            live_logs=live_logs,
            uploader=Uploader(session, config.upload_attempts, config.upload_backoff_s),
            session=session,
            queue_for=queue_for,
            worker_queue=queue_for(config.credentials()),
        )
        yield Worker(deps)
