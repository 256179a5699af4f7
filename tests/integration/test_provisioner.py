"""The provisioner as a real process (`python -m services.provisioner`) against the real
queue, RabbitMQ, FerretDB and Docker engine; docker workers are real containers of the
docker-worker image (built from this checkout by `deploy/images/build.sh`, as `make
images` does) or real processes; the aws provider talks HTTP to moto's standalone server.
Driven through `taskcluster.WorkerManager`.

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
from datetime import UTC, datetime, timedelta
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
    launch_queue,
    launch_service,
    poll_until,
    stop_process,
)
from tests.integration.queue_support import new_task_queue_id, task_definition
from tests.integration.test_cli import flotilla

IMAGE = "flotilla/busybox:latest"
WORKER_LABEL = "org.flotilla.docker-worker"
POOL_LABEL = "org.flotilla.worker-pool"  # on worker containers
REPO = Path(__file__).resolve().parents[2]
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

    def passes(self) -> list[dict[str, Any]]:
        """The summary line of each pass of its loop logged so far (complete lines only)."""
        text = self.log_path.read_text(errors="replace")
        lines = text[: text.rfind("\n") + 1].splitlines()
        return [
            entry
            for entry in (json.loads(line) for line in lines if '"provisioner pass"' in line)
            if entry["message"] == "provisioner pass"
        ]

    async def fresh_passes(self, count: int) -> list[dict[str, Any]]:
        """The next `count` passes that start after this call (one in progress now is
        skipped): after them, the loop has looked at whatever is true now."""
        logged = len(self.passes())

        def after() -> list[dict[str, Any]] | None:
            found = self.passes()[logged + 1 :]
            return found[:count] if len(found) >= count else None

        return await poll_until(
            lambda: asyncio.to_thread(after), timeout_s=15, interval_s=0.1, what="passes"
        )


def start_provisioner(
    platform: Platform,
    directory: Path,
    database: str,
    moto_url: str,
    extra_env: dict[str, str] | None = None,
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
            "FLOTILLA_PROVISIONER_WORKER_GRACE": "5",
            **(extra_env or {}),
        },
        ready_event=None,  # an HTTP service: its ping below says when it is ready
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


@pytest.fixture(scope="module")
def worker_image(docker_client: docker.DockerClient) -> str:
    """flotilla/docker-worker:latest built from this checkout (warm: seconds), so the
    container form runs the code under test; offline base as in test_images."""
    result = subprocess.run(
        [str(REPO / "deploy" / "images" / "build.sh"), "docker-worker"],
        env={**os.environ, "BASE_IMAGE": "flotilla/python-base:bookworm"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, f"build.sh docker-worker failed:\n{result.stderr}"
    return "flotilla/docker-worker:latest"


def worker_containers(client: docker.DockerClient, pool: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"{POOL_LABEL}={pool}"})


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


async def test_spike_launches_max_worker_containers_that_drain_and_stop_when_idle_min_kept(
    platform: Platform,
    queue: taskcluster.aio.Queue,
    tmp_path: Path,
    prov_db: str,
    moto_server: str,
    worker_image: str,
    docker_client: docker.DockerClient,
    workers_coll: Any,
) -> None:
    prov = start_provisioner(platform, tmp_path, prov_db, moto_server)
    manager = prov.manager(platform)
    pool = new_task_queue_id()
    try:
        created = manager.createWorkerPool(
            pool,
            pool_body(
                "docker",
                minCapacity=1,
                maxCapacity=4,
                workerConfig={"afterIdleSeconds": 3},
                launch="container",
            ),
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
        # each worker is a container of the image, on the host network
        docs = await workers_coll["provisioned_workers"].find({"workerPoolId": pool}).to_list(None)
        assert {d["providerData"]["form"] for d in docs} == {"container"}
        for container in worker_containers(docker_client, pool):
            assert container.image.tags == [worker_image]
            assert container.attrs["HostConfig"]["NetworkMode"] == "host"

        # idle: the spike's workers stop themselves; the pool keeps its one worker
        spike_ids = {w["workerId"] for w in spike}

        async def idled_out() -> bool:
            found = await workers(manager, pool)
            stopped = {w["workerId"] for w in found if w["state"] == "stopped"}
            return spike_ids <= stopped and len(live(found)) == 1

        await poll_until(idled_out, timeout_s=45, interval_s=0.5, what="idle shutdown")
        # reaped: an exited worker's container is removed, its log kept in its directory
        await poll_until(
            lambda: asyncio.to_thread(lambda: len(worker_containers(docker_client, pool)) == 1),
            timeout_s=10,
            what="exited containers removed",
        )
        gone = next(iter(spike_ids))
        assert (tmp_path / "workers" / gone / "worker.log").stat().st_size > 0
    finally:
        stop_process(prov.process)
        for container in worker_containers(docker_client, pool):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)


async def _count(manager: taskcluster.WorkerManager, pool: str, n: int) -> bool:
    return len(live(await workers(manager, pool))) == n


@pytest.mark.parametrize("form", ["process", "container"])
async def test_a_killed_worker_s_task_is_retried_within_seconds(
    form: str,
    platform: Platform,
    queue: taskcluster.aio.Queue,
    tmp_path: Path,
    prov_db: str,
    workers_coll: Any,
    moto_server: str,
    docker_client: docker.DockerClient,
    worker_image: str,
) -> None:
    prov = start_provisioner(platform, tmp_path, prov_db, moto_server)
    manager = prov.manager(platform)
    pool = new_task_queue_id()
    killed: dict[str, Any] = {}
    try:
        manager.createWorkerPool(
            pool,
            pool_body("docker", maxCapacity=1, workerConfig={"afterIdleSeconds": 60}, launch=form),
        )
        task_id = await submit(queue, pool, ["sleep", "25"])

        async def running() -> dict[str, Any] | None:
            runs = (await queue.status(task_id))["status"]["runs"]
            return runs[0] if runs and runs[0]["state"] == "running" else None

        run = await poll_until(running, timeout_s=30, interval_s=0.2, what="task running")
        killed = await workers_coll["provisioned_workers"].find_one({"workerId": run["workerId"]})
        assert killed["providerData"]["form"] == form
        if form == "process":
            os.kill(killed["providerData"]["pid"], signal.SIGKILL)
        else:
            docker_client.api.kill(killed["providerData"]["containerId"], signal="SIGKILL")

        async def retried() -> list[dict[str, Any]] | None:
            runs = (await queue.status(task_id))["status"]["runs"]
            return runs if len(runs) == 2 else None

        runs = await poll_until(retried, timeout_s=30, interval_s=0.1, what="the retry")
        # worker-shutdown, not claim-expired: the provisioner resolved it, not the claim's
        # expiry (how soon is bench/bench_provisioner's measure, not this test's)
        assert (runs[0]["state"], runs[0]["reasonResolved"]) == ("exception", "worker-shutdown")
        assert runs[1]["reasonCreated"] == "retry"
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
        for container in worker_containers(docker_client, pool):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
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
        # two more passes of each replica: the active one ticks and launches nothing more,
        # the other stays on standby
        later = [await prov.fresh_passes(2) for prov in (one, two)]
        assert sorted([p["leader"] for p in found] for found in later) == [
            [False, False],
            [True, True],
        ]
        ticks = next(found for found in later if found[0]["leader"])
        assert [(p["pools"], p["launched"]) for p in ticks] == [(1, 0), (1, 0)]
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


# --- static provider -----------------------------------------------------------------------


async def test_static_workers_register_with_their_secret_and_are_never_provisioned(
    platform: Platform, queue: taskcluster.aio.Queue, tmp_path: Path, prov_db: str, moto_server: str
) -> None:
    prov = start_provisioner(platform, tmp_path, prov_db, moto_server)
    manager = prov.manager(platform)
    pool = new_task_queue_id()
    secret = taskcluster.slugId() + taskcluster.slugId()
    try:
        manager.createWorkerPool(pool, pool_body("static", workerConfig={"capacity": 2}))
        expires = taskcluster.stringDate(taskcluster.fromNow("1 day"))
        info = {"providerInfo": {"staticSecret": secret}, "expires": expires}
        created = manager.createWorker(pool, "rack-1", "box-1", info)
        assert (created["state"], created["providerId"]) == ("running", "static")
        assert manager.createWorker(pool, "rack-1", "box-1", info)["workerId"] == "box-1"  # same
        other = {**info, "providerInfo": {"staticSecret": secret[::-1]}}
        with pytest.raises(TaskclusterRestFailure) as conflict:
            manager.createWorker(pool, "rack-1", "box-1", other)
        assert conflict.value.status_code == 409
        # workerPool reads the pool back; updateWorker changes what it may change
        read = manager.workerPool(pool)
        assert (read["workerPoolId"], read["providerId"]) == (pool, "static")
        assert read["config"]["workerConfig"] == {"capacity": 2}
        later = taskcluster.stringDate(taskcluster.fromNow("2 days"))
        updated = manager.updateWorker(pool, "rack-1", "box-1", {**info, "expires": later})
        assert updated["expires"][:16] == later[:16]
        assert manager.worker(pool, "rack-1", "box-1")["expires"] == updated["expires"]

        body = {
            "workerPoolId": pool,
            "providerId": "static",
            "workerGroup": "rack-1",
            "workerId": "box-1",
            "workerIdentityProof": {"staticSecret": "x" + secret[1:]},
        }
        before = manager.worker(pool, "rack-1", "box-1")
        with pytest.raises(TaskclusterRestFailure) as wrong:
            manager.registerWorker(body)
        assert wrong.value.status_code == 400
        assert wrong.value.body["code"] == "InputError"
        assert "requestInfo" in wrong.value.body
        assert manager.worker(pool, "rack-1", "box-1") == before  # nothing changed

        body["workerIdentityProof"] = {"staticSecret": secret}
        answer = manager.registerWorker(body)
        assert answer["workerConfig"] == {"capacity": 2}
        creds = answer["credentials"]
        assert creds["clientId"] == f"worker/static/{pool}/rack-1/box-1"
        scopes = json.loads(creds["certificate"])["scopes"]
        assert f"queue:claim-work:{pool}" in scopes
        assert "worker-manager:reregister-worker:" + f"{pool}/rack-1/box-1" in scopes
        assert manager.registerWorker(body)["credentials"]  # again, e.g. after a reboot

        # the credentials work at the queue: the static worker takes a task of its pool
        task_id = await submit(queue, pool, ["true"])
        worker_queue = taskcluster.Queue({**platform.queue.client_options(), "credentials": creds})
        counts = {"workerGroup": "rack-1", "workerId": "box-1", "tasks": 1}
        claimed = await asyncio.to_thread(worker_queue.claimWork, pool, counts)
        assert [c["status"]["taskId"] for c in claimed["tasks"]] == [task_id]
        # pending work never makes the provisioner launch anything for a static pool
        await submit(queue, pool, ["true"])
        ticks = await prov.fresh_passes(2)  # the first woken by task-pending, or the interval
        assert [(p["leader"], p["pools"], p["launched"]) for p in ticks] == [(True, 1, 0)] * 2
        listed = await workers(manager, pool)
        assert [(w["workerId"], w["state"]) for w in listed] == [("box-1", "running")]

        manager.removeWorker(pool, "rack-1", "box-1")
        assert manager.worker(pool, "rack-1", "box-1")["state"] == "stopped"
        with pytest.raises(TaskclusterRestFailure) as removed:
            manager.registerWorker(body)
        assert removed.value.status_code == 400
        # deleteWorkerPool: no provider launches anything for it any more (the pool
        # itself goes once its workers have)
        manager.deleteWorkerPool(pool)
        assert manager.workerPool(pool)["providerId"] == "null-provider"
        # createWorker is for static pools only
        docker_pool = new_task_queue_id()
        manager.createWorkerPool(docker_pool, pool_body("docker", maxCapacity=0))
        with pytest.raises(TaskclusterRestFailure) as refused:
            manager.createWorker(docker_pool, "g", "w", info)
        assert refused.value.status_code == 400
    finally:
        stop_process(prov.process)


# --- queueInactivityTimeout --------------------------------------------------------------


async def test_a_worker_silent_at_the_queue_past_queue_inactivity_timeout_is_terminated(
    platform: Platform, tmp_path: Path, prov_db: str, workers_coll: Any, moto_server: str
) -> None:
    # A queue replica (same database) that stamps lastDateActive every second and ends
    # claimWork long polls after 2 s; the provisioner and its workers use it, so a
    # healthy idle worker looks active within seconds (slack 1 + 2 s).
    fast = {"FLOTILLA_WORKER_ACTIVITY_RESOLUTION": "1", "FLOTILLA_CLAIM_WORK_WAIT": "2"}
    (tmp_path / "queue").mkdir()
    replica, replica_process = launch_queue(
        tmp_path / "queue",
        database=platform.queue.mongo_db,
        token=platform.queue.root_access_token,
        extra_env=fast,
    )
    prov = start_provisioner(
        platform,
        tmp_path,
        prov_db,
        moto_server,
        extra_env={
            **fast,
            "FLOTILLA_ROOT_URL": replica.root_url,
            "FLOTILLA_PROVISIONER_WORKER_GRACE": "1",
        },
    )
    manager = prov.manager(platform)
    pool = new_task_queue_id()
    provisioner_id, worker_type = pool.split("/")
    replica_queue = taskcluster.Queue(replica.client_options())
    frozen: list[int] = []
    try:
        lifecycle = {"queueInactivityTimeout": 2}
        manager.createWorkerPool(
            pool,
            pool_body(
                "docker",
                minCapacity=1,
                maxCapacity=1,
                lifecycle=lifecycle,
                workerConfig={"afterIdleSeconds": 120},
                launch="process",
            ),
        )

        def seen_at_queue() -> list[Any]:
            return replica_queue.listWorkers(provisioner_id, worker_type)["workers"]

        (first,) = await poll_until(
            lambda: asyncio.to_thread(seen_at_queue), timeout_s=20, what="worker at the queue"
        )
        # registered by now; silent since, it would be inactive after timeout + slack (1 + 2)
        silent_too_long = datetime.now(UTC) + timedelta(seconds=2 + 3 + 1)

        def judged_late() -> bool:  # a pass that began then judged the worker's activity
            return any(
                p.get("activityChecked")
                and datetime.fromisoformat(p["time"]) - timedelta(milliseconds=p["durationMs"])
                > silent_too_long
                for p in prov.passes()
            )

        await poll_until(
            lambda: asyncio.to_thread(judged_late), timeout_s=20, what="an activity check"
        )
        # healthy and idle, it kept polling: still running
        assert manager.worker(pool, first["workerGroup"], first["workerId"])["state"] == "running"

        # hung: it stops calling the queue, and is terminated and replaced
        doc = await workers_coll["provisioned_workers"].find_one({"workerId": first["workerId"]})
        pid = doc["providerData"]["pid"]
        os.kill(pid, signal.SIGSTOP)
        frozen.append(pid)
        t0 = time.monotonic()

        async def stopped() -> dict[str, Any] | None:
            found = await workers_coll["provisioned_workers"].find_one({"_id": doc["_id"]})
            return found if found["state"] == "stopped" else None

        found = await poll_until(stopped, timeout_s=20, interval_s=0.2, what="inactive worker gone")
        print(f"hung worker terminated {time.monotonic() - t0:.1f}s after it froze")
        assert "queueInactivityTimeout 2s" in found["stopReason"]

        def dead() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            with open(f"/proc/{pid}/stat") as stat:  # a reaped-later child shows as Z
                return stat.read().split(") ")[1].startswith("Z")

        await poll_until(lambda: asyncio.to_thread(dead), timeout_s=10, what="SIGKILL after grace")
        await poll_until(
            lambda: _count(manager, pool, 1), timeout_s=15, interval_s=0.2, what="a replacement"
        )
    finally:
        stop_process(prov.process)
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop_process(replica_process)
