"""flotilla-worker: a kit for writing Taskcluster workers in Python.

You write one async function; the kit does the worker protocol around it — the
claimWork long poll with capacity, reclaims, cancellation within about a second, the
live log (HTTP) and the gzip backing log, artifact upload (s3 or object), reports with
upstream's resolution rules, `maxRunTime`, SIGTERM → `worker-shutdown`, idle shutdown,
and optional registration with a worker pool (plus `shouldWorkerTerminate`).

    import asyncio, os
    from flotilla_worker import TaskContext, WorkerSettings, run_worker

    async def echo(task: TaskContext) -> None:
        task.log.line(task.payload["message"])
        (task.output_dir / "public").mkdir()
        (task.output_dir / "public" / "echo.txt").write_text(task.payload["message"])

    settings = WorkerSettings.from_env(os.environ)
    asyncio.run(run_worker(echo, settings))

See `TaskContext` for what the handler gets and how its return value or exception
becomes the run's resolution. The kit imports nothing from Flotilla's services: it needs
only `aiohttp` and the official `taskcluster` client.
"""

from __future__ import annotations

import asyncio
import signal

from flotilla_worker import cli
from flotilla_worker.context import (
    MalformedPayload,
    TaskContext,
    TaskException,
    TaskFailed,
)
from flotilla_worker.results import Ending, Report
from flotilla_worker.run import Handler
from flotilla_worker.settings import SettingsError, WorkerSettings
from flotilla_worker.worker import Worker, open_worker

__all__ = [
    "cli",
    "Ending",
    "Handler",
    "MalformedPayload",
    "Report",
    "SettingsError",
    "TaskContext",
    "TaskException",
    "TaskFailed",
    "Worker",
    "WorkerSettings",
    "open_worker",
    "run_worker",
]


async def run_worker(handler: Handler, settings: WorkerSettings) -> None:
    """Run a worker until it stops: SIGTERM/SIGINT (running tasks are reported
    `worker-shutdown`), idle shutdown, or a worker-manager terminate answer."""
    async with open_worker(settings, handler) as worker:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()
