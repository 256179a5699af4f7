"""One aiohttp session per command, shared by the official client and artifact downloads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import taskcluster.aio

from cli.config import CliConfig


@dataclass(frozen=True)
class Clients:
    queue: taskcluster.aio.Queue
    http: aiohttp.ClientSession
    worker_manager: taskcluster.aio.WorkerManager


@asynccontextmanager
async def open_clients(config: CliConfig) -> AsyncIterator[Clients]:
    # No total timeout: a live log streams for as long as its task runs.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        yield Clients(
            taskcluster.aio.Queue(config.queue_options(), session=http),
            http,
            taskcluster.aio.WorkerManager(config.worker_manager_options(), session=http),
        )
