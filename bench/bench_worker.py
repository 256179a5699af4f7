"""docker-worker throughput (`python -m bench worker`): container tasks per second at
capacity 1, 2 and 4 against bare `docker run --rm <image> true` at the same concurrency,
measured in one run, plus the worker's overhead per task: claim → container started, and
container exited → run resolved (reported), p50/p99.

Each round queues all its tasks first, then starts an in-process worker, so the rate is
from the worker's start to the last resolution. Tasks run `true` with the live log on (the
default), so every task also uploads and links its backing log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import taskcluster

from bench.bench_queue import (
    new_task_queue_id,
    print_table,
    progress,
    queue_service,
    session_for,
    summary_ms,
)
from flotilla_worker.context import Timeline
from flotilla_worker.run import TaskRun
from services.docker_worker.app import open_worker
from services.docker_worker.config import build_config

RESULTS = Path(__file__).resolve().parent / "results"
IMAGE = "flotilla/busybox:latest"
CAPACITIES = (1, 2, 4)


def task_definition(tq: str) -> dict[str, Any]:
    return {
        "taskQueueId": tq,
        "created": taskcluster.fromNowJSON("0 seconds"),
        "deadline": taskcluster.fromNowJSON("1 hour"),
        "payload": {"image": IMAGE, "command": ["true"], "maxRunTime": 60},
        "metadata": {
            "name": "bench container task",
            "description": "made by bench.bench_worker",
            "owner": "bench@example.com",
            "source": "https://example.com/flotilla/bench",
        },
    }


async def bare_docker(tasks: int, concurrency: int) -> float:
    """Containers per second of `docker run --rm IMAGE true`, `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            process = await asyncio.create_subprocess_exec(
                "docker", "run", "--rm", IMAGE, "true", stdout=subprocess.DEVNULL
            )
            assert await process.wait() == 0

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(tasks)))
    return tasks / (time.monotonic() - started)


async def worker_round(service: Any, capacity: int, tasks: int, work: Path) -> dict[str, Any]:
    tq = new_task_queue_id("worker")
    async with session_for(16) as session:
        queue = service.client(session)
        ids = [taskcluster.slugId() for _ in range(tasks)]
        for task_id in ids:
            await queue.createTask(task_id, task_definition(tq))
        config = build_config(
            {
                "root_url": service.root_url,
                "client_id": service.client_id,
                "access_token": service.access_token,
                "task_queue_id": tq,
                "worker_group": "bench",
                "worker_id": f"b-{uuid.uuid4().hex[:8]}",
                "capacity": capacity,
                "cache_root": str(work / "caches"),
                "work_root": str(work / "work"),
            }
        )
        runs: list[Timeline] = []
        all_resolved = asyncio.Event()

        def finished(run: TaskRun) -> None:
            runs.append(run.timeline)
            if sum(1 for t in runs if t.resolved) >= tasks:
                all_resolved.set()

        async with open_worker(config) as worker:
            worker.on_finished.append(finished)
            started = time.monotonic()
            loop = asyncio.create_task(worker.run())
            await all_resolved.wait()
            elapsed = time.monotonic() - started
            worker.stop()
            await loop
        states = [(await queue.status(t))["status"]["state"] for t in ids]
    to_start = [t.started - t.claimed for t in runs if t.started]
    to_resolve = [t.resolved - t.finished for t in runs if t.finished and t.resolved]
    return {
        "capacity": capacity,
        "tasks": tasks,
        "completed": states.count("completed"),
        "tasks_per_s": round(tasks / elapsed, 2),
        "claim_to_container_start": summary_ms(to_start),
        "container_exit_to_resolved": summary_ms(to_resolve),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"image": IMAGE, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        work = Path(tmp)
        async with queue_service("worker", work) as service:
            for capacity in CAPACITIES:
                tasks = args.tasks_per_slot * capacity
                progress(f"bare docker run x{tasks}, {capacity} at a time")
                bare = await bare_docker(tasks, capacity)
                progress(f"worker, capacity {capacity}: {tasks} tasks")
                round_ = await worker_round(service, capacity, tasks, work)
                round_["bare_docker_run_per_s"] = round(bare, 2)
                report["rounds"].append(round_)
    return report


def print_report(report: dict[str, Any]) -> None:
    print_table(
        "docker-worker: container tasks per second vs bare `docker run --rm` (same concurrency)",
        [
            "capacity",
            "tasks",
            "worker/s",
            "docker run/s",
            "claim→start p50",
            "p99",
            "exit→resolved p50",
            "p99",
        ],
        [
            [
                r["capacity"],
                r["tasks"],
                r["tasks_per_s"],
                r["bare_docker_run_per_s"],
                r["claim_to_container_start"]["p50_ms"],
                r["claim_to_container_start"]["p99_ms"],
                r["container_exit_to_resolved"]["p50_ms"],
                r["container_exit_to_resolved"]["p99_ms"],
            ]
            for r in report["rounds"]
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks-per-slot", type=int, default=20)
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    print_report(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "worker.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'worker.json'}")
