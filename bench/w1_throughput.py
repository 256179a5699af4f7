"""W1, no-op throughput end to end: a closed burst, then an open-loop arrival ramp.

- burst: N tasks created at C-way concurrency while K bench workers (the official client:
  claimWork tasks=8, reportCompleted with each claim's credentials, no container) drain
  them. Throughput from the first createTask sent to the last reportCompleted returned.
- ramp: tasks arrive at a fixed rate regardless of how fast they are served (open loop:
  each arrival is its own coroutine, started on the schedule); K workers wait in
  claimWork. pending → claimed = claimWork returned − createTask returned (run 0 is
  pending when createTask answers). The rate steps up until that p99 passes the limit
  or the queue stops keeping up with the arrivals.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import taskcluster
import taskcluster.aio

from bench.bench_queue import (
    DrainRun,
    QueueService,
    new_task_queue_id,
    now,
    progress,
    session_for,
    summary_ms,
    task_definition,
)


async def burst(
    service: QueueService, tasks: int, concurrency: int, drainers: int
) -> dict[str, Any]:
    async with session_for(concurrency + drainers * 9 + 10) as session:
        run = DrainRun(service, service.client(session), session, new_task_queue_id("w1"), tasks)
        await run.run(drainers, concurrency, 120 + tasks / 5, "W1 burst", "w1")
        return {**run.summary(), "create_concurrency": concurrency, "drainers": drainers}


@dataclass
class Ramp:
    """One open-loop step: arrivals at `rate`/s for `seconds`, claims by waiting workers."""

    service: QueueService
    queue: taskcluster.aio.Queue
    task_queue_id: str
    created: dict[str, float] = field(default_factory=dict)
    claimed: dict[str, float] = field(default_factory=dict)
    failed: int = 0

    async def worker(self, worker_id: str) -> None:
        request = {"workerGroup": "ramp", "workerId": worker_id, "tasks": 4}
        while True:
            result = await self.service.call(
                "claimWork", self.queue.claimWork(self.task_queue_id, request)
            )
            returned = now()
            if result is None:
                await asyncio.sleep(0.2)
                continue
            for claim in result["tasks"]:
                self.claimed.setdefault(claim["status"]["taskId"], returned)
            await asyncio.gather(
                *(
                    self.service.call(
                        "reportCompleted",
                        self.queue.reportCompleted(claim["status"]["taskId"], str(claim["runId"])),
                    )
                    for claim in result["tasks"]
                )
            )

    async def arrive(self) -> None:
        task_id = taskcluster.slugId()
        definition = task_definition(self.task_queue_id)
        if await self.service.call("createTask", self.queue.createTask(task_id, definition)):
            self.created[task_id] = now()
        else:
            self.failed += 1

    async def step(self, rate: float, seconds: float) -> dict[str, Any]:
        self.created.clear()
        self.claimed.clear()
        self.failed = 0
        arrivals: list[asyncio.Task[None]] = []
        started = now()
        count = int(rate * seconds)
        for index in range(count):
            # On schedule, whatever happened to earlier arrivals: that is the open loop.
            delay = started + index / rate - now()
            if delay > 0:
                await asyncio.sleep(delay)
            arrivals.append(asyncio.create_task(self.arrive()))
        await asyncio.gather(*arrivals)
        sent_s = now() - started
        give_up = now() + 15
        while len(self.claimed.keys() & self.created.keys()) < len(self.created):
            if now() > give_up:
                break
            await asyncio.sleep(0.05)
        waits = [self.claimed[t] - self.created[t] for t in self.created if t in self.claimed]
        return {
            "offered_per_s": rate,
            "arrivals": count,
            # Sending lags the schedule when createTask itself cannot keep up.
            "achieved_per_s": round(len(self.created) / sent_s, 1) if sent_s > 0 else None,
            "create_failures": self.failed,
            "unclaimed_after_15s": len(self.created) - len(waits),
            "pending_to_claimed": summary_ms(waits),
        }


async def ramp(
    service: QueueService,
    rates: list[float],
    seconds: float,
    workers: int,
    p99_limit_ms: float,
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    knee: float | None = None
    async with session_for(workers + 200) as session:
        queue = service.client(session)
        run = Ramp(service, queue, new_task_queue_id("ramp"))
        pollers = [asyncio.create_task(run.worker(f"r{i}")) for i in range(workers)]
        try:
            await asyncio.sleep(1.0 + 0.02 * workers)
            for rate in rates:
                result = await run.step(rate, seconds)
                steps.append(result)
                p99 = result["pending_to_claimed"]["p99_ms"]
                progress(f"W1 ramp {rate:g}/s: achieved {result['achieved_per_s']}/s, p99 {p99} ms")
                behind = (result["achieved_per_s"] or 0) < 0.9 * rate or result[
                    "unclaimed_after_15s"
                ]
                if p99 is None or p99 > p99_limit_ms or behind:
                    knee = rate
                    break
        finally:
            for poller in pollers:
                poller.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
    kept_up = [s["offered_per_s"] for s in steps if s["offered_per_s"] != knee]
    return {
        "seconds_per_step": seconds,
        "waiting_workers": workers,
        "p99_limit_ms": p99_limit_ms,
        "steps": steps,
        "first_rate_over_limit": knee,
        "highest_rate_within_limit": max(kept_up) if kept_up else None,
    }
