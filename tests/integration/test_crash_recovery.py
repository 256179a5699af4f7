"""Crash loop: a task graph runs to the end while every service is killed (SIGKILL) and
restarted at random moments. Every task must reach its final state exactly once, after
all of its dependencies, and every task-completed event must arrive.

`make test` runs a short version; `make soak` runs it long and repeatedly
(FLOTILLA_SOAK_TASKS, FLOTILLA_SOAK_ROUNDS).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pymongo
import pytest
import taskcluster
import taskcluster.aio

from shared.broker import Broker
from shared.config import Settings
from tests.conftest import _drop_database, launch_queue, launch_service
from tests.integration.queue_support import new_task_queue_id, task_definition
from tests.integration.test_queue_events import PREFIX, subscribe

TASKS = int(os.environ.get("FLOTILLA_SOAK_TASKS", "40"))
ROUNDS = int(os.environ.get("FLOTILLA_SOAK_ROUNDS", "1"))
CLAIM_TIMEOUT_S = 3


def graph(size: int, rng: random.Random) -> dict[str, list[str]]:
    """taskId -> dependencies: layers, each task depending on up to 3 earlier tasks."""
    ids = [taskcluster.slugId() for _ in range(size)]
    return {
        task_id: rng.sample(ids[:index], k=min(index, rng.randint(0, 3))) if index else []
        for index, task_id in enumerate(ids)
    }


class Chaos:
    """Runs the services and kills one of them now and then."""

    def __init__(self, directory: Path, database: str) -> None:
        self.directory, self.database = directory, database
        self.env = {"FLOTILLA_CLAIM_TIMEOUT": str(CLAIM_TIMEOUT_S)}
        self.queue, process = launch_queue(directory, database=database, extra_env=self.env)
        self.processes: dict[str, subprocess.Popen[bytes]] = {"queue": process}
        for name in ("dependency_resolver", "claim_expiry"):
            self.start(name)
        self.kills: Counter[str] = Counter()
        # Set once every service has been killed: the workers hold the second half of the
        # graph back until then, so no round finishes before each service crashed mid-run.
        self.each_killed = asyncio.Event()

    def start(self, name: str) -> None:
        if name == "queue":
            port = int(self.queue.root_url.rsplit(":", 1)[1])
            _service, process = launch_queue(
                self.directory,
                database=self.database,
                port=port,
                token=self.queue.root_access_token,
                extra_env=self.env,
                wait=False,
            )
        else:
            process = launch_service(
                name, self.directory, database=self.database, extra_env=self.env
            )
        self.processes[name] = process

    async def run(self, rng: random.Random, stop: asyncio.Event) -> None:
        # every service is killed once (in a random order) before kills go random, so a
        # round cannot pass without each having crashed while the graph ran
        first = rng.sample(sorted(self.processes), len(self.processes))
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            name = first.pop() if first else rng.choice(sorted(self.processes))
            self.processes[name].send_signal(signal.SIGKILL)
            await asyncio.to_thread(self.processes[name].wait)
            self.kills[name] += 1
            if not first:
                self.each_killed.set()
            await asyncio.sleep(rng.uniform(0, 0.5))
            await asyncio.to_thread(self.start, name)  # it waits for the service to be ready

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()


async def work(
    options: dict[str, Any],
    tq: str,
    worker_id: str,
    stop: asyncio.Event,
    chaos: Chaos,
    done: Counter[str],
) -> None:
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(options, session=session)
        body = {"workerGroup": "chaos", "workerId": worker_id, "tasks": 4}
        while not stop.is_set():
            if done["completed"] >= TASKS // 2 and not chaos.each_killed.is_set():
                await asyncio.sleep(0.1)  # the second half waits for every service to crash
                continue
            try:
                claims = (await queue.claimWork(tq, body))["tasks"]
                for claim in claims:
                    worker = taskcluster.aio.Queue(
                        {**options, "credentials": claim["credentials"]}, session=session
                    )
                    await worker.reportCompleted(claim["status"]["taskId"], str(claim["runId"]))
                    done["completed"] += 1
            except Exception:  # the queue is down, or the claim expired meanwhile
                await asyncio.sleep(0.2)


async def statuses(options: dict[str, Any], ids: list[str]) -> dict[str, dict[str, Any]]:
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(options, session=session)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            page = await queue.statuses(payload={"taskIds": ids[start : start + 500]})
            found.update({s["taskId"]: s["status"] for s in page["statuses"]})
        return found


def diagnose(
    settings: Settings,
    database: str,
    tasks: dict[str, list[str]],
    found: dict[str, dict[str, Any]],
) -> str:
    """What the unfinished tasks look like in the database, for a failure message."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(settings.mongo_url)
    try:
        lines = []
        for task_id, status in found.items():
            if status["state"] == "completed":
                continue
            document = client[database]["tasks"].find_one({"_id": task_id}) or {}
            deps = {d: found.get(d, {}).get("state") for d in tasks[task_id]}
            outbox = sorted(document.get("outbox") or {})
            lines.append(
                f"{task_id} {status['state']} waiting={document.get('waiting')} "
                f"depsLeft={document.get('depsLeft')} outbox={outbox} deps={deps}"
            )
        return "\n".join(lines[:20])
    finally:
        client.close()


