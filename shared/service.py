"""The runtime every background service shares: connect to MongoDB and RabbitMQ, build
the task store, run the service's loops, and stop them in order on SIGTERM.

Shutdown sequence: stop taking work (cancel the loops: each finishes or abandons its
current item, which is safe because every step is repeatable), let in-flight background
bookkeeping finish, close RabbitMQ, then MongoDB. A loop that crashes takes the process
down with a non-zero exit so the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from shared import db as dbmod
from shared import loops
from shared.broker import Broker
from shared.config import Settings
from shared.outbox import Outbox
from shared.taskstore import TaskStore

log = logging.getLogger(__name__)

READY_EVENT = "service ready"  # logged once every loop runs; tests wait for it


def announce_ready(_banner: str) -> None:
    """For `web.run_app(print=...)`, which calls it once the HTTP service listens: the
    same ready event the loop services log."""
    log.info(READY_EVENT)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    db: dbmod.Database
    broker: Broker
    store: TaskStore


Loop = Callable[[], Awaitable[None]]


async def run(settings: Settings, build: Callable[[Runtime], Awaitable[Sequence[Loop]]]) -> int:
    loops.configure(allowed=settings.loop_failures, min_failing_s=settings.loop_failing_s)
    client = dbmod.connect(settings.mongo_url)
    database = client[settings.mongo_db]
    await dbmod.ensure_indexes(database)
    broker = await Broker.connect(settings.amqp_url, prefix=settings.exchange_prefix)
    outbox = Outbox(database, broker, pending_expires_s=settings.pending_queue_expires_s)
    store = TaskStore(database, outbox)
    runtime = Runtime(settings, database, broker, store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(body()) for body in await build(runtime)]
    stopper = asyncio.create_task(stop.wait())
    log.info(READY_EVENT, extra={"loops": len(tasks)})
    exit_code = 0
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception() is not None:
                log.critical("a loop crashed; exiting", exc_info=task.exception())
                exit_code = loops.EXIT_LOOP_FAILED
    finally:
        for task in [*tasks, stopper]:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await store.drain()
        await broker.close()
        await client.close()
    return exit_code
