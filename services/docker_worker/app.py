"""Builds a docker-worker — the worker kit's loop with the Docker engine as its handler —
from a `WorkerConfig`, and closes everything in reverse order. Used by `__main__` (the
composition root) and by the tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp

from flotilla_worker import WorkerSettings
from flotilla_worker import open_worker as open_kit_worker
from services.docker_worker.caches import Caches
from services.docker_worker.config import WorkerConfig
from services.docker_worker.containers import Docker
from services.docker_worker.engine import WORKER_VERSION, DockerEngine, EngineDeps, live_log_name
from services.docker_worker.worker import Worker


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
        engine = DockerEngine(EngineDeps(config, docker, Caches(config.cache_root), session))
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
