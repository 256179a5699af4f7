"""The `docker` provider's container form: a worker is a container of the docker-worker
image (`make images` builds `flotilla/docker-worker:latest` from this repository) on the
local engine, with the engine's socket mounted so it runs its tasks as sibling containers.

- Identity and credentials go in as `FLOTILLA_WORKER_*` variables (never in the command).
- Network mode `host`: the worker reaches the queue at the same root URL as the
  provisioner (127.0.0.1 locally) and serves live logs on an ephemeral host port.
- The worker's directory (config file, temp files) and the cache root are mounted at the
  *same path* as on the host: the worker bind-mounts caches into task containers by path,
  and the engine resolves those paths on the host.
- A daemon thread per container blocks in the engine's `wait`; when the container exits
  its log is saved to the worker's directory, the container is removed, and the exit is
  reported (the provider then marks the worker stopped and has its runs resolved).

`docker` SDK calls are blocking: the provider runs them in threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from services.provisioner.providers import ProviderError

log = logging.getLogger(__name__)

# Marks the containers that *are* workers (tasks' containers carry the worker's own label).
WORKER_LABEL = "org.flotilla.provisioned-worker"
POOL_LABEL = "org.flotilla.worker-pool"
GONE_STATUSES = ("exited", "dead")


def choose_form(requested: str | None, image_present: bool) -> str:
    """`container` or `process`: the pool's choice, else container when the image exists.
    Pure."""
    if requested is not None:
        return requested
    return "container" if image_present else "process"


def socket_path(docker_url: str) -> str | None:
    """The engine's unix socket path, or None for a TCP engine. Pure."""
    for prefix in ("unix://", "http+unix://"):
        if docker_url.startswith(prefix):
            return "/" + docker_url.removeprefix(prefix).lstrip("/")
    return None


def container_spec(
    *,
    image: str,
    pool_id: str,
    worker: dict[str, Any],
    environment: dict[str, str],
    directory: Path,
    cache_root: Path,
    docker_url: str,
) -> dict[str, Any]:
    """`containers.run` arguments for one worker. Pure."""
    socket = socket_path(docker_url)
    volumes = {
        str(directory): {"bind": str(directory), "mode": "rw"},
        str(cache_root): {"bind": str(cache_root), "mode": "rw"},
    }
    env = dict(environment)
    if socket is not None:
        volumes[socket] = {"bind": "/var/run/docker.sock", "mode": "rw"}
        env["FLOTILLA_WORKER_DOCKER_URL"] = "unix:///var/run/docker.sock"
    else:
        env["FLOTILLA_WORKER_DOCKER_URL"] = docker_url
    return {
        "image": image,
        "name": f"flotilla-worker-{worker['workerId']}",
        "environment": env,
        "labels": {WORKER_LABEL: worker["_id"], POOL_LABEL: pool_id},
        "network_mode": "host",
        "volumes": volumes,
        "detach": True,
    }


class Containers:
    """The few engine calls the container form needs, with library errors translated."""

    def __init__(self, docker_url: str) -> None:
        self.docker_url = docker_url
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.DockerClient(base_url=self.docker_url, timeout=60)
            except docker.errors.DockerException as exc:
                raise ProviderError(f"no Docker engine at {self.docker_url}: {exc}") from exc
        return self._client

    def image_present(self, image: str) -> bool:
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        except (docker.errors.DockerException, ProviderError, requests.exceptions.RequestException):
            return False  # no engine: the process form is the only option
        return True

    def run(self, spec: dict[str, Any]) -> str:
        try:
            container = self.client.containers.run(**spec)
        except docker.errors.ImageNotFound as exc:
            raise ProviderError(
                f"image {spec['image']} is not present (build it: make images)"
            ) from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ProviderError(f"starting a worker container failed: {exc}") from exc
        return str(container.id)

    def state(self, container_id: str) -> tuple[str, int] | None:
        """(status, exit code) of a container, or None if it does not exist."""
        try:
            attrs = self.client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        state = attrs["State"]
        return str(state["Status"]), int(state.get("ExitCode") or 0)

    def signal(self, container_id: str, signal: str) -> None:
        try:
            self.client.api.kill(container_id, signal=signal)
        except docker.errors.APIError:
            pass  # not running (any more): nothing to stop

    def reap(self, container_id: str, log_path: Path) -> None:
        """Keep the container's log beside the worker's files, then remove it."""
        try:
            output = self.client.api.logs(container_id, stdout=True, stderr=True)
            with log_path.open("ab") as log_file:
                log_file.write(output)
        except (docker.errors.APIError, OSError):
            log.warning("could not save a worker container's log", extra={"id": container_id})
        try:
            self.client.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass

    def wait_in_thread(self, container_id: str, done: Callable[[int], None]) -> None:
        """Call `done(exit code)` from a daemon thread once the container stops (a daemon
        thread, so an engine call that never returns cannot hold up shutdown)."""

        def body() -> None:
            while True:
                try:
                    answer = self.client.api.wait(container_id, timeout=3600)
                    done(int(answer.get("StatusCode", -1)))
                    return
                except docker.errors.NotFound:
                    done(-1)
                    return
                except Exception:  # a read timeout (still running) or an engine hiccup
                    try:
                        found = self.state(container_id)
                    except Exception:
                        found = ("unknown", -1)
                    if found is None or found[0] in GONE_STATUSES:
                        done(-1 if found is None else found[1])
                        return
                    time.sleep(1.0)

        threading.Thread(target=body, name=f"wait {container_id[:12]}", daemon=True).start()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
