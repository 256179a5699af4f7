"""The provisioner as a real process (`python -m services.provisioner`) against the real
queue, RabbitMQ, FerretDB and Docker engine; docker workers are real processes; the aws
provider talks HTTP to moto's standalone server. Driven through `taskcluster.WorkerManager`.

Each test's provisioner has its own database (its pools, workers and lease); the tasks
live in the session queue's database.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import docker
import pytest
import taskcluster
import taskcluster.aio
from taskcluster.exceptions import TaskclusterRestFailure

from shared import db as dbmod
from shared.config import Settings
from tests.conftest import (
    Platform,
    _drop_database,
    _free_port,
    launch_service,
    poll_until,
    stop_process,
)
from tests.integration.queue_support import new_task_queue_id, task_definition
from tests.integration.test_cli import flotilla

IMAGE = "flotilla/busybox:latest"
WORKER_LABEL = "org.flotilla.docker-worker"
REGION = "us-west-2"
AWS_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class Provisioner:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def manager(self, platform: Platform) -> taskcluster.WorkerManager:
        return taskcluster.WorkerManager(
            {**platform.queue.client_options(), "rootUrl": self.url, "maxRetries": 0}
        )


def start_provisioner(
    platform: Platform, directory: Path, database: str, moto_url: str
) -> Provisioner:
    port = _free_port()
    directory.mkdir(parents=True, exist_ok=True)
    process = launch_service(
        "provisioner",
        directory,
        database=database,
        extra_env={
            "FLOTILLA_PROVISIONER_PORT": str(port),
            "FLOTILLA_ROOT_URL": platform.queue.root_url,
            "FLOTILLA_ROOT_ACCESS_TOKEN": platform.queue.root_access_token,
            "FLOTILLA_PROVISIONER_WORK_ROOT": str(directory / "workers"),
            "FLOTILLA_PROVISIONER_INTERVAL": "1",
            "FLOTILLA_PROVISIONER_LEASE": "3",
            "FLOTILLA_AWS_ENDPOINT_URL": moto_url,
            "FLOTILLA_AWS_ACCESS_KEY_ID": "testing",
            "FLOTILLA_AWS_SECRET_ACCESS_KEY": "testing",
        },
    )
    url = f"http://127.0.0.1:{port}"
    log_path = max(directory.glob("provisioner-*.log"), key=lambda p: p.stat().st_mtime)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            pytest.fail(f"provisioner exited:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/api/worker-manager/v1/ping", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"provisioner did not answer:\n{log_path.read_text()}")
            time.sleep(0.1)
    return Provisioner(process, url, log_path)


@pytest.fixture
def prov_db(settings: Settings) -> Iterator[str]:
    name = f"test_prov_{uuid.uuid4().hex[:10]}"
    yield name
    _drop_database(settings.mongo_url, name)


@pytest.fixture
async def workers_coll(settings: Settings, prov_db: str) -> AsyncIterator[Any]:
    client = dbmod.connect(settings.mongo_url)
    yield client[prov_db]
    await client.close()


@pytest.fixture
async def queue(platform: Platform) -> AsyncIterator[taskcluster.aio.Queue]:
    async with taskcluster.aio.createSession() as session:
        yield taskcluster.aio.Queue(platform.queue.client_options(), session=session)


def pool_body(provider: str, **config: Any) -> dict[str, Any]:
    return {
        "providerId": provider,
        "description": "test pool",
        "owner": "tests@example.com",
        "emailOnError": False,
        "config": config,
    }


async def submit(queue: taskcluster.aio.Queue, tq: str, command: list[str], **task: Any) -> str:
    task_id = taskcluster.slugId()
    payload = {"image": IMAGE, "command": command, "maxRunTime": 30}
    await queue.createTask(task_id, task_definition(tq, payload=payload, **task))
    return task_id


async def workers(manager: taskcluster.WorkerManager, pool: str, **query: str) -> list[Any]:
    answer = await asyncio.to_thread(manager.listWorkersForWorkerPool, pool, query=query)
    return answer["workers"]


def live(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [w for w in found if w["state"] != "stopped"]


# --- docker provider ---------------------------------------------------------------------


async def test_spike_launches_max_workers_that_drain_and_stop_when_idle_min_kept(
    platform: Platform, queue: taskcluster.aio.Queue, tmp_path: Path, prov_db: str, moto_server: str
) -> None:
    prov = start_provisioner(platform, tmp_path, prov_db, moto_server)
    manager = prov.manager(platform)
    pool = new_task_queue_id()
    try:
        created = manager.createWorkerPool(
            pool,
            pool_body("docker", minCapacity=1, maxCapacity=4, workerConfig={"afterIdleSeconds": 3}),
        )
        assert (created["workerPoolId"], created["providerId"]) == (pool, "docker")
        # minCapacity: one worker with no work at all
        await poll_until(
            lambda: _count(manager, pool, 1), timeout_s=15, interval_s=0.2, what="min worker"
        )
        started = time.monotonic()
        group = taskcluster.slugId()
        task_ids = await asyncio.gather(
            *(submit(queue, pool, ["true"], taskGroupId=group) for _ in range(20))
        )

        async def all_done() -> bool:
            listed = (await queue.listTaskGroup(group))["tasks"]
            return len(listed) == 20 and all(t["status"]["state"] == "completed" for t in listed)

        await poll_until(all_done, timeout_s=60, interval_s=0.5, what="20 tasks completed")
        drained_s = time.monotonic() - started
        spike = await workers(manager, pool)
        assert len(spike) == 4, spike  # never more than maxCapacity
        ran_on = {(await queue.status(t))["status"]["runs"][0]["workerId"] for t in task_ids}
        assert len(ran_on) > 1 and ran_on <= {w["workerId"] for w in spike}
        print(f"20 tasks drained by {len(ran_on)} launched workers in {drained_s:.1f}s")

        # idle: the spike's workers stop themselves; the pool keeps its one worker
        spike_ids = {w["workerId"] for w in spike}

        async def idled_out() -> bool:
            found = await workers(manager, pool)
            stopped = {w["workerId"] for w in found if w["state"] == "stopped"}
            return spike_ids <= stopped and len(live(found)) == 1

        await poll_until(idled_out, timeout_s=45, interval_s=0.5, what="idle shutdown")
    finally:
        stop_process(prov.process)


async def _count(manager: taskcluster.WorkerManager, pool: str, n: int) -> bool:
    return len(live(await workers(manager, pool))) == n


async def test_a_killed_worker_s_task_is_retried_within_seconds(
    platform: Platform,
    queue: taskcluster.aio.Queue,
    tmp_path: Path,
    prov_db: str,
    workers_coll: Any,
    moto_server: str,
    docker_client: docker.DockerClient,
) -> None:
    prov = start_provisioner(platform, tmp_path, prov_db, moto_server)
    manager = prov.manager(platform)
    pool = new_task_queue_id()
    killed: dict[str, Any] = {}
    try:
        manager.createWorkerPool(
            pool, pool_body("docker", maxCapacity=1, workerConfig={"afterIdleSeconds": 60})
        )
        task_id = await submit(queue, pool, ["sleep", "25"])

        async def running() -> dict[str, Any] | None:
            runs = (await queue.status(task_id))["status"]["runs"]
            return runs[0] if runs and runs[0]["state"] == "running" else None

        run = await poll_until(running, timeout_s=30, interval_s=0.2, what="task running")
        killed = await workers_coll["provisioned_workers"].find_one({"workerId": run["workerId"]})
        os.kill(killed["providerData"]["pid"], signal.SIGKILL)
        t0 = time.monotonic()

        async def retried() -> list[dict[str, Any]] | None:
            runs = (await queue.status(task_id))["status"]["runs"]
            return runs if len(runs) == 2 else None

        runs = await poll_until(retried, timeout_s=10, interval_s=0.1, what="the retry")
        retried_s = time.monotonic() - t0
        assert (runs[0]["state"], runs[0]["reasonResolved"]) == ("exception", "worker-shutdown")
        assert runs[1]["reasonCreated"] == "retry"
        print(f"killed worker's task retried after {retried_s:.2f}s")
        assert retried_s < 5
        found = manager.worker(pool, killed["workerGroup"], killed["workerId"])
        assert found["state"] == "stopped"
        # a new worker is launched and takes the retry
        run1 = await poll_until(
            lambda: _run_state(queue, task_id, 1, "running"), timeout_s=20, what="retry claimed"
        )
        assert run1["workerId"] != killed["workerId"]
        await queue.cancelTask(task_id)
    finally:
        stop_process(prov.process)
        if killed:
            key = f"{killed['workerGroup']}/{killed['workerId']}"
            for container in docker_client.containers.list(
                all=True, filters={"label": f"{WORKER_LABEL}={key}"}
            ):
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)


async def _run_state(
    queue: taskcluster.aio.Queue, task_id: str, run_id: int, state: str
) -> dict[str, Any] | None:
    runs = (await queue.status(task_id))["status"]["runs"]
    return runs[run_id] if len(runs) > run_id and runs[run_id]["state"] == state else None


# --- aws provider against moto -----------------------------------------------------------


def ec2(moto_url: str, region: str = REGION) -> Any:
    return boto3.client("ec2", region_name=region, endpoint_url=moto_url, **AWS_KEYS)


def instances_of(client: Any, pool: str) -> list[dict[str, Any]]:
    answer = client.describe_instances(Filters=[{"Name": "tag:WorkerPoolId", "Values": [pool]}])
    return [i for r in answer["Reservations"] for i in r["Instances"]]


@functools.cache
def moto_image(moto_url: str, region: str) -> str:
    """One of moto's stock AMIs (listing them is slow: once per region)."""
    return str(ec2(moto_url, region).describe_images()["Images"][0]["ImageId"])


