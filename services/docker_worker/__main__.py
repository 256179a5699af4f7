"""`python -m services.docker_worker`: the composition root. Settings are read once,
here; SIGTERM/SIGINT start the worker's shutdown sequence (see `worker`)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from services.docker_worker.app import open_worker
from services.docker_worker.config import ConfigError, WorkerConfig, load_config
from shared import logs


async def serve(config: WorkerConfig) -> int:
    async with open_worker(config) as worker:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()
    return 0


def main() -> None:
    try:
        config = load_config(sys.argv[1:], os.environ)
    except ConfigError as exc:
        print(f"docker-worker: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.configure(config.log_level, service="services.docker_worker")
    sys.exit(asyncio.run(serve(config)))


if __name__ == "__main__":
    main()
