"""The claim loop (reference §2.1, §3.2): claim → start one `TaskRun` per claim under the
capacity → repeat; reclaiming is each run's own business (`supervision`).

- claimWork asks for `min(free capacity, 32)` tasks and long-polls on the queue;
  with no free slot the loop waits for one to free up.
- Idle shutdown (`after_idle_s`) is checked only between claimWork calls.
- `stop()` (SIGTERM): stop claiming (an in-flight claimWork is abandoned), stop every
  running task with `worker-shutdown` at once, wait for their reports up to the grace
  period, cancel what is left, remove leftover containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from services.docker_worker.results import Ending
from services.docker_worker.task_run import RunDeps, TaskRun

log = logging.getLogger(__name__)

MAX_TASKS_PER_CLAIM = 32


class Worker:
    def __init__(self, deps: RunDeps) -> None:
        self.deps = deps
        self.config = deps.config
        self._queue = deps.worker_queue
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self.runs: dict[asyncio.Task[Any], TaskRun] = {}
        self.finished: list[TaskRun] = []  # kept for the benchmark; trimmed
        self._idle_since = time.monotonic()

    def stop(self) -> None:
        if not self._stopping.is_set():
            log.info("worker stopping", extra={"running": len(self.runs)})
            self._stopping.set()

    async def run(self) -> None:
        await self.deps.docker.remove_leftovers(self.config.worker_key)
        log.info(
            "worker started",
            extra={"taskQueueId": self.config.task_queue_id, "capacity": self.config.capacity},
        )
        try:
            while not self._stopping.is_set():
                if self._idle_expired():
                    log.info("idle shutdown", extra={"afterIdleSeconds": self.config.after_idle_s})
                    break
                free = self.config.capacity - len(self.runs)
                if free <= 0:
                    self._slot_freed.clear()
                    await self._until_stopping(self._slot_freed.wait())
                    continue
                for claim in await self._claim_work(min(free, MAX_TASKS_PER_CLAIM)):
                    self._start(claim)
        finally:
            await self._shutdown()

    def _idle_expired(self) -> bool:
        after = self.config.after_idle_s
        return after is not None and not self.runs and time.monotonic() - self._idle_since >= after

    async def _until_stopping(self, awaitable: Any) -> Any:
        """Await `awaitable` unless stop() comes first; returns (done, its result or None)."""
        work = asyncio.ensure_future(awaitable)
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
            return None
        return work.result()

    async def _claim_work(self, count: int) -> list[dict[str, Any]]:
        body = {
            "tasks": count,
            "workerGroup": self.config.worker_group,
            "workerId": self.config.worker_id,
        }
        try:
            answer = await self._until_stopping(
                self._queue.claimWork(self.config.task_queue_id, body)
            )
        except Exception as exc:
            log.warning("claimWork failed", extra={"error": repr(exc)})
            await self._until_stopping(asyncio.sleep(self.config.claim_error_backoff_s))
            return []
        return answer["tasks"] if answer else []

    def _start(self, claim: dict[str, Any]) -> None:
        run = TaskRun(claim, self.deps)
        if self._stopping.is_set():  # claimed while stopping: hand it straight back
            run.stop(Ending.SHUTDOWN, "claimed while the worker was stopping")
        log.info("task claimed", extra=run.ids)
        task = asyncio.create_task(run.run())
        self.runs[task] = run
        task.add_done_callback(self._run_done)

    def _run_done(self, task: asyncio.Task[Any]) -> None:
        run = self.runs.pop(task)
        self.finished = [*self.finished[-999:], run]
        if not task.cancelled() and task.exception() is not None:
            log.error("run crashed", extra=run.ids, exc_info=task.exception())
        if not self.runs:
            self._idle_since = time.monotonic()
        self._slot_freed.set()

    async def _shutdown(self) -> None:
        for run in self.runs.values():
            run.stop(Ending.SHUTDOWN, "worker shutdown")
        if self.runs:
            _, late = await asyncio.wait(set(self.runs), timeout=self.config.shutdown_grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await self.deps.docker.remove_leftovers(self.config.worker_key)
        log.info("worker stopped")
