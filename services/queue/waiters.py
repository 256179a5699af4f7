"""Long-polling claimWork calls, woken by task-pending events instead of polling.

Each queue replica listens to task-pending on a private queue. An event for a task queue
wakes exactly one waiting claimWork there (the first in line), so 100 idle workers and
one new task cost one claim attempt, not 100. A slow sweep is the safety net: every few
seconds, for each task queue that has waiters, one cheap probe asks whether anything is
claimable and wakes one waiter if so (covering events lost in a broker outage, messages
that a dead claimer left unacked until RabbitMQ redelivered them, or a woken waiter
whose client went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage

from shared import loops
from shared.routing import task_queue_of_routing_key

log = logging.getLogger(__name__)


MAX_TRACKED_QUEUES = 100_000


class ClaimWaiters:
    def __init__(
        self,
        probe: Callable[[str], Awaitable[bool]],
        *,
        sweep_interval_s: float = 2.0,
        hangup_check_s: float = 1.0,
    ):
        self._probe = probe
        self._sweep_interval_s = sweep_interval_s
        # How often a waiting poll asks whether its client is still there (a wake-up asks
        # too, and hands itself on when the client is gone).
        self._hangup_check_s = hangup_check_s
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        # Wake-ups per task queue so far: a claimer notes it before looking for work, and
        # one that arrives between that look and the wait is not lost.
        self._wakeups: dict[str, int] = {}
        self._closed = False
        self._closing = asyncio.Event()

    def waiting(self, task_queue_id: str) -> int:
        return sum(1 for f in self._waiting.get(task_queue_id, ()) if not f.done())

    def notify(self, task_queue_id: str, count: int = 1) -> int:
        """Wake up to `count` waiters of the task queue, longest-waiting first."""
        self._wakeups[task_queue_id] = self._wakeups.get(task_queue_id, 0) + 1
        if len(self._wakeups) > MAX_TRACKED_QUEUES:
            self._wakeups.pop(next(iter(self._wakeups)))
        line = self._waiting.get(task_queue_id)
        woken = 0
        while line and woken < count:
            future = line.popleft()
            if not future.done():
                future.set_result(None)
                woken += 1
        return woken

    def wakeups(self, task_queue_id: str) -> int:
        """Note this before looking for work; pass it to `wait` as `seen`."""
        return self._wakeups.get(task_queue_id, 0)

    async def wait(
        self,
        task_queue_id: str,
        timeout_s: float,
        *,
        still_wanted: Callable[[], bool] = lambda: True,
        seen: int | None = None,
    ) -> bool:
        """Wait until woken (True) or until the timeout (False). Every so often the caller
        is asked whether it still wants work (its client may have hung up); a wake-up that
        arrives for a caller who no longer wants it is passed on. With `seen` (from
        `wakeups`), a wake-up that came since returns at once."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout_s
        check_every_s = self._hangup_check_s
        if self._closed or timeout_s <= 0:
            return False
        if seen is not None and self.wakeups(task_queue_id) != seen:
            return True
        future: asyncio.Future[None] = loop.create_future()
        line = self._waiting.setdefault(task_queue_id, deque())
        line.append(future)
        try:
            while True:
                remaining = give_up_at - loop.time()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(asyncio.shield(future), min(remaining, check_every_s))
                except TimeoutError:
                    if not still_wanted():
                        return False
                    continue
                if self._closed:
                    return False
                if not still_wanted():
                    self.notify(task_queue_id)  # someone else may still want this task
                    return False
                return True
        finally:
            if future in line:
                line.remove(future)
            # Only drop our own line: once notify emptied it and an earlier waiter dropped
            # it, a newer waiter may have started a fresh line that must stay reachable.
            if not line and self._waiting.get(task_queue_id) is line:
                del self._waiting[task_queue_id]

    async def idle(
        self, seconds: float, *, still_wanted: Callable[[], bool], check_every_s: float = 1.0
    ) -> None:
        """Sit out `seconds` (a quarantined worker's poll) unless shut down or unwanted."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + seconds
        while not self._closed and still_wanted() and loop.time() < give_up_at:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._closing.wait(), min(check_every_s, give_up_at - loop.time())
                )

    def close(self) -> None:
        """Shutting down: every waiting claimWork answers (empty) at once."""
        self._closed = True
        self._closing.set()
        for line in self._waiting.values():
            for future in line:
                if not future.done():
                    future.set_result(None)

    async def on_task_pending(self, message: AbstractIncomingMessage) -> None:
        task_queue_id = task_queue_of_routing_key(message.routing_key or "")
        if task_queue_id is not None:
            self.notify(task_queue_id)

    async def run_sweeper(self) -> None:
        if not self._sweep_interval_s:
            return  # switched off: only task-pending events wake waiters
        budget = loops.FailureBudget("claim sweeper")
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            async with budget.attempt() as summary:
                summary["woken"] = await self.sweep_once()

    async def sweep_once(self) -> int:
        """For each task queue with waiters, wake one if runs are ready. Returns how many.
        Each queue's probe fails on its own; the pass fails only if every probe did (the
        broker is unreachable), which spends the sweeper's failure budget."""
        woken, failures, probed = 0, 0, 0
        for task_queue_id in [q for q in self._waiting if self.waiting(q)]:
            probed += 1
            try:
                if await self._probe(task_queue_id):
                    woken += self.notify(task_queue_id)
            except Exception as exc:
                failures += 1
                log.error(
                    "claim sweep probe failed", exc_info=exc, extra={"taskQueueId": task_queue_id}
                )
                last = exc
        if probed and failures == probed:
            raise last
        return woken
