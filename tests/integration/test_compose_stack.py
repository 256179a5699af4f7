"""The whole compose deployment (deploy/compose.yaml), run for real on this Docker engine.

What a user deploying one container per service gets: `make images` (every service image
and the stand-ins for the two server images, deploy/compose.standin.yaml, since mongo:7
and rabbitmq:3-management cannot be pulled here), then `docker compose up`. The services
are read from the compose files, not listed here, so services added to compose.yaml are
brought up and waited for too; the stack is driven only at its root URL (the port the
compose file publishes as 8080: the queue today, the ingress once it fronts everything).

One test, in phases that build on each other (each phase's duration is printed):
  up         every container healthy
  basics     a container task (docker-worker), a graph of container tasks
             (examples/diamond.yaml via the CLI), its task-completed events reaching a
             subscriber, a client made with the Auth API
  scale      dependency-resolver scaled to 3 and two queue replicas behind the ingress;
             a 200-task graph (the test is its worker)
             completes, every task claimed and completed exactly once, after its
             dependencies; every service restarted mid-graph, nothing lost
  down/up    `down` (volumes kept) and `up` again: tasks, clients, artifacts still there
and `down -v` at the end, whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import pytest
import taskcluster
import yaml
from taskcluster.download import downloadArtifactToBuf

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "deploy" / "images" / "build.sh"
COMPOSE_FILES = [REPO / "deploy" / "compose.yaml", REPO / "deploy" / "compose.standin.yaml"]
OFFLINE_BASE = "flotilla/python-base:bookworm"
ROOT_PORT_IN_FILE = 8080  # the port plan: the root URL is what the file publishes on 8080
COLD_BUILD_S = 1800
HEALTHY_S = 300  # readiness bounds, not performance limits: the box is shared
GRAPH_LAYERS, GRAPH_WIDTH = 10, 20  # 200 tasks; each needs two of the layer before
RESOLVERS = 3
QUEUES = 2  # replicas behind the ingress
HEALTH_INTERVAL = "2s"

pytestmark = [pytest.mark.docker, pytest.mark.timeout(COLD_BUILD_S + 1800)]


def wait_for(probe: Callable[[], T], *, timeout_s: float, what: str, every_s: float = 0.5) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("neither `docker compose` nor docker-compose is installed (run: make system)")
    return [binary]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def host_address(client: docker.DockerClient) -> str:
    """An address of this host that containers reach too (the default bridge's gateway)."""
    bridge = client.networks.get("bridge").attrs
    for config in bridge["IPAM"]["Config"]:
        if config.get("Gateway"):
            return str(config["Gateway"].split("/")[0])
    found = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True, check=True
    )
    return found.stdout.split()[3].split("/")[0]


def published_port(entry: Any) -> int | None:
    if isinstance(entry, dict):
        return int(entry["published"]) if entry.get("published") else None
    parts = str(entry).split("/")[0].split(":")
    return int(parts[-2]) if len(parts) >= 2 and parts[-2] else None


def stack_config(config: dict[str, Any], root_port: int) -> tuple[dict[str, Any], str]:
    """The resolved configuration as this test runs it, and the root URL's service: only
    the root port is published (the host's own RabbitMQ or a developer's stack may hold
    15672, 60023...), and healthchecks probe every HEALTH_INTERVAL (the files' 10-15 s,
    met once per dependency level, would be most of the test's time); nothing else
    changes."""
    root_service = None
    for name, service in config["services"].items():
        if "healthcheck" in service:
            service["healthcheck"]["interval"] = HEALTH_INTERVAL
        kept = [p for p in service.get("ports", []) if published_port(p) == root_port]
        if kept:
            root_service = name
            service["ports"] = kept
        else:
            service.pop("ports", None)
    if root_service is None:
        pytest.fail(f"no service of {COMPOSE_FILES[0].name} publishes {ROOT_PORT_IN_FILE}")
    return config, root_service


