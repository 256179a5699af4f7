"""The docker-worker is the worker kit's `Worker` (claim loop, capacity, idle shutdown,
SIGTERM → worker-shutdown; see `flotilla_worker.worker`) plus what is Docker about the
worker as a whole: containers left by a crashed predecessor are removed when it starts,
and any left over are removed when it stops."""

from __future__ import annotations

from flotilla_worker import Worker as KitWorker
from services.docker_worker.config import WorkerConfig
from services.docker_worker.containers import Docker


class Worker(KitWorker):
    config: WorkerConfig

    def attach(self, config: WorkerConfig, docker: Docker) -> None:
        self.config = config

        async def remove_leftovers() -> None:
            await docker.remove_leftovers(config.worker_key)

        self.on_start = remove_leftovers
        self.on_stop = remove_leftovers
