"""Builds a docker-worker — the worker kit's loop with the Docker engine as its handler —
from a `WorkerConfig`, and closes everything in reverse order. Used by `__main__` (the
composition root) and by the tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import taskcluster.aio

from flotilla_worker import WorkerSettings
from flotilla_worker import open_worker as open_kit_worker
from services.docker_worker.caches import Caches, FetchRequests, PurgeChecker
from services.docker_worker.config import WorkerConfig
from services.docker_worker.containers import Docker
from services.docker_worker.engine import WORKER_VERSION, DockerEngine, EngineDeps, live_log_name
from services.docker_worker.worker import Worker
from shared.timeutil import format_ts


def kit_settings(config: WorkerConfig) -> WorkerSettings:
    return WorkerSettings(
        root_url=config.root_url,
        task_queue_id=config.task_queue_id,
        worker_group=config.worker_group,
        worker_id=config.worker_id,
        client_id=config.client_id,
        access_token=config.access_token,
        certificate=config.certificate,
        capacity=config.capacity,
        after_idle_s=config.after_idle_s,
        claim_error_backoff_s=config.claim_error_backoff_s,
        reclaim_divisor=config.reclaim_divisor,
        status_probe_interval_s=config.status_probe_interval_s,
        live_log_bind_host=config.live_log_bind_host,
        live_log_port=config.live_log_port,
        live_log_public_hostname=config.live_log_public_hostname,
        work_root=config.work_root,
        upload_attempts=config.upload_attempts,
        upload_backoff_s=config.upload_backoff_s,
        shutdown_grace_s=config.shutdown_grace_s,
        worker_node_type=config.worker_node_type,
        worker_version=WORKER_VERSION,
    )


@contextlib.asynccontextmanager
async def open_worker(config: WorkerConfig) -> AsyncIterator[Worker]:
    async with contextlib.AsyncExitStack() as stack:
        # each running task holds a log-stream thread; leave room for waits, kills, tars
        docker = Docker(config.docker_url, threads=3 * config.capacity + 8)
        stack.callback(docker.close)
        await docker.ping()
        await asyncio.to_thread(config.cache_root.mkdir, parents=True, exist_ok=True)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=0))
        )
        caches = Caches(config.cache_root)
        purges = PurgeChecker(caches, purge_requests(config, session))
        engine = DockerEngine(EngineDeps(config, docker, caches, session, purges))
        worker = await stack.enter_async_context(
            open_kit_worker(
                kit_settings(config),
                engine,
                log_name=live_log_name(config.features),
                stop_noun="container",
                worker_class=Worker,
            )
        )
        assert isinstance(worker, Worker)
        worker.attach(config, docker)
        yield worker


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
