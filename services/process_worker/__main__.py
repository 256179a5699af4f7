"""`python -m services.process_worker`: the composition root of the process engine.
Settings are read once, here (flags over `FLOTILLA_WORKER_*` over `--config` YAML;
`--help` lists them); SIGTERM/SIGINT stop the worker (running tasks: worker-shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import taskcluster.aio

from flotilla_worker import SettingsError, Worker, WorkerSettings, cli, open_worker
from services.process_worker.caches import Caches
from services.process_worker.engine import EngineDeps, ProcessEngine, live_log_name
from shared import logs

EXTRAS: dict[str, cli.Extra] = {
    "cache_root": (Path, Path("/var/cache/flotilla-process-worker"), "where caches live"),
    "max_task_run_time_s": (int, 86400, "the largest maxRunTime a task may ask for"),
    "purge_cache_url": (str, None, "root URL of the purge-cache service (default: root_url)"),
    "log_level": (str, "INFO", "the worker's own log level"),
}


@contextlib.asynccontextmanager
async def open_process_worker(
    settings: WorkerSettings, extras: Mapping[str, Any], environ: Mapping[str, str]
) -> AsyncIterator[Worker]:
    cache_root = Path(extras["cache_root"])
    await asyncio.to_thread(cache_root.mkdir, parents=True, exist_ok=True)
    async with aiohttp.ClientSession() as session:
        purge_cache = taskcluster.aio.PurgeCache(
            {"rootUrl": extras["purge_cache_url"] or settings.root_url, "maxRetries": 0},
            session=session,
        )
        engine = ProcessEngine(
            EngineDeps(
                caches=Caches(cache_root),
                session=session,
                purge_cache=purge_cache,
                max_run_time_s=int(extras["max_task_run_time_s"]),
                worker_env=dict(environ),
            )
        )
        async with open_worker(
            settings, engine, log_name=live_log_name, stop_noun="process"
        ) as worker:
            yield worker


async def serve(settings: WorkerSettings, extras: Mapping[str, Any]) -> int:
    async with open_process_worker(settings, extras, os.environ) as worker:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()
    return 0


def main() -> None:
    try:
        settings, extras = cli.load(
            sys.argv[1:],
            os.environ,
            prog="python -m services.process_worker",
            description="Run claimed tasks as native processes (generic-worker payloads).",
            extras=EXTRAS,
        )
    except SettingsError as exc:
        print(f"process-worker: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.configure(extras["log_level"], service="services.process_worker")
    sys.exit(asyncio.run(serve(settings, extras)))


if __name__ == "__main__":
    main()
