"""RabbitMQ restarted in the middle of a run: no pending task and no event is lost.

Pending runs and events live in RabbitMQ (durable queues, persistent messages published
with confirms, through the task outbox). The broker is stopped and started again while a
graph is being worked off; every task still completes exactly once and a durable
subscriber hears every completion."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aio_pika
import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterConnectionError, TaskclusterRestFailure

from shared.config import Settings
from tests.conftest import (
    Platform,
    _drop_database,
    launch_queue,
    launch_service,
    poll_until,
    stop_process,
)
from tests.integration.queue_support import new_task_queue_id, root_queue, task_definition

ROOTS = 12
TRANSIENT = (TaskclusterRestFailure, TaskclusterConnectionError)


@pytest.fixture
def own_platform(tmp_path: Path, settings: Settings) -> Iterator[Platform]:
    database = f"test_restart_{uuid.uuid4().hex[:8]}"
    service, queue_process = launch_queue(tmp_path, database=database)
    processes = {"queue": queue_process}
    try:
        for name in ("dependency_resolver", "claim_expiry"):
            processes[name] = launch_service(name, tmp_path, database=database)
        yield Platform(service, processes)
    finally:
        for process in processes.values():
            stop_process(process)
        _drop_database(settings.mongo_url, database)


def _retrying(call, *args):  # type: ignore[no-untyped-def]
    """A client that keeps trying through the outage, as a worker does."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return call(*args)
        except TRANSIENT:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _restart_rabbitmq() -> None:
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
    subprocess.run(
        ["rabbitmq-diagnostics", "-q", "check_port_connectivity"], check=True, timeout=120
    )


async def _subscribe(settings: Settings, name: str, route: str) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True, arguments={"x-expires": 600_000})
        exchange = await channel.get_exchange(f"{settings.exchange_prefix}task-completed")
        await queue.bind(exchange, routing_key=f"route.{route}")


async def _drain(settings: Settings, name: str) -> set[str]:
    connection = await aio_pika.connect(settings.amqp_url)
    seen: set[str] = set()
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(name, ensure=False)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            seen.add(json.loads(message.body)["status"]["taskId"])
    return seen


def test_a_rabbitmq_restart_mid_run_loses_no_pending_task_and_no_event(
    own_platform: Platform, settings: Settings
) -> None:
    queue = root_queue(own_platform.queue)
    tq = new_task_queue_id()
    route = f"restart-{uuid.uuid4().hex[:8]}"
    subscription = f"flotilla-test/{route}"
    asyncio.run(_subscribe(settings, subscription, route))
    roots = [taskcluster.slugId() for _ in range(ROOTS)]
    dependents = [taskcluster.slugId() for _ in range(ROOTS)]
    for root, dependent in zip(roots, dependents, strict=True):
        queue.createTask(root, task_definition(tq, routes=[route]))
        queue.createTask(dependent, task_definition(tq, routes=[route], dependencies=[root]))
    everything = set(roots) | set(dependents)
    completed: list[str] = []

    def work_one() -> bool:
        claims = _retrying(queue.claimWork, tq, {"workerGroup": "wg", "workerId": "w", "tasks": 1})[
            "tasks"
        ]
        for claim in claims:
            worker = taskcluster.Queue(
                {**own_platform.queue.client_options(), "credentials": claim["credentials"]}
            )
            _retrying(worker.reportCompleted, claim["status"]["taskId"], str(claim["runId"]))
            completed.append(claim["status"]["taskId"])
        return bool(claims)

    while len(completed) < ROOTS // 2:  # half the roots done before the restart
        work_one()
    give_up = time.monotonic() + 300
    with ThreadPoolExecutor(1) as pool:
        restart = pool.submit(_restart_rabbitmq)
        while not restart.done() or len(completed) < len(everything):
            work_one()
            if time.monotonic() > give_up:
                pytest.fail(f"only {len(completed)} of {len(everything)} completed")
        restart.result()
    assert sorted(completed) == sorted(everything)  # each exactly once
    for task_id in everything:
        runs = queue.status(task_id)["status"]["runs"]
        assert [r["state"] for r in runs] == ["completed"], (task_id, runs)

    async def heard_all() -> set[str] | None:
        heard.update(await _drain(settings, subscription))
        return heard if heard >= everything else None

    heard: set[str] = set()
    asyncio.run(poll_until(heard_all, timeout_s=60, what="task-completed for every task"))
