"""The local Docker engine runs the offline-built busybox image."""

from __future__ import annotations

import uuid

import docker

IMAGE = "flotilla/busybox:latest"


def test_busybox_image_runs_and_output_is_captured(docker_client: docker.DockerClient) -> None:
    output = docker_client.containers.run(
        IMAGE,
        ["sh", "-c", "echo hello from $0; ls /bin/sleep /bin/cat; mkdir /tmp/x && echo ok"],
        remove=True,
    )
    lines = output.decode().splitlines()
    assert lines == ["hello from sh", "/bin/cat", "/bin/sleep", "ok"]


def test_exit_status_and_stderr_reach_the_caller(docker_client: docker.DockerClient) -> None:
    name = f"flotilla-test-{uuid.uuid4().hex[:8]}"
    container = docker_client.containers.run(
        IMAGE, ["sh", "-c", "echo oops >&2; exit 3"], name=name, detach=True
    )
    try:
        assert container.wait(timeout=30)["StatusCode"] == 3
        assert container.logs(stdout=False, stderr=True).decode() == "oops\n"
    finally:
        container.remove(force=True)
    assert name not in {c.name for c in docker_client.containers.list(all=True)}