@dataclass
class Stack:
    project: str
    file: Path
    config: dict[str, Any]
    root_service: str
    root_url: str
    token: str
    client: docker.DockerClient
    timings: dict[str, float] = field(default_factory=dict)

    def compose(self, *args: str, timeout_s: float = 600) -> str:
        result = subprocess.run(
            [*compose_command(), "-p", self.project, "-f", str(self.file), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def containers(self, service: str | None = None) -> list[Any]:
        labels = [f"com.docker.compose.project={self.project}"]
        if service is not None:
            labels.append(f"com.docker.compose.service={service}")
        return self.client.containers.list(all=True, filters={"label": labels})

    def wait_healthy(self, replicas: dict[str, int] | None = None) -> None:
        """Every service has its replicas running, and each container with a healthcheck
        reports healthy."""
        wanted = {
            name: (replicas or {}).get(name, service.get("deploy", {}).get("replicas", 1))
            for name, service in self.config["services"].items()
        }

        lagging: list[str] = []

        def healthy() -> bool:
            lagging.clear()
            for name, count in wanted.items():
                states = [c.attrs["State"] for c in self.containers(name)]
                running = sum(s["Running"] for s in states)
                if running != count:
                    lagging.append(f"{name}: {running} of {count} running")
                for state in states:
                    health = state.get("Health", {})
                    if health.get("Status", "healthy") != "healthy":
                        last = (health.get("Log") or [{}])[-1]
                        output = str(last.get("Output", "")).strip()[-300:]
                        lagging.append(f"{name}: {health.get('Status')} ({output!r})")
            return not lagging

        try:
            wait_for(healthy, timeout_s=HEALTHY_S, what=f"{wanted} healthy", every_s=1)
        except pytest.fail.Exception:
            pytest.fail(f"not healthy after {HEALTHY_S}s: {'; '.join(lagging)}")

    def options(self) -> dict[str, Any]:
        return {
            "rootUrl": self.root_url,
            "credentials": {"clientId": "static/flotilla/root", "accessToken": self.token},
            "maxRetries": 8,
        }

    def amqp_url(self) -> str:
        (rabbitmq,) = self.containers("rabbitmq")
        networks = rabbitmq.attrs["NetworkSettings"]["Networks"]
        address = next(n["IPAddress"] for n in networks.values() if n.get("IPAddress"))
        return f"amqp://flotilla:flotilla@{address}:5672/"

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", timeout_s=120)

    def timed(self, phase: str, started: float) -> None:
        self.timings[phase] = round(time.monotonic() - started, 1)
        print(f"compose stack: {phase} took {self.timings[phase]} s", flush=True)


def build_images(tag: str) -> None:
    """Every image and the stand-ins, through the script behind `make images`, under a tag
    of this run's own (other checkouts on this engine build `latest` too)."""
    env = {
        **os.environ,
        "BASE_IMAGE": os.environ.get("BASE_IMAGE", OFFLINE_BASE),
        "FLOTILLA_IMAGE_TAG": tag,
    }
    result = subprocess.run(
        [str(BUILD)], env=env, cwd=REPO, capture_output=True, text=True, timeout=COLD_BUILD_S
    )
    if result.returncode != 0:
        log = REPO / ".flotilla" / "logs" / "images-build.log"
        tail = log.read_text()[-3000:] if log.exists() else ""
        pytest.fail(f"build.sh failed:\n{result.stdout}\n{result.stderr}\n{tail}")


@pytest.fixture(scope="module")
def stack(
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    started, tag = time.monotonic(), f"test-{uuid.uuid4().hex[:8]}"
    build_images(tag)
    build_s = round(time.monotonic() - started, 1)
    directory = tmp_path_factory.mktemp("compose")
    port, host, token = free_port(), host_address(docker_client), secrets.token_urlsafe(32)
    variables = {
        "FLOTILLA_ROOT_URL": f"http://{host}:{port}",
        "FLOTILLA_ROOT_ACCESS_TOKEN": token,
        "FLOTILLA_SECRET_KEY": secrets.token_urlsafe(32),
        "FLOTILLA_PUBLIC_HOSTNAME": host,
        "FLOTILLA_IMAGE_TAG": tag,
        # whichever service publishes the root port (queue today, the ingress later)
        "FLOTILLA_QUEUE_PUBLISH": str(port),
        "FLOTILLA_INGRESS_PUBLISH": str(port),
        # a claim lost in a restart is retried within a minute, not twenty
        "FLOTILLA_CLAIM_TIMEOUT": "60",
    }
    env_file = directory / "compose.env"  # never the user's deploy/.env
    env_file.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
    files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLOTILLA_")}
    resolved = subprocess.run(
        [*compose_command(), "--env-file", str(env_file), *files, "config"],
        env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert resolved.returncode == 0, resolved.stderr
    config, root_service = stack_config(yaml.safe_load(resolved.stdout), port)
    for service in config["services"].values():
        try:
            docker_client.images.get(service["image"])
        except docker.errors.ImageNotFound:
            pytest.fail(f"{service['image']} is neither built by `make images` nor present")
    file = directory / "compose.yaml"
    file.write_text(yaml.safe_dump(config))
    stack = Stack(
        project=f"flotilla-test-{uuid.uuid4().hex[:8]}",
        file=file,
        config=config,
        root_service=root_service,
        root_url=variables["FLOTILLA_ROOT_URL"],
        token=token,
        client=docker_client,
    )
    stack.timings["images"] = build_s
    failed_before = request.session.testsfailed
    try:
        yield stack
    finally:
        try:
            if request.session.testsfailed > failed_before:
                print(stack.logs())
        finally:
            stack.compose("down", "-v", "--remove-orphans", "-t", "20")
            for image in docker_client.images.list(filters={"reference": f"*/*:{tag}"}):
                for name in image.tags:
                    if name.endswith(f":{tag}"):
                        docker_client.images.remove(name, noprune=True)


def container_task(queue_id: str, command: str) -> dict[str, Any]:
    return {
        "taskQueueId": queue_id,
        "created": taskcluster.fromNowJSON("0 seconds"),
        "deadline": taskcluster.fromNowJSON("1 hour"),
        "payload": {
            "image": "flotilla/busybox:latest",
            "command": ["sh", "-c", command],
            "maxRunTime": 120,
        },
        "metadata": {
            "name": "compose test",
            "description": "",
            "owner": "tests@example.com",
            "source": "https://example.com/flotilla",
        },
    }


def wait_resolved(queue: taskcluster.Queue, task_ids: list[str], timeout_s: float) -> list[str]:
    def states() -> list[str] | None:
        found = [queue.status(t)["status"]["state"] for t in task_ids]
        return found if all(s in ("completed", "failed", "exception") for s in found) else None

    return wait_for(states, timeout_s=timeout_s, what=f"{len(task_ids)} tasks resolved")


def cli(stack: Stack, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TASKCLUSTER_ROOT_URL": stack.root_url,
        "TASKCLUSTER_CLIENT_ID": "static/flotilla/root",
        "TASKCLUSTER_ACCESS_TOKEN": stack.token,
        "FLOTILLA_AMQP_URL": stack.amqp_url(),
        "FLOTILLA_ENV_FILE": "",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def layered_graph() -> tuple[list[list[str]], dict[str, list[str]]]:
    """GRAPH_LAYERS layers of GRAPH_WIDTH tasks; each task needs two of the layer above."""
    layers = [[taskcluster.slugId() for _ in range(GRAPH_WIDTH)] for _ in range(GRAPH_LAYERS)]
    needs: dict[str, list[str]] = {}
    for depth, layer in enumerate(layers):
        for index, task_id in enumerate(layer):
            above = layers[depth - 1] if depth else []
            needs[task_id] = [above[index], above[(index + 1) % GRAPH_WIDTH]] if above else []
    return layers, needs


def test_the_compose_stack_runs_scales_restarts_and_keeps_its_data(stack: Stack) -> None:
    started = time.monotonic()
    stack.compose("up", "-d")
    stack.wait_healthy()
    stack.timed("up", started)

    # --- basics: a container task, a graph of them, events, a client ---------------------
    started = time.monotonic()
    queue = taskcluster.Queue(stack.options())
    auth = taskcluster.Auth(stack.options())
    client_id = f"compose/{uuid.uuid4().hex[:8]}"
    auth.createClient(
        client_id,
        {"expires": taskcluster.fromNowJSON("1 day"), "description": "kept", "scopes": []},
    )
    task_id = taskcluster.slugId()
    queue.createTask(task_id, container_task("flotilla/local", "echo hello from compose"))
    assert wait_resolved(queue, [task_id], 180) == ["completed"]
    log, _ = downloadArtifactToBuf(
        taskId=task_id, name="public/logs/live_backing.log", queueService=queue
    )
    assert b"hello from compose" in bytes(log)

    group = taskcluster.slugId()
    listener = cli(
        stack, "listen", "task-completed", "--task-group", group, "--count", "4", "--json"
    )
    assert listener.stderr is not None and listener.stderr.readline().startswith("listening on ")
    submit = cli(stack, "graph", "submit", str(REPO / "examples" / "diamond.yaml"),
                 "--task-group-id", group, "--json")  # fmt: skip
    out, err = submit.communicate(timeout=120)
    assert submit.returncode == 0, err
    diamond = json.loads(out)["tasks"]
    assert wait_resolved(queue, list(diamond.values()), 300) == ["completed"] * 4
    out, err = listener.communicate(timeout=60)
    assert listener.returncode == 0, err
    delivered = {json.loads(line)["body"]["status"]["taskId"] for line in out.splitlines()}
    assert delivered == set(diamond.values())
    stack.timed("basics", started)

    # --- scale out the resolvers; a 200-task graph; restart everything mid-graph --------
    started = time.monotonic()
    scaled = {"dependency-resolver": RESOLVERS, "queue": QUEUES}
    scale_args = [arg for name, n in scaled.items() for arg in ("--scale", f"{name}={n}")]
    stack.compose("up", "-d", "--no-recreate", *scale_args)
    stack.wait_healthy(scaled)
    # (the ingress looks the queue's name up again every few seconds: both replicas serve)
    queue_id = f"compose-{uuid.uuid4().hex[:6]}/graph"
    graph_group = taskcluster.slugId()
    layers, needs = layered_graph()
    with ThreadPoolExecutor(8) as pool:
        for layer in layers:
            definitions = [
                (
                    t,
                    {
                        **container_task(queue_id, "true"),
                        "taskGroupId": graph_group,
                        "dependencies": needs[t],
                        "payload": {},
                    },
                )  # fmt: skip
                for t in layer
            ]
            list(pool.map(lambda item: queue.createTask(*item), definitions))
    claims: dict[str, int] = {}
    completed: list[str] = []
    restarted = False
    while len(completed) < len(needs):
        if not restarted and len(completed) >= len(needs) // 2:
            restart_started = time.monotonic()
            stack.compose("restart", "-t", "20")
            stack.wait_healthy(scaled)
            stack.timed("restart (all services)", restart_started)
            restarted = True
        work = queue.claimWork(queue_id, {"workerGroup": "compose", "workerId": "t", "tasks": 20})
        for claim in work["tasks"]:
            claimed = claim["status"]["taskId"]
            claims[claimed] = claims.get(claimed, 0) + 1
            assert set(needs[claimed]) <= set(completed), "claimed before its dependencies"
            worker = taskcluster.Queue({**stack.options(), "credentials": claim["credentials"]})
            worker.reportCompleted(claimed, str(claim["runId"]))
            completed.append(claimed)
    assert claims == {t: 1 for t in needs}  # each claimed exactly once
    statuses = [queue.status(t)["status"] for t in needs]
    assert all(s["state"] == "completed" and len(s["runs"]) == 1 for s in statuses)
    stack.timed(f"{len(needs)}-task graph with {RESOLVERS} resolvers and a restart", started)

    # --- down, then up again with the volumes kept --------------------------------------
    started = time.monotonic()
    stack.compose("down", "-t", "20")
    assert stack.containers() == []
    stack.compose("up", "-d")
    stack.wait_healthy()
    queue = taskcluster.Queue(stack.options())
    assert queue.status(task_id)["status"]["state"] == "completed"
    assert taskcluster.Auth(stack.options()).client(client_id)["description"] == "kept"
    log, _ = downloadArtifactToBuf(
        taskId=task_id, name="public/logs/live_backing.log", queueService=queue
    )
    assert b"hello from compose" in bytes(log)
    listed = queue.listTaskGroup(graph_group, query={"limit": 1000})["tasks"]
    assert len(listed) == len(needs)
    assert {t["status"]["state"] for t in listed} == {"completed"}
    stack.timed("down, up (volumes kept), data checked", started)
    print(f"compose stack timings (s): {json.dumps(stack.timings)}", flush=True)


def test_the_standin_file_swaps_only_the_server_images(tmp_path: Path) -> None:
    """compose.yaml keeps the official images for real hosts; the override changes nothing
    but the images (and their commands and healthchecks) of the servers it names."""
    env_file = tmp_path / "compose.env"
    env_file.write_text("FLOTILLA_ROOT_URL=http://h:8080\nFLOTILLA_ROOT_ACCESS_TOKEN=t\n"
                        "FLOTILLA_SECRET_KEY=k\n")  # fmt: skip

    def resolved(*files: Path) -> dict[str, Any]:
        arguments = [arg for path in files for arg in ("-f", str(path))]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("FLOTILLA_")}
        result = subprocess.run(
            [*compose_command(), "--env-file", str(env_file), *arguments, "config"],
            env=environ, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        services = dict(yaml.safe_load(result.stdout)["services"])
        for service in services.values():  # merging may reorder a list of mounts
            service["volumes"] = sorted(map(str, service.get("volumes", [])))
        return services

    real, standin = resolved(COMPOSE_FILES[0]), resolved(*COMPOSE_FILES)
    swapped = set(yaml.safe_load(COMPOSE_FILES[1].read_text())["services"])
    assert {"mongo", "rabbitmq"} <= swapped
    assert real["mongo"]["image"] == "mongo:7"
    assert real["rabbitmq"]["image"] == "rabbitmq:3-management"
    assert set(real) == set(standin)
    for name in set(real) - swapped:
        assert real[name] == standin[name]
    for name in swapped:
        assert not real[name]["image"].startswith("flotilla/")  # official ones on real hosts
        assert standin[name]["image"] == f"flotilla/{name}-standin:latest"
        assert standin[name]["volumes"] == real[name]["volumes"]
