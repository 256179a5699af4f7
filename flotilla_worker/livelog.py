"""Task logs: each run's log is appended to a file in its work directory, served live by
the worker's own aiohttp endpoint (`GET /log/<token>`, chunked, following the file until
the run ends) and gzip-compressed for `live_backing.log` at the end.

Line formats as upstream: `[taskcluster 2024-05-01 12:00:00.000Z] msg` for info lines,
`\\n[taskcluster:error] msg` for errors.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import secrets
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; charset=utf-8"
READ_CHUNK = 64 * 1024


def _stamp(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def info_line(message: str, now: datetime | None = None) -> bytes:
    return f"[taskcluster {_stamp(now)}] {message}\n".encode()


def error_line(message: str) -> bytes:
    return f"\n[taskcluster:error] {message}\n".encode()


class TaskLog:
    """One run's log file; writers append, any number of readers follow."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("wb")
        self._closed = False
        self._grown = asyncio.Event()

    def write(self, data: bytes) -> None:
        if self._closed or not data:
            return
        self._file.write(data)
        self._file.flush()
        self._grown.set()
        self._grown = asyncio.Event()

    def info(self, message: str) -> None:
        self.write(info_line(message))

    def error(self, message: str) -> None:
        self.write(error_line(message))

    def line(self, text: str) -> None:
        """A line of the task's own output (no `[taskcluster]` prefix)."""
        self.write(text.encode() + b"\n")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()
            self._grown.set()

    async def follow(self) -> AsyncIterator[bytes]:
        """Everything written so far, then each new write, until the log is closed."""
        with self.path.open("rb") as reader:
            while True:
                grown = self._grown
                closed = self._closed
                chunk = reader.read(READ_CHUNK)
                if chunk:
                    yield chunk
                elif closed:
                    return
                else:
                    await grown.wait()

    def gzip_to(self, target: Path) -> int:
        """Compress the (closed) log into `target`; returns the compressed size."""
        with self.path.open("rb") as source, gzip.open(target, "wb", compresslevel=6) as out:
            shutil.copyfileobj(source, out)
        return target.stat().st_size


class LiveLogServer:
    """Serves the logs of running tasks at unguessable URLs."""

    def __init__(self, bind_host: str, port: int, public_hostname: str) -> None:
        self._bind_host, self._port, self._public = bind_host, port, public_hostname
        self._logs: dict[str, TaskLog] = {}
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/log/{token}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._bind_host, self._port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # noqa: SLF001
        if sockets and self._port == 0:
            self._port = sockets[0].getsockname()[1]
        log.info("live log server listening", extra={"port": self._port})

    async def stop(self) -> None:
        for task_log in self._logs.values():
            task_log.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def publish(self, task_log: TaskLog) -> str:
        token = secrets.token_urlsafe(24)
        self._logs[token] = task_log
        return f"http://{self._public}:{self._port}/log/{token}"

    def withdraw(self, url: str) -> None:
        self._logs.pop(url.rsplit("/", 1)[-1], None)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        task_log = self._logs.get(request.match_info["token"])
        if task_log is None:
            raise web.HTTPNotFound(text="no such live log (the task may have finished)\n")
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            async for chunk in task_log.follow():
                await response.write(chunk)
        except ConnectionResetError:  # the reader went away
            return response
        await response.write_eof()
        return response
