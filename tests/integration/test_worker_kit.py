"""The worker kit (flotilla_worker) against the real queue: the twenty-line example as a
user runs it, and the kit's own stop paths (cancel, claim lost, maxRunTime, SIGTERM)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import taskcluster
import taskcluster.aio

from flotilla_worker import TaskContext, Worker, WorkerSettings, open_worker
from shared.config import Settings
from tests.conftest import (
    Platform,
    RunningService,
    _drop_database,
    launch_queue,
    poll_until,
    stop_process,
)
from tests.integration.queue_support import new_task_queue_id, task_definition

REPO = Path(__file__).resolve().parents[2]


def kit_settings(service: RunningService, tmp_path: Path, tq: str, **more: Any) -> WorkerSettings:
    return WorkerSettings(
        root_url=service.root_url,
        client_id=service.root_client_id,
        access_token=service.root_access_token,
        task_queue_id=tq,
        worker_group="kit-tests",
        worker_id=f"k-{uuid.uuid4().hex[:8]}",
        work_root=tmp_path / "work",
        upload_attempts=2,
        upload_backoff_s=0.1,
        shutdown_grace_s=10,
        **more,
    )


class Sleeper:
    """A handler that writes an output file, then waits forever; records how it ended."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled: list[bool] = []

    async def __call__(self, task: TaskContext) -> None:
        (task.output_dir / "public").mkdir()
        (task.output_dir / "public" / "partial.txt").write_text("partial\n")
        task.log.line("sleeper started")
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.append(task.cancelled.is_set())
            raise


@contextlib.asynccontextmanager
async def kit_worker(settings: WorkerSettings, handler: Any) -> AsyncIterator[Worker]:
    async with open_worker(settings, handler) as worker:
        loop = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            worker.stop()
            await asyncio.wait_for(loop, 30)


@contextlib.asynccontextmanager
async def queue_client(service: RunningService) -> AsyncIterator[taskcluster.aio.Queue]:
    async with taskcluster.aio.createSession() as session:
        yield taskcluster.aio.Queue(service.client_options(), session=session)


async def submit(queue: taskcluster.aio.Queue, tq: str, payload: Any) -> str:
    task_id = taskcluster.slugId()
    await queue.createTask(task_id, task_definition(tq, payload=payload))
    return task_id


async def run_state(queue: taskcluster.aio.Queue, task_id: str, run_id: int = 0) -> dict[str, Any]:
    runs = (await queue.status(task_id))["status"]["runs"]
    return runs[run_id] if run_id < len(runs) else {"state": "absent"}


async def resolved(queue: taskcluster.aio.Queue, task_id: str, run_id: int = 0) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        run = await run_state(queue, task_id, run_id)
        return run if run["state"] not in ("pending", "running", "absent") else None

    return await poll_until(probe, timeout_s=30, interval_s=0.1, what=f"{task_id} resolved")


async def artifact_bytes(queue: taskcluster.aio.Queue, task_id: str, name: str) -> bytes:
    url = (await queue.getArtifact(task_id, "0", name))["url"]
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, (name, response.status)
        return await response.read()


async def artifact_names(queue: taskcluster.aio.Queue, task_id: str) -> dict[str, str]:
    listed = (await queue.listArtifacts(task_id, "0"))["artifacts"]
    return {a["name"]: a["storageType"] for a in listed}


async def log_ends_linked(queue: taskcluster.aio.Queue, task_id: str) -> str:
    """The run's log as a finished run leaves it: live.log links to the backing log."""

    async def linked() -> bool:
        names = await artifact_names(queue, task_id)
        return names.get("public/logs/live.log") == "link"

    await poll_until(linked, timeout_s=10, what="live.log re-pointed to the backing log")
    names = await artifact_names(queue, task_id)
    assert names["public/logs/live_backing.log"] == "s3"
    return (await artifact_bytes(queue, task_id, "public/logs/live.log")).decode()


async def live_log_says(queue: taskcluster.aio.Queue, task_id: str, marker: bytes) -> None:
    """Read the live log (the worker's own HTTP endpoint) until `marker` shows."""

    async def referenced() -> bool:
        names = await artifact_names(queue, task_id)
        return names.get("public/logs/live.log") == "reference"

    await poll_until(referenced, timeout_s=20, what="the live.log reference artifact")
    url = (await queue.getArtifact(task_id, "0", "public/logs/live.log"))["url"]
    seen = b""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        async for chunk in response.content.iter_any():
            seen += chunk
            if marker in seen:
                return
    pytest.fail(f"the live log ended without {marker!r}: {seen[-500:]!r}")


def user_install(tmp_path: Path) -> Path:
    """The kit as a user gets it: the `flotilla_worker` package alone on the path."""
    site = tmp_path / "site"
    shutil.copytree(
        REPO / "flotilla_worker", site / "flotilla_worker", ignore=shutil.ignore_patterns("__py*")
    )
    return site


