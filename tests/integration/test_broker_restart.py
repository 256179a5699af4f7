"""RabbitMQ restarted in the middle of a run: no pending task and no event is lost.

Pending runs and events live only in RabbitMQ (durable queues, persistent messages
published with confirms, through the task outbox); nothing re-publishes a pending run
from MongoDB. So the whole node is stopped (its Erlang VM too, as a host restart does:
transient queues and messages go with it) and started again as `deploy/local` starts it,
while known runs wait in the pending queue, known completions wait in a durable
subscriber's queue and one run is claimed. After it every pending run is still there,
every task completes exactly once and the subscriber hears every completion."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

# A node restart may spend up to 300 s recovering durable queues (deploy/local waits that).
pytestmark = pytest.mark.timeout(600)

ROOTS = 12
TRANSIENT = (TaskclusterRestFailure, TaskclusterConnectionError)
START_RABBITMQ = Path(__file__).resolve().parents[2] / "deploy" / "local" / "rabbitmq.sh"


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


def _node_pid() -> int:
    """The OS process of the running RabbitMQ node (its Erlang VM)."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "eval", "os:getpid()."],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return int(out.strip().strip('"'))


def _restart_rabbitmq() -> None:
    """Stop the node and its Erlang VM (not just the app: `stop_app` keeps the VM), then
    start it the way deploy/local does (raised open-files limit, waits for the port).
    Whatever happens, the broker is started again: other tests share it."""
    before = _node_pid()
    try:
        # waits until the VM has exited
        subprocess.run(["rabbitmqctl", "-q", "shutdown"], check=True, timeout=120)
    finally:
        subprocess.run([str(START_RABBITMQ), "start"], check=True, timeout=330)
    assert _node_pid() != before, "RabbitMQ was not restarted (same node process)"


async def _subscribe(settings: Settings, name: str, route: str) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True, arguments={"x-expires": 600_000})
        exchange = await channel.get_exchange(f"{settings.exchange_prefix}task-completed")
        await queue.bind(exchange, routing_key=f"route.{route}")


async def _waiting(settings: Settings, name: str) -> int:
    """Messages waiting in the subscriber's queue (read, not taken)."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        result = queue.declaration_result
        return int(result.message_count or 0) if result is not None else 0


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

    def claim() -> list[dict[str, Any]]:
        request = {"workerGroup": "wg", "workerId": "w", "tasks": 1}
        return list(_retrying(queue.claimWork, tq, request)["tasks"])

    def complete(claim: dict[str, Any]) -> None:
        worker = taskcluster.Queue(
            {**own_platform.queue.client_options(), "credentials": claim["credentials"]}
        )
        _retrying(worker.reportCompleted, claim["status"]["taskId"], str(claim["runId"]))
        completed.append(claim["status"]["taskId"])

    # Before the restart: half the roots done (their dependents released), one more
    # claimed and still running, nobody claiming.
    while len(completed) < ROOTS // 2:
        for claimed in claim():
            complete(claimed)
    (running,) = claim()
    released = set(roots) | {d for r, d in zip(roots, dependents, strict=True) if r in completed}
    waiting = len(released - set(completed) - {running["status"]["taskId"]})

    async def pending_in_rabbitmq() -> int | None:
        count = int(queue.pendingTasks(tq)["pendingTasks"])
        return count if count == waiting else None

    async def completions_in_subscriber_queue() -> int | None:
        count = await _waiting(settings, subscription)
        return count if count == ROOTS // 2 else None

    asyncio.run(poll_until(pending_in_rabbitmq, timeout_s=60, what=f"{waiting} pending runs"))
    asyncio.run(
        poll_until(
            completions_in_subscriber_queue,
            timeout_s=60,
            what=f"{ROOTS // 2} completions in the subscriber's queue",
        )
    )

    _restart_rabbitmq()

    pending_after = int(_retrying(queue.pendingTasks, tq)["pendingTasks"])
    assert pending_after == waiting, f"pending: {waiting} before the restart, {pending_after} after"
    events_after = asyncio.run(_waiting(settings, subscription))
    assert events_after == ROOTS // 2, (
        f"completions waiting for the subscriber: {ROOTS // 2} before the restart, "
        f"{events_after} after"
    )

    # After it: the claimed run is reported, everything else is claimed and completed.
    complete(running)
    while len(completed) < len(everything):
        for claimed in claim():
            complete(claimed)
    assert sorted(completed) == sorted(everything)  # each exactly once
    for task_id in everything:
        runs = queue.status(task_id)["status"]["runs"]
        assert [r["state"] for r in runs] == ["completed"], (task_id, runs)

    async def heard_all() -> set[str] | None:
        heard.update(await _drain(settings, subscription))
        return heard if heard >= everything else None

    heard: set[str] = set()
    asyncio.run(poll_until(heard_all, timeout_s=60, what="task-completed for every task"))
