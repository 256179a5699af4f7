"""`flotilla task log [-f] TASKID`: the backing log of the latest run, or the live log
followed while the task runs and completed from the backing log once it resolves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from taskcluster.exceptions import TaskclusterRestFailure

from cli.artifacts import artifact_url, stream_url
from cli.errors import CliError
from cli.session import Clients
from cli.tasks import RESOLVED

BACKING_LOG = "public/logs/live_backing.log"
LIVE_LOG = "public/logs/live.log"
STREAM_GRACE_S = 2.0  # after the task resolves, how long the live stream may take to end
BACKING_LOG_WAIT_S = 5.0


class LogSink:
    """Raw bytes to stdout, or one `{"line": ...}` JSON document per line with --json.
    Counts the bytes written, so the backing log can take over where the live log ended."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.written = 0
        self._partial = b""

    def write(self, chunk: bytes) -> None:
        self.written += len(chunk)
        if not self.json_mode:
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            self._emit(line)

    def close(self) -> None:
        if self.json_mode and self._partial:
            self._emit(self._partial)
            self._partial = b""

    def _emit(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace")
        sys.stdout.write(json.dumps({"line": text}) + "\n")
        sys.stdout.flush()


async def _url_if_present(clients: Clients, task_id: str, run_id: int, name: str) -> str | None:
    try:
        return await artifact_url(clients, task_id, run_id, name)
    except TaskclusterRestFailure as exc:
        if exc.status_code == 404:
            return None
        raise


async def _copy(clients: Clients, url: str, sink: LogSink, skip: int = 0) -> None:
    async for chunk in stream_url(clients, url):
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        sink.write(chunk[skip:])
        skip = 0


async def print_log(clients: Clients, sink: LogSink, task_id: str, run_id: int) -> None:
    for name in (BACKING_LOG, LIVE_LOG):
        if url := await _url_if_present(clients, task_id, run_id, name):
            await _copy(clients, url, sink)
            return
    raise CliError(f"task {task_id} run {run_id} has no {BACKING_LOG} or {LIVE_LOG}")


async def _status(clients: Clients, task_id: str) -> dict[str, Any]:
    return (await clients.queue.status(task_id))["status"]


def _run_resolved(status: dict[str, Any], run_id: int) -> bool:
    runs = status["runs"]
    return run_id < len(runs) and runs[run_id]["state"] in RESOLVED


def waiting_for(status: dict[str, Any]) -> str | None:
    """What a follower waits for before a worker starts the task, or None once one has."""
    runs = status["runs"]
    if runs and runs[-1]["state"] != "pending":
        return None
    if status["state"] == "unscheduled":
        return f"task {status['taskId']} is unscheduled: waiting for its dependencies"
    if status["state"] == "pending":
        return (
            f"task {status['taskId']} is pending on {status['taskQueueId']}: "
            "waiting for a worker to take it"
        )
    return None


async def follow_log(clients: Clients, sink: LogSink, task_id: str, poll_s: float) -> None:
    """Wait for a worker to start a run (saying so on stderr), stream its live log while it
    runs, then print what the backing log holds beyond what was streamed."""
    status = await _status(clients, task_id)
    said = None
    while (waiting := waiting_for(status)) is not None:
        if waiting != said:
            print(f"flotilla: {waiting}", file=sys.stderr, flush=True)
            said = waiting
        await asyncio.sleep(poll_s)
        status = await _status(clients, task_id)
    if not status["runs"]:
        raise CliError(f"task {task_id} resolved ({status['state']}) without a run")
    run = status["runs"][-1]
    if run["state"] in RESOLVED and not run.get("started"):
        raise CliError(f"task {task_id} resolved ({run['state']}) before a worker started it")
    if said is not None:
        worker = f"{run.get('workerGroup')}/{run.get('workerId')}"
        print(f"flotilla: worker {worker} started it", file=sys.stderr, flush=True)
    run_id = run["runId"]
    if not _run_resolved(status, run_id):
        await _follow_live(clients, sink, task_id, run_id, poll_s)
    await _rest_from_backing_log(clients, sink, task_id, run_id, poll_s)


async def _wait_resolved(clients: Clients, task_id: str, run_id: int, poll_s: float) -> None:
    while True:
        if _run_resolved(await _status(clients, task_id), run_id):
            return
        await asyncio.sleep(poll_s)


async def _follow_live(
    clients: Clients, sink: LogSink, task_id: str, run_id: int, poll_s: float
) -> None:
    resolved = asyncio.create_task(_wait_resolved(clients, task_id, run_id, poll_s))
    try:
        url = None
        while url is None and not resolved.done():
            url = await _url_if_present(clients, task_id, run_id, LIVE_LOG)
            if url is None:
                await asyncio.wait({resolved}, timeout=poll_s)
        if url is None:
            return
        streaming = asyncio.create_task(_copy(clients, url, sink))
        try:
            await asyncio.wait({resolved, streaming}, return_when=asyncio.FIRST_COMPLETED)
            if resolved.done() and not streaming.done():
                # a live log usually ends when its task does; never wait on one for long
                await asyncio.wait({streaming}, timeout=STREAM_GRACE_S)
            # a live stream that broke early is not fatal: the backing log has everything
            await resolved
        finally:
            streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await streaming
    finally:
        resolved.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resolved


async def _rest_from_backing_log(
    clients: Clients, sink: LogSink, task_id: str, run_id: int, poll_s: float
) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + BACKING_LOG_WAIT_S
    while (url := await _url_if_present(clients, task_id, run_id, BACKING_LOG)) is None:
        if loop.time() > give_up:
            sink.close()
            raise CliError(f"task {task_id} run {run_id} resolved without a {BACKING_LOG}")
        await asyncio.sleep(poll_s)
    await _copy(clients, url, sink, skip=sink.written)


async def show_log(
    clients: Clients, json_mode: bool, task_id: str, run_id: int | None, follow: bool, poll_s: float
) -> int:
    sink = LogSink(json_mode)
    try:
        if follow:
            await follow_log(clients, sink, task_id, poll_s)
        else:
            if run_id is None:
                status = await _status(clients, task_id)
                if not status["runs"]:
                    raise CliError(f"task {task_id} has no runs yet (it is {status['state']})")
                run_id = status["runs"][-1]["runId"]
            await print_log(clients, sink, task_id, run_id)
    finally:
        sink.close()
    return 0