def user_env(site: Path, service: RunningService, tq: str, worker_id: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKCLUSTER_", "FLOTILLA_"))}
    return {
        **env,
        "PYTHONPATH": str(site),
        "TASKCLUSTER_ROOT_URL": service.root_url,
        "TASKCLUSTER_CLIENT_ID": service.root_client_id,
        "TASKCLUSTER_ACCESS_TOKEN": service.root_access_token,
        "FLOTILLA_WORKER_TASK_QUEUE_ID": tq,
        "FLOTILLA_WORKER_WORKER_GROUP": "kit-tests",
        "FLOTILLA_WORKER_WORKER_ID": worker_id,
    }


async def test_the_echo_example_runs_a_task_end_to_end(platform: Platform, tmp_path: Path) -> None:
    service, tq = platform.queue, new_task_queue_id()
    site = user_install(tmp_path)
    example = tmp_path / "echo_worker.py"
    shutil.copy(REPO / "examples" / "echo_worker.py", example)
    assert len(example.read_text().splitlines()) <= 25
    # the kit pulls in none of Flotilla's generic top-level packages
    probe = (
        "import sys, flotilla_worker.worker;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('shared', 'services', 'cli')];"
        "assert not bad, bad"
    )
    env = user_env(site, service, tq, f"echo-{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True
    )
    log_path = tmp_path / "echo.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 (a one-off spawn)
            [sys.executable, str(example)], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        async with queue_client(service) as queue:
            ok = await submit(queue, tq, {"message": "hello from the kit", "maxRunTime": 30})
            bad = await submit(queue, tq, {"message": 42})
            assert (await resolved(queue, ok))["state"] == "completed"
            assert (await resolved(queue, bad))["state"] == "failed"
            echoed = await artifact_bytes(queue, ok, "public/echo.txt")
            assert echoed == b"hello from the kit\n"
            text = await log_ends_linked(queue, ok)
            assert "hello from the kit" in text.splitlines()
            assert "Successful task run with exit code: 0" in text.splitlines()[-1]
            assert "payload.message must be a string" in await log_ends_linked(queue, bad)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_cancel_stops_the_handler_within_seconds_and_keeps_its_log(
    queue_service: RunningService, tmp_path: Path
) -> None:
    tq, sleeper = new_task_queue_id(), Sleeper()
    async with queue_client(queue_service) as queue:
        async with kit_worker(kit_settings(queue_service, tmp_path, tq), sleeper) as worker:
            task_id = await submit(queue, tq, {"maxRunTime": 600})
            await asyncio.wait_for(sleeper.started.wait(), 20)
            await queue.cancelTask(task_id)

            async def idle() -> bool:
                return not worker.runs

            await poll_until(idle, timeout_s=10, what="the cancelled run to end")
        assert sleeper.cancelled == [True]  # the signal was set before the coroutine's cancel
        run = await run_state(queue, task_id)
        assert (run["state"], run["reasonResolved"]) == ("exception", "canceled")
        text = await log_ends_linked(queue, task_id)
        assert "sleeper started" in text
        assert "public/partial.txt" not in await artifact_names(queue, task_id)


async def test_max_run_time_fails_the_run_without_its_artifacts(
    queue_service: RunningService, tmp_path: Path
) -> None:
    tq, sleeper = new_task_queue_id(), Sleeper()
    async with queue_client(queue_service) as queue:
        async with kit_worker(kit_settings(queue_service, tmp_path, tq), sleeper):
            task_id = await submit(queue, tq, {"maxRunTime": 1})
            assert (await resolved(queue, task_id))["state"] == "failed"
            text = await log_ends_linked(queue, task_id)
        assert sleeper.cancelled == [True]
        assert "Task timeout after 1 seconds. Force killing task." in text
        assert "Unsuccessful task run with exit code: -1" in text.splitlines()[-1]
        assert "public/partial.txt" not in await artifact_names(queue, task_id)


@pytest.fixture(scope="module")
def fast_queue(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A queue of its own with 3 s claims and 1 s claimWork long polls."""
    database = f"test_kit_{uuid.uuid4().hex[:8]}"
    env = {"FLOTILLA_CLAIM_TIMEOUT": "3", "FLOTILLA_CLAIM_WORK_WAIT": "1"}
    service, process = launch_queue(
        tmp_path_factory.mktemp("fastq"), database=database, extra_env=env
    )
    try:
        yield service
    finally:
        stop_process(process)
        _drop_database(settings.mongo_url, database)


async def test_a_lost_claim_reclaim_409_stops_the_handler_and_reports_nothing(
    fast_queue: RunningService, tmp_path: Path
) -> None:
    # The reclaim comes after ~1.5 s. Status probes are off, so only the reclaim's 409 can
    # tell the worker its run was cancelled.
    tq, sleeper = new_task_queue_id(), Sleeper()
    config = kit_settings(fast_queue, tmp_path, tq, status_probe_interval_s=3600)
    async with queue_client(fast_queue) as queue, kit_worker(config, sleeper) as worker:
        task_id = await submit(queue, tq, {"maxRunTime": 600})
        await asyncio.wait_for(sleeper.started.wait(), 20)
        await queue.cancelTask(task_id)

        async def idle() -> bool:
            return not worker.runs

        await poll_until(idle, timeout_s=10, what="the run to end on the reclaim's 409")
        assert sleeper.cancelled == [True]
        (run,) = (await queue.status(task_id))["status"]["runs"]
        assert (run["state"], run["reasonResolved"]) == ("exception", "canceled")
        await log_ends_linked(queue, task_id)


async def test_an_idle_worker_stops_by_itself_after_its_last_task(
    fast_queue: RunningService, tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    config = kit_settings(fast_queue, tmp_path, tq, after_idle_s=1.0)

    async def quick(task: TaskContext) -> None:
        task.log.line("quick")

    async with queue_client(fast_queue) as queue, open_worker(config, quick) as worker:
        finished: list[dict[str, Any]] = []
        worker.on_finished.append(lambda run: 1 / 0)  # a broken observer stops nothing
        worker.on_finished.append(lambda run: finished.append(run.ids))
        task_id = await submit(queue, tq, {"maxRunTime": 30})
        loop = asyncio.create_task(worker.run())
        assert (await resolved(queue, task_id))["state"] == "completed"
        # idle is checked between claimWork calls (never during one)
        await asyncio.wait_for(loop, 20)
        assert not worker.runs and finished == [{"taskId": task_id, "runId": 0}]


SLEEPY_WORKER = """
import asyncio, os
from flotilla_worker import TaskContext, WorkerSettings, run_worker

async def sleepy(task: TaskContext) -> None:
    task.log.line("sleepy started")
    await asyncio.sleep(3600)

asyncio.run(run_worker(sleepy, WorkerSettings.from_env(os.environ)))
"""


async def test_sigterm_reports_worker_shutdown_with_the_log(
    queue_service: RunningService, tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    script = tmp_path / "sleepy.py"
    script.write_text(SLEEPY_WORKER)
    env = user_env(user_install(tmp_path), queue_service, tq, f"s-{uuid.uuid4().hex[:6]}")
    log_path = tmp_path / "sleepy.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 (a one-off spawn)
            [sys.executable, str(script)], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        async with queue_client(queue_service) as queue:
            task_id = await submit(queue, tq, {"maxRunTime": 600})

            await live_log_says(queue, task_id, b"sleepy started")
            process.send_signal(signal.SIGTERM)
            run = await resolved(queue, task_id)
            assert (run["state"], run["reasonResolved"]) == ("exception", "worker-shutdown")
            assert await asyncio.to_thread(process.wait, 15) == 0, log_path.read_text()
            text = await log_ends_linked(queue, task_id)
            assert "The worker is shutting down: the task was stopped." in text
            # worker-shutdown is retried by the queue: run 1 waits for another worker
            assert (await run_state(queue, task_id, 1))["state"] == "pending"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_a_static_worker_registers_with_its_secret_and_keeps_running(
    platform: Platform, settings: Settings, tmp_path: Path
) -> None:
    """Registration through Worker-Manager (static provider): no client credentials of its
    own; shouldWorkerTerminate is asked between claims, and an error answer (e.g. a
    Worker-Manager without that endpoint) means keep running."""
    from tests.integration.test_provisioner import pool_body, start_provisioner

    database = f"test_kit_prov_{uuid.uuid4().hex[:8]}"
    prov = start_provisioner(platform, tmp_path / "prov", database, "http://127.0.0.1:9")
    try:
        manager = prov.manager(platform)
        tq, secret = new_task_queue_id(), uuid.uuid4().hex + uuid.uuid4().hex
        await asyncio.to_thread(manager.createWorkerPool, tq, pool_body("static"))
        info = {
            "providerInfo": {"staticSecret": secret},
            "expires": taskcluster.stringDate(taskcluster.fromNow("1 day")),
        }
        await asyncio.to_thread(manager.createWorker, tq, "rack", "box-1", info)
        config = WorkerSettings(
            root_url=platform.queue.root_url,
            task_queue_id=tq,
            worker_group="rack",
            worker_id="box-1",
            provider_id="static",
            static_secret=secret,
            worker_manager_url=prov.url,
            terminate_check_interval_s=0.1,
            work_root=tmp_path / "work",
        )

        async def hello(task: TaskContext) -> None:
            task.log.line(f"hello {task.task_id}")

        async with queue_client(platform.queue) as queue, kit_worker(config, hello) as worker:
            client_id = worker.deps.worker_queue.options["credentials"]["clientId"]
            if isinstance(client_id, bytes):  # the client keeps credentials as bytes
                client_id = client_id.decode()
            assert client_id == f"worker/static/{tq}/rack/box-1"  # registerWorker's
            first = await submit(queue, tq, {"maxRunTime": 30})
            assert (await resolved(queue, first))["state"] == "completed"
            second = await submit(queue, tq, {"maxRunTime": 30})  # still claiming
            assert (await resolved(queue, second))["state"] == "completed"
            run = await run_state(queue, first)
            assert (run["workerGroup"], run["workerId"]) == ("rack", "box-1")
    finally:
        stop_process(prov.process)
        _drop_database(settings.mongo_url, database)
