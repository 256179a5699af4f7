"""Provisioner scale-up on the docker provider (`python -m bench provisioner`): a spike of
pending tasks on an empty pool → the first worker launched, the first task claimed by a
newly launched worker, the pool at full capacity (maxCapacity workers up, and that many
tasks running at once), and the queue drained.

A queue process and a provisioner process of our own (own databases); the provisioner's
periodic tick is set long (60 s) so what is measured is its reaction to task-pending
events. Tasks run `sleep` in the offline busybox image so the pool is still busy when
the last worker arrives. Times are from just before the spike's createTask calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pymongo
import taskcluster
import taskcluster.aio

from bench.bench_queue import new_task_queue_id, print_table, progress, queue_service
from shared.config import load_settings

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
IMAGE = "flotilla/busybox:latest"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_provisioner(
    service: Any, work: Path, database: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "FLOTILLA_MONGO_DB": database,
        "FLOTILLA_PROVISIONER_PORT": str(port),
        "FLOTILLA_ROOT_URL": service.root_url,
        "FLOTILLA_ROOT_ACCESS_TOKEN": service.access_token,
        "FLOTILLA_PROVISIONER_WORK_ROOT": str(work / "workers"),
        "FLOTILLA_PROVISIONER_INTERVAL": "60",
    }
    with (work / "provisioner.log").open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.provisioner"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError((work / "provisioner.log").read_text()[-1500:])
        try:
            with urllib.request.urlopen(f"{url}/api/worker-manager/v1/ping", timeout=1):
                return process, url
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("provisioner did not start") from None
            time.sleep(0.1)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def spike(
    service: Any, manager_url: str, tasks: int, max_capacity: int, sleep_s: int
) -> dict[str, Any]:
    options = service.options()
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(options, session=session)
        manager = taskcluster.aio.WorkerManager(
            {**options, "rootUrl": manager_url}, session=session
        )
        pool = new_task_queue_id("prov")
        await manager.createWorkerPool(
            pool,
            {
                "providerId": "docker",
                "description": "bench",
                "owner": "bench@example.com",
                "emailOnError": False,
                "config": {
                    "minCapacity": 0,
                    "maxCapacity": max_capacity,
                    # Pinned so runs compare: containers need the worker image built first.
                    "launch": "process",
                    "workerConfig": {"afterIdleSeconds": 5},
                },
            },
        )
        group = taskcluster.slugId()
        payload = {"image": IMAGE, "command": ["sleep", str(sleep_s)], "maxRunTime": 60}

        async def create() -> None:
            await queue.createTask(
                taskcluster.slugId(),
                {
                    "taskQueueId": pool,
                    "taskGroupId": group,
                    "created": taskcluster.fromNowJSON("0 seconds"),
                    "deadline": taskcluster.fromNowJSON("1 hour"),
                    "payload": payload,
                    "metadata": {
                        "name": "bench",
                        "description": "bench.bench_provisioner",
                        "owner": "bench@example.com",
                        "source": "https://example.com/flotilla/bench",
                    },
                },
            )

        t0 = time.time()
        await asyncio.gather(*(create() for _ in range(tasks)))
        created_s = time.time() - t0
        full_workers_s = full_running_s = None
        peak_running = 0
        while True:
            counts = await queue.taskQueueCounts(pool)
            peak_running = max(peak_running, counts["claimedTasks"])
            if full_running_s is None and counts["claimedTasks"] >= max_capacity:
                full_running_s = time.time() - t0
            if full_workers_s is None:
                listed = (await manager.listWorkersForWorkerPool(pool, query={"state": "running"}))[
                    "workers"
                ]
                if len(listed) >= max_capacity:
                    full_workers_s = time.time() - t0
            listed_tasks = (await queue.listTaskGroup(group))["tasks"]
            done = [t for t in listed_tasks if t["status"]["state"] == "completed"]
            if len(done) == tasks:
                drained_s = time.time() - t0
                break
            if time.time() - t0 > 300:
                raise RuntimeError("spike not drained within 300 s")
            await asyncio.sleep(0.05)
        workers = (await manager.listWorkersForWorkerPool(pool))["workers"]
        first_launch_s = min(_ts(w["created"]) for w in workers) - t0
        runs = [t["status"]["runs"][0] for t in listed_tasks]
        first_claim_s = min(_ts(r["started"]) for r in runs) - t0
        return {
            "tasks": tasks,
            "task_sleep_s": sleep_s,
            "max_capacity": max_capacity,
            "workers_launched": len(workers),
            "spike_created_s": round(created_s, 3),
            "first_worker_launched_s": round(first_launch_s, 3),
            "first_task_claimed_s": round(first_claim_s, 3),
            "all_workers_up_s": None if full_workers_s is None else round(full_workers_s, 3),
            "full_capacity_running_s": None if full_running_s is None else round(full_running_s, 3),
            "peak_claimed": peak_running,
            "drained_s": round(drained_s, 3),
            "ideal_drain_s": round(tasks / max_capacity * sleep_s, 1),
        }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    report: dict[str, Any] = {"provider": "docker (worker processes)", "rounds": []}
    with tempfile.TemporaryDirectory(prefix="bench-provisioner-") as tmp:
        work = Path(tmp)
        async with queue_service("provisioner", work) as service:
            for max_capacity in args.max_capacity:
                database = f"bench_prov_{uuid.uuid4().hex[:10]}"
                round_dir = work / f"max{max_capacity}"
                round_dir.mkdir()
                process, url = await asyncio.to_thread(
                    start_provisioner, service, round_dir, database
                )
                try:
                    progress(f"spike of {args.tasks} tasks on a docker pool, max {max_capacity}")
                    report["rounds"].append(
                        await spike(service, url, args.tasks, max_capacity, args.sleep)
                    )
                finally:
                    process.terminate()
                    await asyncio.to_thread(process.wait, 60)
                    with pymongo.MongoClient(settings.mongo_url) as client:
                        client.drop_database(database)
    return report


def print_report(report: dict[str, Any]) -> None:
    print_table(
        "provisioner (docker provider): pending spike on an empty pool, seconds from the spike",
        ["max", "tasks", "1st launch", "1st claim", "all up", "full cap.", "drained", "ideal"],
        [
            [
                r["max_capacity"],
                r["tasks"],
                r["first_worker_launched_s"],
                r["first_task_claimed_s"],
                r["all_workers_up_s"],
                r["full_capacity_running_s"],
                r["drained_s"],
                r["ideal_drain_s"],
            ]
            for r in report["rounds"]
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--sleep", type=int, default=3, help="seconds each task sleeps")
    parser.add_argument("--max-capacity", type=int, nargs="+", default=[4])
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    print_report(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "provisioner.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'provisioner.json'}")


if __name__ == "__main__":
    main()