def aws_pool(moto_url: str, region: str = REGION, **config: Any) -> dict[str, Any]:
    image = moto_image(moto_url, region)
    return pool_body(
        "aws",
        launchConfigs=[
            {"region": region, "launchConfig": {"ImageId": image, "InstanceType": "t3.micro"}}
        ],
        **config,
    )


async def test_aws_launches_spot_instances_with_user_data_and_terminates_zombies(
    platform: Platform, queue: taskcluster.aio.Queue, tmp_path: Path, prov_db: str, moto_server: str
) -> None:
    prov = start_provisioner(platform, tmp_path, prov_db, moto_server)
    manager = prov.manager(platform)
    pool = new_task_queue_id()
    client = ec2(moto_server)
    try:
        manager.createWorkerPool(
            pool, aws_pool(moto_server, maxCapacity=2, lifecycle={"registrationTimeout": 4})
        )
        for _ in range(5):
            await submit(queue, pool, ["true"])
        first = await poll_until(
            lambda: asyncio.to_thread(lambda: len(instances_of(client, pool)) == 2 or None),
            timeout_s=15,
            what="2 instances",
        )
        assert first
        instances = instances_of(client, pool)
        assert len(instances) == 2  # maxCapacity, although 5 tasks are pending
        registered = None
        for instance in instances:
            assert instance.get("InstanceLifecycle") == "spot"
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            assert tags["WorkerPoolId"] == pool and tags["ManagedBy"] == "flotilla"
            raw = client.describe_instance_attribute(
                InstanceId=instance["InstanceId"], Attribute="userData"
            )["UserData"]["Value"]
            data = json.loads(base64.b64decode(raw))
            assert data["rootUrl"] == platform.queue.root_url
            assert data["workerPoolId"] == pool and data["providerId"] == "aws"
            assert data["workerGroup"] == REGION and data["workerId"] == tags["WorkerId"]
            assert len(data["registrationToken"]) >= 32
            if registered is None:
                registered = (instance["InstanceId"], data)
        assert registered is not None
        instance_id, data = registered
        body = {
            "workerPoolId": pool,
            "providerId": "aws",
            "workerGroup": data["workerGroup"],
            "workerId": data["workerId"],
            "workerIdentityProof": {"registrationToken": data["registrationToken"]},
        }
        answer = manager.registerWorker(body)
        assert answer["credentials"]["clientId"] == (
            f"worker/aws/{pool}/{REGION}/{data['workerId']}"
        )
        # the credentials work at the queue, for this pool only
        worker_queue = taskcluster.Queue(
            {**platform.queue.client_options(), "credentials": answer["credentials"]}
        )
        counts = {"workerGroup": REGION, "workerId": data["workerId"], "tasks": 1}
        assert len(worker_queue.claimWork(pool, counts)["tasks"]) == 1
        with pytest.raises(TaskclusterRestFailure) as again:
            manager.registerWorker(body)  # the token is one-time
        assert again.value.status_code == 400

        # the unregistered one is a zombie after registrationTimeout: terminated
        def states() -> dict[str, str]:
            return {i["InstanceId"]: i["State"]["Name"] for i in instances_of(client, pool)}

        zombie = next(i["InstanceId"] for i in instances if i["InstanceId"] != instance_id)
        await poll_until(
            lambda: asyncio.to_thread(lambda: states()[zombie] == "terminated"),
            timeout_s=20,
            interval_s=0.3,
            what="zombie terminated",
        )
        assert states()[instance_id] == "running"
        found = manager.worker(pool, REGION, data["workerId"])
        assert found["state"] == "running"
        alive = [s for s in states().values() if s != "terminated"]
        assert len(alive) <= 2
    finally:
        stop_process(prov.process)


