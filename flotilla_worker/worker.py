"""The claim loop (reference §2.1, §3.2): claim → start one `TaskRun` per claim under the
capacity → repeat; reclaiming is each run's own business (`claim`).

- claimWork asks for `min(free capacity, 32)` tasks and long-polls on the queue; with no
  free slot the loop waits for one to free up.
- Idle shutdown (`after_idle_s`) and `shouldWorkerTerminate` are acted on only between
  claimWork calls (never mid-call: upstream's claim/shutdown race). A terminate answer
  stops claiming; running tasks finish first.
- `stop()` (SIGTERM): stop claiming (an in-flight claimWork is abandoned), stop every
  running task with `worker-shutdown` at once, wait for their reports up to the grace
  period, cancel what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import taskcluster.aio

from flotilla_worker import registration
from flotilla_worker.artifacts import Uploader
from flotilla_worker.livelog import LiveLogServer
from flotilla_worker.results import Ending
from flotilla_worker.run import Handler, LogNamer, RunDeps, TaskRun, default_log_name
from flotilla_worker.settings import WorkerSettings

log = logging.getLogger(__name__)

MAX_TASKS_PER_CLAIM = 32


class Worker:
    """The claim loop of one worker. Hooks, set before `run()`:

    - `on_start` / `on_stop`: awaited when the loop starts, and after it stopped and every
      run ended.
    - `on_finished`: observers called with each `TaskRun` once it ended (its report made,
      its clean-ups done: `report`, `ids` and `timeline` are final). Plain callables, on
      the event loop; one that raises is logged and the worker carries on.
    """

    def __init__(self, deps: RunDeps, manager: Any = None) -> None:
        self.deps = deps
        self.settings = deps.settings
        self._queue = deps.worker_queue
        self._manager = manager  # Worker-Manager client of a registered worker
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self.runs: dict[asyncio.Task[Any], TaskRun] = {}
        self._idle_since = time.monotonic()
        self._next_terminate_check = time.monotonic() + deps.settings.terminate_check_interval_s
        self.on_start: Callable[[], Awaitable[None]] | None = None
        self.on_stop: Callable[[], Awaitable[None]] | None = None
        self.on_finished: list[Callable[[TaskRun], None]] = []

    def stop(self) -> None:
        if not self._stopping.is_set():
            log.info("worker stopping", extra={"running": len(self.runs)})
            self._stopping.set()

    async def run(self) -> None:
        if self.on_start is not None:
            await self.on_start()
        log.info(
            "worker started",
            extra={"taskQueueId": self.settings.task_queue_id, "capacity": self.settings.capacity},
        )
        try:
            draining = False
            while not self._stopping.is_set():
                if self._idle_expired():
                    log.info(
                        "idle shutdown", extra={"afterIdleSeconds": self.settings.after_idle_s}
                    )
                    break
                if not draining and await self._told_to_terminate():
                    draining = True
                if draining:
                    if not self.runs:
                        break
                    self._slot_freed.clear()
                    await self._until_stopping(self._slot_freed.wait())
                    continue
                free = self.settings.capacity - len(self.runs)
                if free <= 0:
                    self._slot_freed.clear()
                    await self._until_stopping(self._slot_freed.wait())
                    continue
                for claim in await self._claim_work(min(free, MAX_TASKS_PER_CLAIM)):
                    self._start(claim)
        finally:
            await self._shutdown()

    def _idle_expired(self) -> bool:
        after = self.settings.after_idle_s
        return after is not None and not self.runs and time.monotonic() - self._idle_since >= after

    async def _told_to_terminate(self) -> bool:
        if self._manager is None or time.monotonic() < self._next_terminate_check:
            return False
        self._next_terminate_check = time.monotonic() + self.settings.terminate_check_interval_s
        return await registration.should_terminate(self._manager, self.settings)

    async def _until_stopping(self, awaitable: Any) -> Any:
        """Await `awaitable` unless stop() comes first (then None)."""
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
            "workerGroup": self.settings.worker_group,
            "workerId": self.settings.worker_id,
        }
        try:
            answer = await self._until_stopping(
                self._queue.claimWork(self.settings.task_queue_id, body)
            )
        except Exception as exc:
            log.warning("claimWork failed", extra={"error": repr(exc)})
            await self._until_stopping(asyncio.sleep(self.settings.claim_error_backoff_s))
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
        if not task.cancelled() and task.exception() is not None:
            log.error("run crashed", extra=run.ids, exc_info=task.exception())
        if not self.runs:
            self._idle_since = time.monotonic()
        self._slot_freed.set()
        for observer in self.on_finished:
            try:
                observer(run)
            except Exception:
                log.exception("an on_finished observer failed", extra=run.ids)

    async def _shutdown(self) -> None:
        for run in self.runs.values():
            run.stop(Ending.SHUTDOWN, "worker shutdown")
        if self.runs:
            _, late = await asyncio.wait(set(self.runs), timeout=self.settings.shutdown_grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self.on_stop is not None:
            await self.on_stop()
        log.info("worker stopped")


@contextlib.asynccontextmanager
async def open_worker(
    settings: WorkerSettings,
    handler: Handler,
    *,
    log_name: LogNamer = default_log_name,
    stop_noun: str = "task",
    worker_class: type[Worker] = Worker,
) -> AsyncIterator[Worker]:
    """A ready `Worker` (registered if configured, live-log server listening); closes
    everything in reverse order on exit. Call `await worker.run()` inside."""
    async with contextlib.AsyncExitStack() as stack:
        if settings.work_root is not None:
            settings.work_root.mkdir(parents=True, exist_ok=True)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=0))
        )
        manager = None
        credentials = settings.credentials()
        if settings.provider_id is not None:
            manager = taskcluster.aio.WorkerManager(
                {"rootUrl": settings.worker_manager_url or settings.root_url}, session=session
            )
            registered = await registration.register(manager, settings)
            credentials = registered.credentials
            manager = taskcluster.aio.WorkerManager(
                {
                    "rootUrl": settings.worker_manager_url or settings.root_url,
                    "credentials": credentials,
                },
                session=session,
            )
            log.info("registered with the worker pool", extra={"expires": registered.expires})
        live_logs = LiveLogServer(
            settings.live_log_bind_host, settings.live_log_port, settings.live_log_public_hostname
        )
        if settings.live_log:
            await live_logs.start()
            stack.push_async_callback(live_logs.stop)

        def queue_for(creds: dict[str, str]) -> Any:
            return taskcluster.aio.Queue(
                {"rootUrl": settings.root_url, "credentials": creds}, session=session
            )

        def object_for(creds: dict[str, str]) -> Any:
            return taskcluster.aio.Object(
                {"rootUrl": settings.root_url, "credentials": creds}, session=session
            )

        deps = RunDeps(
            settings=settings,
            handler=handler,
            live_logs=live_logs,
            uploader=Uploader(
                session,
                settings.upload_attempts,
                settings.upload_backoff_s,
                storage=settings.artifact_storage,
                object_for=object_for,
            ),
            session=session,
            queue_for=queue_for,
            worker_queue=queue_for(credentials),
            log_name=log_name,
            stop_noun=stop_noun,
        )
        yield worker_class(deps, manager)
