"""docker-worker against the real queue process and the real Docker engine, with the
offline-built busybox image only (issue 7, "Done means").

Workers run in-process (`open_worker`), except the SIGTERM test, which runs
`python -m services.docker_worker` as a real process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest
import taskcluster
import taskcluster.aio
from taskcluster.exceptions import TaskclusterRestFailure

from services.docker_worker.app import open_worker
from services.docker_worker.config import build_config
from services.docker_worker.containers import RUN_LABEL, WORKER_LABEL
from services.docker_worker.worker import Worker
from shared.config import Settings
from tests.conftest import (
    RunningService,
    _drop_database,
    assert_alive,
    launch_queue,
    launch_service,
    poll_until,
    stop_process,
)
from tests.integration.queue_support import new_task_queue_id, task_definition

IMAGE = "flotilla/busybox:latest"
REPO = Path(__file__).resolve().parents[2]


def worker_settings(
    service: RunningService, tmp_path: Path, task_queue_id: str, **overrides: Any
) -> dict[str, Any]:
    return {
        "root_url": service.root_url,
        "client_id": service.root_client_id,
        "access_token": service.root_access_token,
        "task_queue_id": task_queue_id,
        "worker_group": "test-group",
        "worker_id": f"w-{uuid.uuid4().hex[:10]}",
        "cache_root": str(tmp_path / "caches"),
        "work_root": str(tmp_path / "work"),
        "pull_attempts": 1,
        "upload_attempts": 2,
        "upload_backoff_s": 0.1,
        "shutdown_grace_s": 10,
        **overrides,
    }


@contextlib.asynccontextmanager
async def running_worker(
    service: RunningService, tmp_path: Path, task_queue_id: str, **overrides: Any
) -> AsyncIterator[Worker]:
    config = build_config(worker_settings(service, tmp_path, task_queue_id, **overrides))
    async with open_worker(config) as worker:
        loop = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            worker.stop()
            await asyncio.wait_for(loop, 30)


@pytest.fixture
async def queue(queue_service: RunningService) -> AsyncIterator[taskcluster.aio.Queue]:
    async with taskcluster.aio.createSession() as session:
        yield taskcluster.aio.Queue(queue_service.client_options(), session=session)


async def submit(queue: taskcluster.aio.Queue, tq: str, payload: Any, **task: Any) -> str:
    task_id = taskcluster.slugId()
    await queue.createTask(task_id, task_definition(tq, payload=payload, **task))
    return task_id


def busybox(*script: str, max_run_time: int = 60, **payload: Any) -> dict[str, Any]:
    return {
        "image": IMAGE,
        "command": ["sh", "-c", "; ".join(script)],
        "maxRunTime": max_run_time,
        **payload,
    }


async def run_state(queue: taskcluster.aio.Queue, task_id: str, run_id: int) -> dict[str, Any]:
    runs = (await queue.status(task_id))["status"]["runs"]
    return runs[run_id] if run_id < len(runs) else {"state": "absent"}


async def resolved(
    queue: taskcluster.aio.Queue, task_id: str, run_id: int = 0, timeout_s: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        run = await run_state(queue, task_id, run_id)
        return run if run["state"] not in ("pending", "running", "absent") else None

    return await poll_until(probe, timeout_s=timeout_s, interval_s=0.1, what=f"{task_id} resolved")


async def running(queue: taskcluster.aio.Queue, task_id: str, run_id: int = 0) -> None:
    async def probe() -> bool:
        return (await run_state(queue, task_id, run_id))["state"] == "running"

    await poll_until(probe, timeout_s=20, interval_s=0.05, what=f"{task_id} running")


async def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, dict(response.headers), await response.read()


async def artifact_text(queue: taskcluster.aio.Queue, task_id: str, name: str, run: int = 0) -> str:
    url = (await queue.getArtifact(task_id, str(run), name))["url"]
    status, _, body = await fetch(url)
    assert status == 200, (name, status, body[:200])
    return body.decode()


async def artifacts_of(queue: taskcluster.aio.Queue, task_id: str, run: int = 0) -> dict[str, str]:
    listed = (await queue.listArtifacts(task_id, str(run)))["artifacts"]
    return {a["name"]: a["storageType"] for a in listed}


async def containers_of(docker_client: docker.DockerClient, **labels: str) -> list[Any]:
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    return await asyncio.to_thread(
        docker_client.containers.list, all=True, filters=filters, sparse=True
    )


async def containers_gone(docker_client: docker.DockerClient, **labels: str) -> None:
    """Containers are removed right after the report: give that a moment."""

    async def gone() -> bool:
        return await containers_of(docker_client, **labels) == []

    await poll_until(gone, timeout_s=5, interval_s=0.05, what=f"containers {labels} removed")


async def test_success_uploads_file_and_directory_artifacts_and_the_backing_log(
    queue_service: RunningService, queue: taskcluster.aio.Queue, tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    payload = busybox(
        "echo hello from the task",
        "mkdir -p /out/sub /data",
        "echo one > /out/a.txt",
        'echo "{}" > /out/sub/b.json',
        "echo packed > /data/pack.gz",
        "echo result > /result.txt",
        "head -c 300000 /dev/urandom > /data/blob.bin",
        'echo "blob md5 $(md5sum /data/blob.bin)"',
        artifacts={
            "public/blob.bin": {"type": "file", "path": "/data/blob.bin"},
            "public/result.txt": {"type": "file", "path": "/result.txt"},
            "public/dir": {"type": "directory", "path": "/out"},
            "public/pack.gz": {"type": "file", "path": "/data/pack.gz"},
            "public/missing.txt": {"type": "file", "path": "/no/such/file"},
            "public/not-a-dir": {"type": "directory", "path": "/result.txt"},
        },
    )
    async with running_worker(queue_service, tmp_path, tq):
        task_id = await submit(queue, tq, payload)
        assert (await resolved(queue, task_id))["state"] == "completed"
    names = await artifacts_of(queue, task_id)
    assert names == {
        "public/result.txt": "s3",
        "public/dir/a.txt": "s3",
        "public/dir/sub/b.json": "s3",
        "public/pack.gz": "s3",
        "public/blob.bin": "s3",
        "public/missing.txt": "error",
        "public/not-a-dir": "error",
        "public/logs/live.log": "link",
        "public/logs/live_backing.log": "s3",
    }
    assert await artifact_text(queue, task_id, "public/result.txt") == "result\n"
    assert await artifact_text(queue, task_id, "public/dir/sub/b.json") == "{}\n"
    url = (await queue.getArtifact(task_id, "0", "public/dir/a.txt"))["url"]
    _, headers, _ = await fetch(url)
    assert headers["Content-Type"].startswith("text/plain")
    assert headers["Content-Encoding"] == "gzip"
    url = (await queue.getArtifact(task_id, "0", "public/pack.gz"))["url"]
    _, headers, body = await fetch(url)
    assert "Content-Encoding" not in headers and body == b"packed\n"  # stored as it was
    # issue 20: binary content is stored as it is; a plain GET gives the task's bytes
    url = (await queue.getArtifact(task_id, "0", "public/blob.bin"))["url"]
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url) as response:
            assert "Content-Encoding" not in response.headers
            blob = await response.read()
    assert len(blob) == 300000
    with pytest.raises(TaskclusterRestFailure) as missing:
        await queue.getArtifact(task_id, "0", "public/missing.txt")
    assert missing.value.status_code == 424
    # the live log now links to the gzip-encoded backing log, served as stored
    backing_url = (await queue.getLatestArtifact(task_id, "public/logs/live_backing.log"))["url"]
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(backing_url) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            log_text = gzip.decompress(await response.read()).decode()
    assert await artifact_text(queue, task_id, "public/logs/live.log") == log_text
    lines = log_text.splitlines()
    assert lines[0].startswith("[taskcluster ") and lines[0].endswith(f"Task ID: {task_id}")
    assert "=== Task Starting ===" in log_text and "=== Task Finished ===" in log_text
    assert "hello from the task" in lines
    (md5_line,) = [line for line in lines if line.startswith("blob md5 ")]
    assert md5_line.split()[2] == hashlib.md5(blob).hexdigest()
    assert "Successful task run with exit code: 0 completed in" in lines[-1]


async def test_the_result_table(
    queue_service: RunningService, queue: taskcluster.aio.Queue, tmp_path: Path
) -> None:
    """One task per row of reference §2.5 that needs no special timing, run 4 at a time."""
    tq = new_task_queue_id()
    cases = {
        "exit 3": (busybox("echo failing", "exit 3"), "failed", None),
        "malformed": ({"image": IMAGE, "command": "not-a-list"}, "exception", "malformed-payload"),
        "indexed-image": (
            {
                "image": {"type": "indexed-image", "namespace": "a.b", "path": "i.tar"},
                "maxRunTime": 5,
            },
            "exception",
            "malformed-payload",
        ),
        "missing image": (
            {"image": "flotilla/no-such-image:1", "command": ["true"], "maxRunTime": 30},
            "failed",
            None,
        ),
        "unknown feature": (busybox("true", features={"teleport": True}), "failed", None),
        "disabled feature": (busybox("true", features={"dind": True}), "failed", None),
        "cache without scope": (busybox("true", cache={"c1": "/c"}), "failed", None),
        "privileged without scope": (
            busybox("true", capabilities={"privileged": True}),
            "failed",
            None,
        ),
    }
    async with running_worker(queue_service, tmp_path, tq, capacity=4):
        ids = {name: await submit(queue, tq, case[0]) for name, case in cases.items()}
        runs = {name: await resolved(queue, task_id) for name, task_id in ids.items()}
    for name, (_, state, reason) in cases.items():
        assert (runs[name]["state"], runs[name].get("reasonResolved")) == (
            state,
            reason or state,
        ), name
    log_text = await artifact_text(queue, ids["exit 3"], "public/logs/live_backing.log")
    assert "failing" in log_text
    assert "Unsuccessful task run with exit code: 3" in log_text.splitlines()[-1]
    malformed = await artifact_text(queue, ids["malformed"], "public/logs/live_backing.log")
    assert "[taskcluster:error] Task payload is malformed" in malformed and "command" in malformed
    missing = await artifact_text(queue, ids["missing image"], "public/logs/live_backing.log")
    assert "Pulling docker image has failed." in missing
    feature = await artifact_text(queue, ids["unknown feature"], "public/logs/live_backing.log")
    assert "teleport is not part of valid features" in feature


async def test_a_retry_exit_status_makes_a_new_run_and_worker_variables_win(
    queue_service: RunningService, queue: taskcluster.aio.Queue, tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    payload = busybox(
        'echo "seen TASK_ID=$TASK_ID RUN_ID=$RUN_ID ROOT=$TASKCLUSTER_ROOT_URL MINE=$MINE"',
        '[ "$RUN_ID" = 0 ] && exit 36',
        "exit 0",
        env={"TASK_ID": "forged", "RUN_ID": "99", "TASKCLUSTER_ROOT_URL": "x", "MINE": "kept"},
        onExitStatus={"retry": [36]},
    )
    async with running_worker(queue_service, tmp_path, tq):
        task_id = await submit(queue, tq, payload)
        first = await resolved(queue, task_id, 0)
        assert (first["state"], first["reasonResolved"]) == ("exception", "intermittent-task")
        assert (await resolved(queue, task_id, 1))["state"] == "completed"
    for run_id in (0, 1):
        text = await artifact_text(queue, task_id, "public/logs/live_backing.log", run_id)
        expected = f"seen TASK_ID={task_id} RUN_ID={run_id} ROOT={queue_service.root_url} MINE=kept"
        assert expected in text.splitlines()


async def test_max_run_time_kills_the_container_uploads_logs_but_not_artifacts(
    queue_service: RunningService,
    queue: taskcluster.aio.Queue,
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    tq = new_task_queue_id()
    payload = busybox(
        "echo x > /out.txt",
        "sleep 60",
        max_run_time=1,
        artifacts={"public/out.txt": {"type": "file", "path": "/out.txt"}},
    )
    async with running_worker(queue_service, tmp_path, tq):
        task_id = await submit(queue, tq, payload)
        assert (await resolved(queue, task_id, timeout_s=20))["state"] == "failed"
        await containers_gone(docker_client, **{RUN_LABEL: f"{task_id}/0"})
    names = await artifacts_of(queue, task_id)
    assert "public/out.txt" not in names and "public/logs/live_backing.log" in names
    text = await artifact_text(queue, task_id, "public/logs/live.log")
    assert "Task timeout after 1 seconds. Force killing container." in text
    assert "Unsuccessful task run with exit code: -1" in text.splitlines()[-1]


async def test_live_log_streams_while_running_and_cancel_stops_the_container_within_2s(
    queue_service: RunningService,
    queue: taskcluster.aio.Queue,
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    tq = new_task_queue_id()
    async with running_worker(queue_service, tmp_path, tq) as worker:
        task_id = await submit(queue, tq, busybox("echo started-marker", "sleep 60"))
        await running(queue, task_id)

        # the live log: a reference artifact to the worker's endpoint, readable with plain HTTP
        async def live_log_listed() -> bool:
            listed = await artifacts_of(queue, task_id)
            return listed.get("public/logs/live.log") == "reference"

        await poll_until(live_log_listed, what="the live.log reference artifact")
        url = (await queue.getArtifact(task_id, "0", "public/logs/live.log"))["url"]
        seen = b""
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
            async for chunk in response.content.iter_any():
                seen += chunk
                if b"started-marker\n" in seen:
                    break
        assert b"=== Task Starting ===" in seen
        (container,) = await containers_of(docker_client, **{RUN_LABEL: f"{task_id}/0"})
        await queue.cancelTask(task_id)

        async def stopped() -> bool:
            try:
                await asyncio.to_thread(container.reload)
            except docker.errors.NotFound:
                return True
            return not container.attrs["State"]["Running"]

        # stopped by the cancel event, long before the next reclaim could have told the
        # worker (how fast is a benchmark's business, not this test's)
        await poll_until(stopped, timeout_s=20, interval_s=0.05, what="container stopped")

        async def idle() -> bool:
            return not worker.runs

        await poll_until(idle, timeout_s=10, what="the run to end")
    run = await run_state(queue, task_id, 0)
    assert (run["state"], run["reasonResolved"]) == ("exception", "canceled")
    # issue 20: a cancelled run keeps its log (backing log uploaded, live.log linked to it)
    listed = await artifacts_of(queue, task_id)
    assert listed["public/logs/live_backing.log"] == "s3"
    assert listed["public/logs/live.log"] == "link"
    assert "started-marker" in await artifact_text(queue, task_id, "public/logs/live.log")
    await containers_gone(docker_client, **{RUN_LABEL: f"{task_id}/0"})


async def test_a_cache_is_reused_by_the_next_task(
    queue_service: RunningService, queue: taskcluster.aio.Queue, tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    scopes = ["docker-worker:cache:build-*"]
    cache = {"build-cache": "/cache"}
    async with running_worker(queue_service, tmp_path, tq):
        first = await submit(
            queue, tq, busybox("echo from-first > /cache/f", cache=cache), scopes=scopes
        )
        assert (await resolved(queue, first))["state"] == "completed"
        second = await submit(
            queue, tq, busybox('[ "$(cat /cache/f)" = from-first ]', cache=cache), scopes=scopes
        )
        assert (await resolved(queue, second))["state"] == "completed"
    (instance,) = (tmp_path / "caches" / "build-cache").iterdir()
    assert (instance / "f").read_text() == "from-first\n"


async def test_capacity_4_runs_4_containers_at_once(
    queue_service: RunningService,
    queue: taskcluster.aio.Queue,
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    tq = new_task_queue_id()
    async with running_worker(queue_service, tmp_path, tq, capacity=4) as worker:
        # each task waits until all four containers exist (they share a cache), then exits
        scopes = ["docker-worker:cache:rendezvous"]
        script = busybox(
            "touch /r/$TASK_ID",
            "while [ $(ls /r | wc -l) -lt 4 ]; do sleep 0.1; done",
            cache={"rendezvous": "/r"},
        )
        ids = [await submit(queue, tq, script, scopes=scopes) for _ in range(4)]

        async def four_running() -> bool:
            found = await containers_of(docker_client, **{WORKER_LABEL: worker.config.worker_key})
            return len(found) == 4

        await poll_until(four_running, timeout_s=20, interval_s=0.1, what="4 containers")
        # a cache instance is mounted by one run at a time: four runs, four instances
        assert len(list((tmp_path / "caches" / "rendezvous").iterdir())) == 4
        await queue.cancelTask(ids[0])  # the others wait for it forever; release them
        for task_id in ids:
            await queue.cancelTask(task_id)
        await poll_until(lambda: _no_runs(worker), timeout_s=10, what="runs to end")


async def _no_runs(worker: Worker) -> bool:
    return not worker.runs


async def test_task_image_loads_a_tarball_artifact(
    queue_service: RunningService,
    queue: taskcluster.aio.Queue,
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    # a task that "built" an image: its tarball, uploaded by hand with root credentials
    builder_tq, tq = new_task_queue_id(), new_task_queue_id()
    builder = await submit(queue, builder_tq, {})
    await queue.claimWork(builder_tq, {"workerGroup": "wg", "workerId": "builder", "tasks": 1})
    tarball = b"".join(
        await asyncio.to_thread(lambda: list(docker_client.images.get(IMAGE).save()))
    )
    created = await queue.createArtifact(
        builder,
        "0",
        "public/image.tar",
        {
            "storageType": "s3",
            "contentType": "application/x-tar",
            "expires": taskcluster.fromNowJSON("1 day"),
        },
    )
    async with aiohttp.ClientSession() as session:
        headers = {"Content-Type": "application/x-tar"}
        body = io.BytesIO(tarball)
        async with session.put(created["putUrl"], data=body, headers=headers) as response:
            assert response.status == 200
    await queue.reportCompleted(builder, "0")
    image = {"type": "task-image", "taskId": builder, "path": "public/image.tar"}
    async with running_worker(queue_service, tmp_path, tq):
        task_id = await submit(
            queue, tq, {"image": image, "command": ["echo", "from-task-image"], "maxRunTime": 30}
        )
        assert (await resolved(queue, task_id))["state"] == "completed"
    assert "from-task-image" in (await artifact_text(queue, task_id, "public/logs/live.log"))


async def test_sigterm_reports_worker_shutdown_and_a_second_worker_takes_the_retry(
    queue_service: RunningService,
    queue: taskcluster.aio.Queue,
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    tq = new_task_queue_id()
    settings = worker_settings(queue_service, tmp_path, tq)
    argv = [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TASKCLUSTER_", "FLOTILLA_WORKER_"))
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: ASYNC220 (a one-off spawn)
            [sys.executable, "-m", "services.docker_worker", *argv],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        task_id = await submit(queue, tq, busybox('[ "$RUN_ID" = 0 ] && sleep 60', "exit 0"))
        await running(queue, task_id)

        async def container_up() -> list[Any]:
            found = await containers_of(docker_client, **{RUN_LABEL: f"{task_id}/0"})
            return [c for c in found if c.status == "running"]

        await poll_until(container_up, timeout_s=20, interval_s=0.05, what="the container")
        process.send_signal(signal.SIGTERM)
        first = await resolved(queue, task_id, 0, timeout_s=10)
        assert (first["state"], first["reasonResolved"]) == ("exception", "worker-shutdown")
        assert await asyncio.to_thread(process.wait, 15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    await containers_gone(docker_client, **{RUN_LABEL: f"{task_id}/0"})
    assert "Task Starting" in await artifact_text(queue, task_id, "public/logs/live_backing.log")
    assert (await artifacts_of(queue, task_id))["public/logs/live.log"] == "link"  # issue 20
    async with running_worker(queue_service, tmp_path, tq):
        assert (await resolved(queue, task_id, 1))["state"] == "completed"


async def test_a_task_longer_than_its_claim_is_kept_by_reclaiming(
    settings: Settings, tmp_path: Path
) -> None:
    # 3 s claims, a 6 s task: only reclaims (at half the remaining time) keep run 0 alive.
    database = f"test_reclaim_{uuid.uuid4().hex[:8]}"
    env = {"FLOTILLA_CLAIM_TIMEOUT": "3"}
    service, process = launch_queue(tmp_path, database=database, extra_env=env)
    # claim-expiry resolves a lapsed claim within a second: without reclaims, run 0 would
    # end as exception/claim-expired
    expiry = launch_service("claim_expiry", tmp_path, database=database, extra_env=env)
    try:
        async with taskcluster.aio.createSession() as session:
            queue = taskcluster.aio.Queue(service.client_options(), session=session)
            tq = new_task_queue_id()
            task_id = await submit(queue, tq, busybox("sleep 6", "echo done"))
            async with running_worker(service, tmp_path, tq):
                run = await resolved(queue, task_id, timeout_s=40)
            status = (await queue.status(task_id))["status"]
        assert run["state"] == "completed", run
        assert len(status["runs"]) == 1  # never expired, never retried
        assert_alive(expiry, "claim-expiry")  # a dead one would have expired nothing
    finally:
        stop_process(expiry)
        stop_process(process)
        _drop_database(settings.mongo_url, database)