async def test_two_replicas_never_both_act(
    platform: Platform,
    queue: taskcluster.aio.Queue,
    tmp_path: Path,
    prov_db: str,
    workers_coll: Any,
    moto_server: str,
) -> None:
    region = "eu-west-1"
    one = start_provisioner(platform, tmp_path / "a", prov_db, moto_server)
    two = start_provisioner(platform, tmp_path / "b", prov_db, moto_server)
    pool = new_task_queue_id()
    client = ec2(moto_server, region)
    try:
        manager = two.manager(platform)
        manager.createWorkerPool(pool, aws_pool(moto_server, region, maxCapacity=3))
        for _ in range(3):
            await submit(queue, pool, ["true"])
        await poll_until(
            lambda: asyncio.to_thread(lambda: len(instances_of(client, pool)) == 3),
            timeout_s=15,
            what="3 instances",
        )
        await asyncio.sleep(2.5)  # more ticks from both replicas: nothing more happens
        assert len(instances_of(client, pool)) == 3
        docs = await workers_coll["provisioned_workers"].find({}).to_list(None)
        launchers = {d["launchedBy"] for d in docs}
        assert len(docs) == 3 and len(launchers) == 1
        (leader_id,) = launchers
        leader, standby = (one, two) if f"-{one.process.pid}-" in leader_id else (two, one)
        assert f"-{leader.process.pid}-" in leader_id

        stop_process(leader.process)  # releases the lease: the standby takes over
        body = aws_pool(moto_server, region, maxCapacity=4)
        standby.manager(platform).updateWorkerPool(pool, body)
        for _ in range(2):
            await submit(queue, pool, ["true"])
        await poll_until(
            lambda: asyncio.to_thread(lambda: len(instances_of(client, pool)) == 4),
            timeout_s=15,
            what="the standby launching",
        )
        docs = await workers_coll["provisioned_workers"].find({}).to_list(None)
        assert len({d["launchedBy"] for d in docs}) == 2
        assert (
            f"-{standby.process.pid}-"
            in (await workers_coll["provisioner_lease"].find_one())["holder"]
        )
    finally:
        stop_process(one.process)
        stop_process(two.process)


