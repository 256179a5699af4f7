"""The ingress in tests: a real nginx (Debian's, as `make up` runs it) rendered from
deploy/ingress/ in front of real service processes.

`launch_ingress({"queue": ["127.0.0.1:8180"], ...}, directory)` starts one on a free port
(or the one given) and returns it; the session fixture `ingress` puts a queue and a
provisioner behind one, both configured with the ingress as their root URL, so that every
URL they hand out (signed artifact URLs, workers' root URL) goes through it too.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared.config import Settings
from tests.conftest import (
    RunningService,
    _drop_database,
    _free_port,
    launch_queue,
    launch_service,
    stop_process,
)

REPO = Path(__file__).resolve().parent.parent
RENDER = REPO / "deploy" / "ingress" / "render.py"


@dataclass
class RunningIngress:
    root_url: str
    process: subprocess.Popen[bytes]
    config: Path
    log_path: Path

    def stop(self) -> None:
        stop_process(self.process)


def launch_ingress(
    upstreams: dict[str, list[str]], directory: Path, *, port: int | None = None
) -> RunningIngress:
    """Render the ingress config for `upstreams` (service name -> replica addresses) and
    start nginx on `port` (a free one if None); returns once it accepts connections."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is not installed (run: make system)")
    port = port or _free_port()
    directory = directory / f"ingress-{port}-{uuid.uuid4().hex[:6]}"
    directory.mkdir(parents=True)
    config = directory / "nginx.conf"
    args = [sys.executable, str(RENDER), "--listen", f"127.0.0.1:{port}"]
    for name, servers in upstreams.items():
        args += [arg for server in servers for arg in ("--upstream", f"{name}={server}")]
    args += ["--runtime-dir", str(directory), "--log-dir", str(directory), "-o", str(config)]
    subprocess.run(args, check=True)
    log_path = directory / "ingress.log"
    process = subprocess.Popen(
        [nginx, "-g", "daemon off;", "-p", str(directory), "-c", str(config), "-e", str(log_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            text = log_path.read_text() if log_path.exists() else ""
            pytest.fail(f"nginx exited with {process.returncode}:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                stop_process(process)
                pytest.fail(f"nginx did not listen on {port} within 15 s")
            time.sleep(0.05)
    return RunningIngress(f"http://127.0.0.1:{port}", process, config, log_path)


@dataclass
class IngressPlatform:
    """A queue and a provisioner behind one ingress; `root_url` is the only URL tests use."""

    root_url: str
    root_client_id: str
    root_access_token: str
    queue: RunningService  # its own (internal) URL: for fixtures only, never for tests
    provisioner_url: str
    ingress: RunningIngress
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """What `source .flotilla/env` gives a user's shell."""
        return {
            "TASKCLUSTER_ROOT_URL": self.root_url,
            "TASKCLUSTER_CLIENT_ID": self.root_client_id,
            "TASKCLUSTER_ACCESS_TOKEN": self.root_access_token,
        }


def _wait_ok(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer {url} within 30 s")
        time.sleep(0.1)


@pytest.fixture(scope="session", name="ingress")
def ingress_fixture(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IngressPlatform]:
    """The session's platform behind the ingress: a queue (claimWork long polls of 5 s)
    and a provisioner, both told that the root URL is the ingress."""
    directory = tmp_path_factory.mktemp("ingress")
    port = _free_port()
    root_url = f"http://127.0.0.1:{port}"
    database = f"test_ingress_{uuid.uuid4().hex[:10]}"
    token = secrets.token_urlsafe(33)[:44]
    common = {"FLOTILLA_ROOT_URL": root_url, "FLOTILLA_ROOT_ACCESS_TOKEN": token}
    queue, queue_process = launch_queue(
        directory,
        database=database,
        token=token,
        extra_env={**common, "FLOTILLA_CLAIM_WORK_WAIT": "5"},
    )
    processes = {"queue": queue_process}
    try:
        provisioner_port = _free_port()
        processes["provisioner"] = launch_service(
            "provisioner",
            directory,
            database=database,
            extra_env={
                **common,
                "FLOTILLA_PROVISIONER_PORT": str(provisioner_port),
                "FLOTILLA_PROVISIONER_WORK_ROOT": str(directory / "workers"),
            },
        )
        provisioner_url = f"http://127.0.0.1:{provisioner_port}"
        _wait_ok(
            f"{provisioner_url}/api/worker-manager/v1/ping", processes["provisioner"], "provisioner"
        )
        running = launch_ingress(
            {
                "queue": [queue.root_url.removeprefix("http://")],
                "worker-manager": [provisioner_url.removeprefix("http://")],
            },
            directory,
            port=port,
        )
        processes["ingress"] = running.process
        yield IngressPlatform(
            root_url, queue.root_client_id, token, queue, provisioner_url, running, processes
        )
    finally:
        for process in reversed(list(processes.values())):
            stop_process(process)
        _drop_database(settings.mongo_url, database)