async def run_round(directory: Path, settings: Settings, broker: Broker, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    database = f"test_chaos_{uuid.uuid4().hex[:8]}"
    chaos = Chaos(directory, database)
    options = {**chaos.queue.client_options(), "maxRetries": 12}
    tq = new_task_queue_id()
    group = taskcluster.slugId()
    tasks = graph(TASKS, rng)
    completed_events = await subscribe(
        broker,
        [
            {"exchange": PREFIX + "task-completed", "routingKeyPattern": f"#.{group}._"},
        ],
    )
    stop = asyncio.Event()
    try:
        killer = asyncio.create_task(chaos.run(rng, stop))
        done: Counter[str] = Counter()
        workers = [
            asyncio.create_task(work(options, tq, f"w{i}", stop, chaos, done)) for i in range(3)
        ]
        async with taskcluster.aio.createSession() as session:
            queue = taskcluster.aio.Queue(options, session=session)
            for task_id, dependencies in tasks.items():  # in dependency order
                await queue.createTask(
                    task_id,
                    task_definition(tq, taskGroupId=group, dependencies=dependencies),
                )
        deadline = asyncio.get_running_loop().time() + 60 + TASKS * 0.3
        while True:
            found = await statuses(options, list(tasks))
            if all(s["state"] == "completed" for s in found.values()) and len(found) == TASKS:
                killed_while_running = Counter(chaos.kills)
                break
            if asyncio.get_running_loop().time() > deadline:
                states = Counter(s["state"] for s in found.values())
                stuck = diagnose(settings, database, tasks, found)
                pytest.fail(f"graph did not finish: {states}, kills {chaos.kills}\n{stuck}")
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(killer, *workers, return_exceptions=True)
        assert set(killed_while_running) == {"queue", "dependency_resolver", "claim_expiry"}, (
            killed_while_running
        )
        # Each task completed exactly once, after everything it depends on.
        for task_id, status in found.items():
            runs = status["runs"]
            assert [r["state"] for r in runs].count("completed") == 1, (task_id, runs)
            started = datetime.datetime.fromisoformat(runs[-1]["started"])
            for required in tasks[task_id]:
                resolved = datetime.datetime.fromisoformat(found[required]["runs"][-1]["resolved"])
                assert resolved <= started, (task_id, required)
        # No event was lost (duplicates are allowed: delivery is at least once).
        seen: set[str] = set()
        while len(seen) < TASKS:
            message = await completed_events.next(within_s=20)
            seen.add(message.body["status"]["taskId"])
        return chaos.kills
    finally:
        stop.set()
        chaos.stop()
        _drop_database(settings.mongo_url, database)


async def test_a_graph_finishes_correctly_while_services_are_killed(
    tmp_path: Path, settings: Settings, broker: Broker
) -> None:
    kills: Counter[str] = Counter()
    for round_number in range(ROUNDS):
        kills += await run_round(tmp_path, settings, broker, seed=round_number)
    # the chaos actually happened, to each service (run_round checks it happened while
    # the graph was running)
    assert all(kills[name] >= ROUNDS for name in ("queue", "dependency_resolver", "claim_expiry"))