async def test_flotilla_pools_lists_the_provisioners_pools(
    platform: Platform, tmp_path: Path, prov_db: str, moto_server: str
) -> None:
    prov = start_provisioner(platform, tmp_path, prov_db, moto_server)
    try:
        pool = f"pools-{uuid.uuid4().hex[:6]}/wt"
        body = pool_body("docker", minCapacity=0, maxCapacity=3, scalingRatio=1)
        await asyncio.to_thread(prov.manager(platform).createWorkerPool, pool, body)
        env = {
            **os.environ,
            "TASKCLUSTER_ROOT_URL": platform.queue.root_url,
            "TASKCLUSTER_CLIENT_ID": platform.queue.root_client_id,
            "TASKCLUSTER_ACCESS_TOKEN": platform.queue.root_access_token,
            "FLOTILLA_PROVISIONER_URL": prov.url,
            "FLOTILLA_ENV_FILE": "",
            "COLUMNS": "200",
        }
        listed = await asyncio.to_thread(flotilla, env, "pools", "--json")
        assert listed.returncode == 0, listed.stderr
        pools = {p["workerPoolId"]: p for p in json.loads(listed.stdout)["workerPools"]}
        assert pools[pool]["providerId"] == "docker"
        table = await asyncio.to_thread(flotilla, env, "pools")
        assert pool in table.stdout and "0-3" in table.stdout, table.stdout
    finally:
        stop_process(prov.process)
