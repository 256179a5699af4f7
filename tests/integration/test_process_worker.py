"""The process engine (services.process_worker) against the real platform: a graph whose
second task mounts the first's artifacts, failures, onExitStatus retry, caches kept
between tasks, and generic-worker's artifact rules."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import taskcluster
import taskcluster.aio

from flotilla_worker import Worker, WorkerSettings
from services.process_worker.__main__ import EXTRAS, open_process_worker
from tests.conftest import Platform, RunningService, poll_until
from tests.integration.queue_support import new_task_queue_id, task_definition

REPO = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def process_worker(
    service: RunningService, tmp_path: Path, tq: str, **more: Any
) -> AsyncIterator[Worker]:
    settings = WorkerSettings(
        root_url=service.root_url,
        client_id=service.root_client_id,
        access_token=service.root_access_token,
        task_queue_id=tq,
        worker_group="process-tests",
        worker_id=f"p-{uuid.uuid4().hex[:8]}",
        work_root=tmp_path / "work",
        upload_attempts=2,
        upload_backoff_s=0.1,
        shutdown_grace_s=10,
        **more,
    )
    extras = {name: default for name, (_, default, _) in EXTRAS.items()}
    extras["cache_root"] = tmp_path / "caches"
    async with open_process_worker(settings, extras, os.environ) as worker:
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


def sh(*script: str, **payload: Any) -> dict[str, Any]:
    return {"command": [["sh", "-c", "; ".join(script)]], "maxRunTime": 60, **payload}


async def submit(queue: taskcluster.aio.Queue, tq: str, payload: Any, **task: Any) -> str:
    task_id = taskcluster.slugId()
    await queue.createTask(task_id, task_definition(tq, payload=payload, **task))
    return task_id


async def resolved(queue: taskcluster.aio.Queue, task_id: str, run_id: int = 0) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        runs = (await queue.status(task_id))["status"]["runs"]
        run = runs[run_id] if run_id < len(runs) else {"state": "absent"}
        return run if run["state"] not in ("pending", "running", "absent", "unscheduled") else None

    return await poll_until(probe, timeout_s=30, interval_s=0.1, what=f"{task_id} resolved")


async def artifact(queue: taskcluster.aio.Queue, task_id: str, name: str, run: int = 0) -> bytes:
    url = (await queue.getArtifact(task_id, str(run), name))["url"]
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, (name, response.status)
        return await response.read()


async def log_of(queue: taskcluster.aio.Queue, task_id: str, run: int = 0) -> str:
    return (await artifact(queue, task_id, "public/logs/live.log", run)).decode()


async def test_a_graph_whose_second_task_mounts_the_first_task_s_artifacts(
    platform: Platform, tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    producer = sh(
        "mkdir -p out/bundle/sub",
        "echo 'made by the producer' > out/data.txt",
        "echo lib-file > out/bundle/sub/lib.txt",
        "tar -czf out/bundle.tar.gz -C out/bundle .",
        artifacts=[
            {"type": "file", "path": "out/data.txt", "name": "public/data.txt"},
            {"type": "file", "path": "out/bundle.tar.gz", "name": "public/bundle.tar.gz"},
        ],
    )
    async with queue_client(platform.queue) as queue:
        first = await submit(queue, tq, producer)
        consumer = sh(
            'echo "workdir=$TASK_WORKDIR home=$HOME"',
            "cat in/data.txt lib/sub/lib.txt > result.txt",
            "! touch lib/sub/lib.txt 2>/dev/null",  # read-only
            "mkdir -p reports && echo '{}' > reports/r.json",
            env={"GREETING": "hi"},
            mounts=[
                {
                    "file": "in/data.txt",
                    "content": {"taskId": first, "artifact": "public/data.txt"},
                },
                {
                    "directory": "lib",
                    "content": {"taskId": first, "artifact": "public/bundle.tar.gz"},
                    "format": "tar.gz",
                },
            ],
            artifacts=[
                {"type": "file", "path": "result.txt", "name": "public/result.txt"},
                {"type": "directory", "path": "reports", "name": "public/reports"},
                {"type": "file", "path": "nope.txt", "name": "public/nope.txt", "optional": True},
            ],
        )
        second = await submit(queue, tq, consumer, dependencies=[first])
        async with process_worker(platform.queue, tmp_path, tq):
            assert (await resolved(queue, first))["state"] == "completed"
            assert (await resolved(queue, second))["state"] == "completed", await log_of(
                queue, second
            )
        result = await artifact(queue, second, "public/result.txt")
        assert result == b"made by the producer\nlib-file\n"
        assert await artifact(queue, second, "public/reports/r.json") == b"{}\n"
        listed = (await queue.listArtifacts(second, "0"))["artifacts"]
        kinds = {a["name"]: a["storageType"] for a in listed}
        assert kinds["public/nope.txt"] == "error"  # optional: the task still completed
        text = await log_of(queue, second)
        assert "Executing command 0: sh -c" in text
        (seen,) = [line for line in text.splitlines() if line.startswith("workdir=")]
        workdir = seen.split()[0].removeprefix("workdir=")
        assert seen == f"workdir={workdir} home={workdir}" and workdir.endswith("/task")


async def test_exit_codes_retry_malformed_and_required_artifacts(
    queue_service: RunningService, tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    async with queue_client(queue_service) as queue:
        cases = {
            "exit 3": (sh("echo failing", "exit 3"), "failed"),
            "second command fails": (
                {"command": [["true"], ["sh", "-c", "exit 4"], ["touch", "x"]], "maxRunTime": 9},
                "failed",
            ),
            "no such program": ({"command": [["no-such-program-x"]], "maxRunTime": 9}, "failed"),
            "missing artifact": (
                sh("true", artifacts=[{"type": "file", "path": "gone.txt", "name": "public/g"}]),
                "failed",
            ),
            "malformed": ({"command": "echo", "maxRunTime": 5}, "malformed-payload"),
            "docker payload": ({"image": "busybox", "maxRunTime": 5}, "malformed-payload"),
            "max run time": (sh("sleep 30", maxRunTime=1), "failed"),
        }
        retried = await submit(
            queue,
            tq,
            sh(
                'echo "run $RUN_ID"',
                '[ "$RUN_ID" = 0 ] && exit 36',
                "exit 0",
                onExitStatus={"retry": [36]},
            ),
        )
        async with process_worker(queue_service, tmp_path, tq, capacity=4):
            ids = {name: await submit(queue, tq, case[0]) for name, case in cases.items()}
            runs = {name: await resolved(queue, task_id) for name, task_id in ids.items()}
            first = await resolved(queue, retried, 0)
            second = await resolved(queue, retried, 1)
        for name, (_, expected) in cases.items():
            got = runs[name].get("reasonResolved")
            assert got == expected, (name, runs[name], await log_of(queue, ids[name]))
        assert (first["state"], first["reasonResolved"]) == ("exception", "intermittent-task")
        assert second["state"] == "completed"
        assert "run 1" in await log_of(queue, retried, 1)
        assert "Exit Code: 3" in await log_of(queue, ids["exit 3"])
        assert "Task timeout after 1 seconds" in await log_of(queue, ids["max run time"])
        assert "Required artifacts missing: public/g" in await log_of(
            queue, ids["missing artifact"]
        )
        malformed = await log_of(queue, ids["docker payload"])
        assert "image: Extra inputs are not permitted" in malformed


async def test_a_cache_is_kept_between_tasks_and_purged_by_on_exit_status(
    queue_service: RunningService, tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    cache = [{"cacheName": "build", "directory": "cache"}]
    async with queue_client(queue_service) as queue:
        async with process_worker(queue_service, tmp_path, tq):
            write = await submit(queue, tq, sh("echo kept > cache/f", mounts=cache))
            assert (await resolved(queue, write))["state"] == "completed"
            read = await submit(
                queue,
                tq,
                sh(
                    '[ "$(cat cache/f)" = kept ] || exit 1',
                    "exit 5",
                    mounts=cache,
                    onExitStatus={"purgeCaches": [5]},
                ),
            )
            assert (await resolved(queue, read))["state"] == "failed"  # 5: purge, not retry
            assert "Exit Code: 5" in await log_of(queue, read)  # it found the first task's file
            fresh = await submit(queue, tq, sh("test ! -e cache/f", mounts=cache))
            assert (await resolved(queue, fresh))["state"] == "completed"


async def test_python_m_services_process_worker_runs_tasks_and_stops_on_sigterm(
    queue_service: RunningService, tmp_path: Path
) -> None:
    """The composition root, as `make up` starts it (flags; credentials from TASKCLUSTER_*)."""
    tq = new_task_queue_id()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKCLUSTER_", "FLOTILLA_"))}
    env.update(
        TASKCLUSTER_ROOT_URL=queue_service.root_url,
        TASKCLUSTER_CLIENT_ID=queue_service.root_client_id,
        TASKCLUSTER_ACCESS_TOKEN=queue_service.root_access_token,
    )
    argv = [
        f"--task-queue-id={tq}",
        "--worker-group=local",
        "--worker-id=process-1",
        f"--cache-root={tmp_path / 'caches'}",
        f"--work-root={tmp_path / 'work'}",
        "--capacity=2",
    ]
    log_path = tmp_path / "process-worker.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 (a one-off spawn)
            [sys.executable, "-m", "services.process_worker", *argv],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        async with queue_client(queue_service) as queue:
            task_id = await submit(queue, tq, sh('echo "secret=$TASKCLUSTER_ACCESS_TOKEN"'))
            assert (await resolved(queue, task_id))["state"] == "completed", log_path.read_text()
            assert "secret=\n" in await log_of(queue, task_id)  # the worker's token stays its own
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
