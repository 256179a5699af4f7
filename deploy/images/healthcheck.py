#!/usr/bin/env python3
"""flotilla-healthcheck MODE: the HEALTHCHECK of Flotilla's images. Exit 0 = healthy.

Each mode checks only what it says, with the service's own FLOTILLA_* settings:

- `http`: GET /api/queue/v1/ping on the queue's port (FLOTILLA_QUEUE_PORT) answers 200.
- `connected mongo [amqp]`: the service (PID 1) holds an established TCP connection to
  the port of FLOTILLA_MONGO_URL (and of FLOTILLA_AMQP_URL). Background services keep
  these connections open while they work and reconnect when they drop, so a service that
  lost its database or broker for longer than the healthcheck's retries turns unhealthy.
- `docker`: PID 1 is the docker-worker and the Docker engine behind its socket
  (FLOTILLA_WORKER_DOCKER_URL) answers /_ping.

Standard library only; it runs inside the image's virtualenv python.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_PORTS = {"mongodb": 27017, "mongodb+srv": 27017, "amqp": 5672, "amqps": 5671}
DEFAULT_URLS = {
    "mongo": ("FLOTILLA_MONGO_URL", "mongodb://127.0.0.1:27017/"),
    "amqp": ("FLOTILLA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
}
TIMEOUT_S = 4.0


def check_http() -> str | None:
    port = int(os.environ.get("FLOTILLA_QUEUE_PORT", "8180"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", "/api/queue/v1/ping")
        status = conn.getresponse().status
    except OSError as exc:
        return f"queue ping on port {port} failed: {exc}"
    finally:
        conn.close()
    return None if status == 200 else f"queue ping on port {port} answered {status}"


def url_ports(url: str) -> set[int]:
    parts = urlsplit(url)
    hosts = parts.netloc.rsplit("@", 1)[-1].split(",")
    default = DEFAULT_PORTS.get(parts.scheme, 0)
    ports = set()
    for host in hosts:
        _, sep, port = host.rpartition(":") if not host.endswith("]") else ("", "", "")
        ports.add(int(port) if sep and port.isdigit() else default)
    return ports


def pid1_socket_inodes() -> set[str]:
    inodes = set()
    for fd in Path("/proc/1/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def established_remote_ports(inodes: set[str]) -> set[int]:
    ports = set()
    for table in ("/proc/1/net/tcp", "/proc/1/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # fields: sl local_address rem_address st ... uid timeout inode
            if fields[3] == "01" and fields[9] in inodes:
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def check_connected(names: list[str]) -> str | None:
    try:
        remote = established_remote_ports(pid1_socket_inodes())
    except OSError as exc:
        return f"cannot inspect the service's sockets: {exc}"
    for name in names:
        variable, default = DEFAULT_URLS[name]
        wanted = url_ports(os.environ.get(variable) or default)
        if not wanted & remote:
            return f"no open connection to {name} (port {sorted(wanted)}, from {variable})"
    return None


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT_S)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT_S)
        self.sock.connect(self._path)


def check_docker() -> str | None:
    cmdline = Path("/proc/1/cmdline").read_bytes().replace(b"\0", b" ")
    if b"services.docker_worker" not in cmdline:
        return f"PID 1 is not the docker-worker: {cmdline.decode(errors='replace')}"
    url = os.environ.get("FLOTILLA_WORKER_DOCKER_URL", "unix:///var/run/docker.sock")
    parts = urlsplit(url)
    if parts.scheme in ("unix", "http+unix"):
        conn: http.client.HTTPConnection = _UnixHTTPConnection(parts.path)
    else:
        conn = http.client.HTTPConnection(parts.hostname or "localhost", parts.port or 2375)
    try:
        conn.request("GET", "/_ping")
        status = conn.getresponse().status
    except OSError as exc:
        return f"Docker engine at {url} unreachable: {exc}"
    finally:
        conn.close()
    return None if status == 200 else f"Docker engine at {url} answered {status}"


def main(argv: list[str]) -> int:
    mode, args = (argv[0], argv[1:]) if argv else ("", [])
    if mode == "http":
        problem = check_http()
    elif mode == "connected" and args and set(args) <= set(DEFAULT_URLS):
        problem = check_connected(args)
    elif mode == "docker":
        problem = check_docker()
    else:
        print("usage: flotilla-healthcheck http | connected mongo [amqp] | docker", file=sys.stderr)
        return 2
    if problem:
        print(f"unhealthy: {problem}")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
