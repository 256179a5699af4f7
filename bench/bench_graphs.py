"""Task graphs and lapsed claims (`python -m bench graphs`): how fast dependencies are
resolved and claims expired, with the queue, a dependency-resolver and a claim-expiry
running as real processes on one fresh database.

- fan-out and fan-in, one graph root → N middle tasks → sink: root completed → the last
  middle task pending; then N-1 middle tasks complete in a burst (the completion rate the
  sink sustains), and the last one alone: completed → sink pending.
- chain: depth D; per hop, reportCompleted returned → the next task claimed by a waiting
  claimWork.
- expiry: K claims left to lapse (2 s claims); retry run scheduled − takenUntil.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import taskcluster
import taskcluster.aio

from bench.bench_queue import (
    REPO,
    QueueService,
    new_task_queue_id,
    print_table,
    progress,
    queue_service,
    session_for,
    summary_ms,
    task_definition,
)
from shared.config import load_settings
from shared.routing import dependency_resolver_queue

RESULTS = Path(__file__).resolve().parent / "results"
CLAIM_TIMEOUT_S = 2
QUIESCE_S = 3.0


def _start(name: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


@asynccontextmanager
async def platform(label: str, log_dir: Path) -> AsyncIterator[QueueService]:
    """The queue (bench_queue's), plus the two background services on its database."""
    async with queue_service(label, log_dir) as service:
        env = {
            **os.environ,
            "FLOTILLA_MONGO_DB": service.database,
            "FLOTILLA_CLAIM_TIMEOUT": str(CLAIM_TIMEOUT_S),
            "FLOTILLA_RESOLVER_QUEUE_EXPIRES": "60",
        }
        processes = [
            await asyncio.to_thread(_start, name, env, log_dir / f"{name}-{label}.log")
            for name in ("dependency_resolver", "claim_expiry")
        ]
        service.companions = {
            name: process.pid
            for name, process in zip(
                ("dependency_resolver", "claim_expiry"), processes, strict=True
            )
        }
        try:
            await asyncio.sleep(1.0)
            yield service
        finally:
            for process in processes:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


async def create_all(
    queue: taskcluster.aio.Queue, tasks: list[tuple[str, dict[str, Any]]], concurrency: int = 16
) -> None:
    limit = asyncio.Semaphore(concurrency)
    done = 0

    async def one(task_id: str, definition: dict[str, Any]) -> None:
        nonlocal done
        async with limit:
            await queue.createTask(task_id, definition)
        done += 1
        if done % 1000 == 0:
            progress(f"  created {done}/{len(tasks)}")

    await asyncio.gather(*(one(t, d) for t, d in tasks))


async def claim_and_complete(
    service: QueueService, queue: taskcluster.aio.Queue, tq: str, count: int
) -> float:
    """Complete `count` tasks of `tq` with 4 concurrent workers; returns when the last
    reportCompleted returned (monotonic)."""
    done, last = 0, 0.0

    async def worker(worker_id: str) -> None:
        nonlocal done, last
        while done < count:
            claims = await queue.claimWork(
                tq, {"workerGroup": "bench", "workerId": worker_id, "tasks": 4}
            )
            for claim in claims["tasks"]:
                try:
                    await queue.reportCompleted(claim["status"]["taskId"], str(claim["runId"]))
                except taskcluster.exceptions.TaskclusterRestFailure:
                    continue  # the 2 s claim lapsed under load: its retry comes round again
                done += 1
                last = time.monotonic()
                if done % 1000 == 0:
                    progress(f"  completed {done}/{count}")

    workers = [asyncio.create_task(worker(f"w{i}")) for i in range(4)]
    # The first worker to see the count reached returns; the others sit in a long poll.
    await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return last


async def wait_until(probe: Any, interval_s: float = 0.005, limit_s: float = 600) -> float:
    give_up = time.monotonic() + limit_s
    while not await probe():
        if time.monotonic() > give_up:
            raise TimeoutError("condition never held")
        await asyncio.sleep(interval_s)
    return time.monotonic()


async def resolver_idle(database: str, limit_s: float = 300) -> None:
    """Wait until the resolver's queue holds no message for a moment (QUIESCE_S)."""
    connection = await aio_pika.connect_robust(load_settings().amqp_url)
    try:
        channel = await connection.channel()
        name = dependency_resolver_queue(database)
        give_up, quiet_since = time.monotonic() + limit_s, None
        while time.monotonic() < give_up:
            queue = await channel.declare_queue(name, passive=True)
            if queue.declaration_result.message_count:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= QUIESCE_S:
                return
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def fan_out_and_in(service: QueueService, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One graph, root → N middle tasks → sink, measured twice (and created once):
    - fan-out: the root completes; time until all N middle tasks are pending;
    - fan-in: N-1 middle tasks complete in a burst (4 workers, as fast as they can), which
      gives the completion rate a wide sink sustains; once the resolver has caught up, the
      last one completes alone and the hop to the sink's pending is timed."""
    async with session_for(64) as session:
        queue = service.client(session)
        root_tq, tq, sink_tq = (new_task_queue_id(k) for k in ("root", "middle", "sink"))
        last_tq = new_task_queue_id("last")  # the last middle task, completed on its own
        root, sink = taskcluster.slugId(), taskcluster.slugId()
        ids = [taskcluster.slugId() for _ in range(size)]
        await queue.createTask(root, task_definition(root_tq))
        progress(f"fan-out/in: creating {size} middle tasks and the sink")
        middle = [(t, {**task_definition(tq), "dependencies": [root]}) for t in ids[:-1]]
        last = {**task_definition(last_tq), "dependencies": [root]}
        await create_all(queue, [*middle, (ids[-1], last)])
        await queue.createTask(sink, {**task_definition(sink_tq), "dependencies": ids})
        claim = (await queue.claimWork(root_tq, {"workerGroup": "b", "workerId": "r"}))["tasks"]
        await queue.reportCompleted(root, str(claim[0]["runId"]))
        started = time.monotonic()

        async def all_pending() -> bool:
            counts = await asyncio.gather(queue.pendingTasks(tq), queue.pendingTasks(last_tq))
            return counts[0]["pendingTasks"] >= size - 1 and counts[1]["pendingTasks"] >= 1

        fanned_out = await wait_until(all_pending, interval_s=0.05)
        fan_out = {"size": size, "seconds": round(fanned_out - started, 3)}
        progress(f"fan-out: {fan_out}")
        started = time.monotonic()
        burst_end = await claim_and_complete(service, queue, tq, size - 1)
        rate = (size - 1) / (burst_end - started)
        await resolver_idle(service.database)  # the burst's backlog drained: time one hop
        assert (await queue.status(sink))["status"]["state"] == "unscheduled"
        claims: list[dict[str, Any]] = []
        while not claims:
            body = {"workerGroup": "b", "workerId": "last", "tasks": 1}
            claims = (await queue.claimWork(last_tq, body))["tasks"]
        report_sent = time.monotonic()
        await queue.reportCompleted(ids[-1], str(claims[0]["runId"]))
        last_completed = time.monotonic()

        async def sink_pending() -> bool:
            # The queue's counter, not status(): the probe must not load the path timed.
            return (await queue.pendingTasks(sink_tq))["pendingTasks"] >= 1

        pending_at = await wait_until(sink_pending)
    fan_in = {
        "size": size,
        # From the report's answer (the chain hop's convention) and from its sending: the
        # queue answers after publishing task-completed, so the resolver may be at work
        # before the answer arrives.
        "last_hop_ms": round((pending_at - last_completed) * 1000, 1),
        "last_hop_from_report_sent_ms": round((pending_at - report_sent) * 1000, 1),
        "burst_completions_per_s": round(rate, 1),
    }
    return fan_out, fan_in


async def chain(service: QueueService, depth: int) -> dict[str, Any]:
    async with session_for(16) as session:
        queue = service.client(session)
        tq = new_task_queue_id("chain")
        ids = [taskcluster.slugId() for _ in range(depth)]
        for index, task_id in enumerate(ids):
            deps = [ids[index - 1]] if index else []
            await queue.createTask(task_id, {**task_definition(tq), "dependencies": deps})
        hops: list[float] = []
        completed_at: float | None = None
        body = {"workerGroup": "bench", "workerId": "chain", "tasks": 1}
        for index in range(depth):
            claims: list[dict[str, Any]] = []
            while not claims:
                claims = (await queue.claimWork(tq, body))["tasks"]
            if completed_at is not None:
                hops.append(time.monotonic() - completed_at)
            assert claims[0]["status"]["taskId"] == ids[index]
            await queue.reportCompleted(ids[index], "0")
            completed_at = time.monotonic()
    return {"depth": depth, "hop": summary_ms(hops)}


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def expiry(service: QueueService, claims: int) -> dict[str, Any]:
    async with session_for(32) as session:
        queue = service.client(session)
        tq = new_task_queue_id("expiry")
        ids = [taskcluster.slugId() for _ in range(claims)]
        await create_all(queue, [(t, task_definition(tq)) for t in ids])
        held: list[dict[str, Any]] = []
        while len(held) < claims:
            got = await queue.claimWork(tq, {"workerGroup": "b", "workerId": "x", "tasks": 32})
            held += got["tasks"]
        await asyncio.sleep(CLAIM_TIMEOUT_S + 3)
        lateness: list[float] = []
        for claim in held:
            status = (await queue.status(claim["status"]["taskId"]))["status"]
            first = status["runs"][0]
            if first.get("reasonResolved") == "claim-expired":
                delta = _ts(first["resolved"]) - _ts(claim["takenUntil"])
                lateness.append(delta.total_seconds())
    return {"claims": claims, "expired": len(lateness), "late": summary_ms(lateness)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="flotilla-bench-graphs-"))
    report: dict[str, Any] = {"benchmark": "graphs", "log_dir": str(log_dir)}
    async with platform("graphs", log_dir) as service:
        report["chain"] = await chain(service, args.chain)
        progress(f"chain: {report['chain']['hop']}")
        report["expiry"] = await expiry(service, args.expiry)
        progress(f"expiry: {report['expiry']['late']}")
        report["fan_out"], report["fan_in"] = await fan_out_and_in(service, args.size)
        progress(f"fan-in: {report['fan_in']}")
    return report


def print_report(report: dict[str, Any]) -> None:
    hop, late = report["chain"]["hop"], report["expiry"]["late"]
    print_table(
        "Dependencies and expiry (queue + dependency-resolver + claim-expiry processes)",
        ["measure", "n", "p50", "p99", "max", "target"],
        [
            ["chain hop, ms", hop["n"], hop["p50_ms"], hop["p99_ms"], hop["max_ms"], "p50 < 50"],
            [
                "expiry: resolved - takenUntil, ms",
                late["n"],
                late["p50_ms"],
                late["p99_ms"],
                late["max_ms"],
                "p99 < 1000",
            ],
            [
                f"fan-out {report['fan_out']['size']}: root done -> all pending, s",
                1,
                report["fan_out"]["seconds"],
                "",
                "",
                "< 3",
            ],
            [
                f"fan-in {report['fan_in']['size']}: last done -> sink pending, ms",
                1,
                report["fan_in"]["last_hop_ms"],
                "",
                "",
                "< 50",
            ],
            [
                "  the same, from reportCompleted sent, ms",
                1,
                report["fan_in"]["last_hop_from_report_sent_ms"],
                "",
                "",
                "",
            ],
            [
                f"fan-in {report['fan_in']['size']}: burst completions/s",
                report["fan_in"]["size"] - 1,
                report["fan_in"]["burst_completions_per_s"],
                "",
                "",
                "",
            ],
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000, help="fan-out and fan-in width")
    parser.add_argument("--chain", type=int, default=100)
    parser.add_argument("--expiry", type=int, default=100)
    args = parser.parse_args(argv)
    # The queue process reads its claim timeout from the environment it inherits.
    os.environ["FLOTILLA_CLAIM_TIMEOUT"] = str(CLAIM_TIMEOUT_S)
    report = asyncio.run(run(args))
    print_report(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "graphs.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'graphs.json'}")
