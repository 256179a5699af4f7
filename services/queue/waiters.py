"""Long-polling claimWork calls, woken by task-pending events instead of polling.

Each queue replica listens to task-pending on a private queue. An event for a task queue
wakes exactly one waiting claimWork there (the first in line), so 100 idle workers and
one new task cost one claim attempt, not 100. A slow sweep is the safety net: every few
seconds, for each task queue that has waiters, one cheap probe asks whether anything is
claimable and wakes one waiter if so (covering events lost in a broker outage, leases
that lapsed, or a woken waiter whose client went away).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage

from shared.routing import task_queue_of_routing_key

log = logging.getLogger(__name__)


class ClaimWaiters:
    def __init__(self, probe: Callable[[str], Awaitable[bool]], *, sweep_interval_s: float = 2.0):
        self._probe = probe
        self._sweep_interval_s = sweep_interval_s
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    def waiting(self, task_queue_id: str) -> int:
        return sum(1 for f in self._waiting.get(task_queue_id, ()) if not f.done())

    def notify(self, task_queue_id: str, count: int = 1) -> int:
        """Wake up to `count` waiters of the task queue, longest-waiting first."""
        line = self._waiting.get(task_queue_id)
        woken = 0
        while line and woken < count:
            future = line.popleft()
            if not future.done():
                future.set_result(None)
                woken += 1
        return woken

    async def wait(self, task_queue_id: str, timeout_s: float) -> bool:
        """Wait until woken (True) or until the timeout (False)."""
        if timeout_s <= 0:
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line = self._waiting.setdefault(task_queue_id, deque())
        line.append(future)
        try:
            await asyncio.wait_for(future, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            if future in line:
                line.remove(future)
            # Only drop our own line: once notify emptied it and an earlier waiter dropped
            # it, a newer waiter may have started a fresh line that must stay reachable.
            if not line and self._waiting.get(task_queue_id) is line:
                del self._waiting[task_queue_id]

    async def on_task_pending(self, message: AbstractIncomingMessage) -> None:
        task_queue_id = task_queue_of_routing_key(message.routing_key or "")
        if task_queue_id is not None:
            self.notify(task_queue_id)

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            for task_queue_id in [q for q in self._waiting if self.waiting(q)]:
                try:
                    if await self._probe(task_queue_id):
                        self.notify(task_queue_id)
                except Exception:
                    log.exception("claim sweep probe failed", extra={"taskQueueId": task_queue_id})
