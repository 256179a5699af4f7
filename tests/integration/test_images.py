"""The service images (deploy/images) build offline and run; deploy/compose.yaml is valid.

The queue image is built through `deploy/images/build.sh`, the script behind `make images`,
on the base it makes itself (flotilla/python-base:bookworm: debootstrap + Debian's
python3, `docker import`ed), since no registry is reachable. Cold, that takes a few
minutes (rootfs and wheels are then cached under .flotilla/images/); warm, seconds.
Containers run with the host's network so they reach the local FerretDB and RabbitMQ.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import docker
import docker.errors
import pymongo
import pytest
import yaml
from docker.models.containers import Container

from shared.config import Settings

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "deploy" / "images" / "build.sh"
COMPOSE_FILE = REPO / "deploy" / "compose.yaml"
OFFLINE_BASE = "flotilla/python-base:bookworm"
COLD_BUILD_S = 1800

pytestmark = [pytest.mark.docker, pytest.mark.timeout(COLD_BUILD_S + 120)]


def _wait_until(probe: Callable[[], T], *, timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def _build(*services: str) -> None:
    """Build through the same script as `make images`, forcing the offline base."""
    env = {**os.environ, "BASE_IMAGE": OFFLINE_BASE}
    result = subprocess.run(
        [str(BUILD), *services],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=COLD_BUILD_S,
        check=False,
    )
    if result.returncode != 0:
        log = REPO / ".flotilla" / "logs" / "images-build.log"
        tail = log.read_text()[-3000:] if log.exists() else ""
        pytest.fail(f"build.sh {' '.join(services)} failed:\n{result.stderr}\n{tail}")


@pytest.fixture(scope="module")
def images(docker_client: docker.DockerClient) -> list[str]:
    services = ["queue", "dependency-resolver"]
    _build(*services)
    return [f"flotilla/{name}:latest" for name in services]


@pytest.fixture
def database(settings: Settings) -> Iterator[str]:
    name = f"test_image_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with pymongo.MongoClient(settings.mongo_url, serverSelectionTimeoutMS=5000) as client:
            client.drop_database(name)


@contextlib.contextmanager
def _run(
    docker_client: docker.DockerClient, image: str, env: dict[str, str]
) -> Iterator[Container]:
    container = docker_client.containers.run(
        image,
        detach=True,
        network_mode="host",
        environment=env,
        name=f"flotilla-test-{uuid.uuid4().hex[:8]}",
    )
    try:
        yield container
    finally:
        container.remove(force=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read()) if response.status == 200 else None
    except OSError:
        return None


def _health(container: Container) -> str:
    container.reload()
    return str(container.attrs["State"].get("Health", {}).get("Status"))


def _stop_and_check(container: Container) -> None:
    """SIGTERM (docker stop) ends the service quickly and cleanly, with JSON logs to the end."""
    started = time.monotonic()
    container.stop(timeout=20)
    elapsed = time.monotonic() - started
    container.reload()
    logs = container.logs().decode()
    assert container.attrs["State"]["ExitCode"] == 0, logs[-2000:]
    assert elapsed < 5, f"docker stop took {elapsed:.1f}s"
    lines = [line for line in logs.splitlines() if line.strip()]
    assert lines, "the service logged nothing"
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= entry.keys()


def test_queue_image_runs_offline_built_as_non_root(
    docker_client: docker.DockerClient, images: list[str], settings: Settings, database: str
) -> None:
    image = docker_client.images.get("flotilla/queue:latest")
    assert image.labels.get("org.flotilla.offline") == "true"  # FROM our own base
    assert image.attrs["Config"]["User"] == "flotilla"
    assert "flotilla-healthcheck" in image.attrs["Config"]["Healthcheck"]["Test"]

    port = _free_port()
    env = {
        "FLOTILLA_QUEUE_PORT": str(port),
        "FLOTILLA_ROOT_URL": f"http://127.0.0.1:{port}",
        "FLOTILLA_ROOT_ACCESS_TOKEN": secrets.token_urlsafe(32),
        "FLOTILLA_MONGO_URL": settings.mongo_url,
        "FLOTILLA_MONGO_DB": database,
        "FLOTILLA_AMQP_URL": settings.amqp_url,
    }
    with _run(docker_client, "flotilla/queue:latest", env) as container:
        url = f"http://127.0.0.1:{port}/api/queue/v1/ping"
        body = _wait_until(lambda: _ping(url), timeout_s=60, what=f"200 from {url}")
        assert body["alive"] is True

        uid = container.exec_run(["id", "-u"]).output.decode().strip()
        assert uid != "0"
        # The image's HEALTHCHECK probes the first time after its 10 s interval.
        _wait_until(lambda: _health(container) == "healthy", timeout_s=45, what="health: healthy")
        _stop_and_check(container)


def test_background_service_image_is_healthy_when_connected(
    docker_client: docker.DockerClient, images: list[str], settings: Settings, database: str
) -> None:
    env = {
        "FLOTILLA_MONGO_URL": settings.mongo_url,
        "FLOTILLA_MONGO_DB": database,
        "FLOTILLA_AMQP_URL": settings.amqp_url,
        "FLOTILLA_RESOLVER_QUEUE_EXPIRES": "30",
    }
    with _run(docker_client, "flotilla/dependency-resolver:latest", env) as container:
        check = ["flotilla-healthcheck", "connected", "mongo", "amqp"]
        _wait_until(
            lambda: container.exec_run(check).exit_code == 0,
            timeout_s=30,
            what="the resolver connected to MongoDB and RabbitMQ",
        )
        # Honest: a broker port the service is not connected to is reported unhealthy.
        wrong = container.exec_run(check, environment={"FLOTILLA_AMQP_URL": "amqp://h:1/"})
        assert wrong.exit_code == 1, wrong.output
        assert b"no open connection to amqp" in wrong.output
        assert container.exec_run(["id", "-u"]).output.decode().strip() != "0"
        _stop_and_check(container)


def _compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("neither `docker compose` nor docker-compose is installed (run: make system)")
    return [binary]


def _compose_config(tmp_path: Path, variables: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "compose.env"  # never the user's deploy/.env
    env_file.write_text("".join(f"{name}={value}\n" for name, value in variables.items()))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLOTILLA_")}
    return subprocess.run(
        [*_compose_command(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_is_valid_and_complete(tmp_path: Path) -> None:
    result = _compose_config(
        tmp_path,
        {
            "FLOTILLA_ROOT_URL": "http://docker-host.example:8080",
            "FLOTILLA_ROOT_ACCESS_TOKEN": "token",
            "FLOTILLA_SECRET_KEY": "key",
        },
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {
        "mongo",
        "rabbitmq",
        "queue",
        "dependency-resolver",
        "claim-expiry",
        "provisioner",
        "docker-worker",
        "ingress",
        "index",
        "purge-cache",
        "object",
        "web",
    }
    assert services["dependency-resolver"]["deploy"]["replicas"] == 2
    services_built = ("queue", "dependency-resolver", "claim-expiry", "provisioner")
    for name in (*services_built, "docker-worker", "index", "purge-cache", "object", "web"):
        service = services[name]
        assert service["image"] == f"flotilla/{name}:latest"
        assert "flotilla-healthcheck" in service["healthcheck"]["test"]
        conditions = {dep["condition"] for dep in service["depends_on"].values()}
        assert conditions == {"service_healthy"}
        assert all(key.startswith("FLOTILLA_") for key in service["environment"])
    assert services["queue"]["environment"]["FLOTILLA_MONGO_URL"] == "mongodb://mongo:27017/"
    worker_volumes = [str(v) for v in services["docker-worker"]["volumes"]]
    assert any("/var/run/docker.sock" in volume for volume in worker_volumes)
    assert set(config["volumes"]) >= {"mongo-data", "rabbitmq-data"}
    # One published API port: the ingress; the queue's own port stays internal.
    assert "ports" not in services["queue"]
    assert "8080" in str(services["ingress"]["ports"])
    assert "ingress/compose.nginx.conf" in str(services["ingress"]["volumes"])


def test_compose_file_requires_the_secrets(tmp_path: Path) -> None:
    result = _compose_config(tmp_path, {"FLOTILLA_ROOT_URL": "http://docker-host.example:8080"})
    assert result.returncode != 0
    assert "FLOTILLA_ROOT_ACCESS_TOKEN" in result.stderr or "FLOTILLA_SECRET_KEY" in result.stderr
