"""The `flotilla` console script, run as a user runs it, against the session's platform
(queue + dependency-resolver + claim-expiry); the test plays the worker through the
official client with each claim's credentials."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import taskcluster
from aiohttp import web
from taskcluster.download import downloadArtifactToBuf

from shared.config import Settings
from tests.conftest import Platform, RunningService, _free_port
from tests.integration.queue_support import (
    claim_one,
    client_with_scopes,
    new_task_queue_id,
    root_queue,
    task_definition,
    worker_queue,
)

pytestmark = pytest.mark.timeout(60)

CONSOLE_SCRIPT = Path(sys.executable).parent / "flotilla"
REPO = Path(__file__).resolve().parents[2]
BACKING_LOG = "public/logs/live_backing.log"


def command() -> list[str]:
    """The installed console script (`pip install -e .` puts it beside python)."""
    if CONSOLE_SCRIPT.exists():
        return [str(CONSOLE_SCRIPT)]
    return [sys.executable, "-m", "cli"]


@pytest.fixture
def cli_env(platform: Platform, settings: Settings) -> dict[str, str]:
    service = platform.queue
    return {
        **os.environ,
        "TASKCLUSTER_ROOT_URL": service.root_url,
        "TASKCLUSTER_CLIENT_ID": service.root_client_id,
        "TASKCLUSTER_ACCESS_TOKEN": service.root_access_token,
        "FLOTILLA_AMQP_URL": settings.amqp_url,
        "FLOTILLA_ENV_FILE": "",  # never the developer's own .flotilla/env
        "COLUMNS": "200",
        # this checkout's `cli`, not the one the editable install points at (a worktree)
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def flotilla(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(), *args], env=env, capture_output=True, text=True, timeout=40, cwd=cwd
    )


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*command(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str], timeout_s: float = 20) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"flotilla did not finish within {timeout_s}s:\n{out}\n{err}")
    return process.returncode, out, err


def complete_claims(service: RunningService, tq: str, count: int, fail: str = "") -> list[str]:
    """Claim and resolve `count` tasks of `tq` as they become pending (failing any whose
    name is `fail`), in the order claimed."""
    queue, done = root_queue(service), []
    while len(done) < count:
        claims = queue.claimWork(tq, {"workerGroup": "wg", "workerId": "w1", "tasks": 4})
        for claim in claims["tasks"]:
            task_id = claim["status"]["taskId"]
            worker = worker_queue(service, claim)
            if claim["task"]["metadata"]["name"] == fail:
                worker.reportFailed(task_id, str(claim["runId"]))
            else:
                worker.reportCompleted(task_id, str(claim["runId"]))
            done.append(claim["task"]["metadata"]["name"])
    return done


def diamond_yaml(tq: str) -> str:
    return f"""
defaults:
  taskQueueId: {tq}
  payload: {{command: [echo, hi]}}
  metadata: {{owner: cli-tests@example.com}}
tasks:
  bottom: {{dependencies: [left, right]}}
  left: {{dependencies: [top]}}
  right: {{dependencies: [top]}}
  top: {{deadline: 2 hours}}
"""


def test_a_diamond_is_submitted_and_watched_to_completion(
    platform: Platform, cli_env: dict[str, str], tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    graph = tmp_path / "diamond.yaml"
    graph.write_text(diamond_yaml(tq))
    submitted = flotilla(cli_env, "graph", "submit", str(graph), "--json")
    assert submitted.returncode == 0, submitted.stderr
    answer = json.loads(submitted.stdout)
    group, ids = answer["taskGroupId"], answer["tasks"]
    queue = root_queue(platform.queue)
    bottom = queue.task(ids["bottom"])
    assert sorted(bottom["dependencies"]) == sorted([ids["left"], ids["right"]])
    assert bottom["taskGroupId"] == group and bottom["metadata"]["name"] == "bottom"
    assert queue.status(ids["top"])["status"]["state"] == "pending"

    # a long poll interval: finishing promptly proves the watch is driven by events
    table = start(cli_env, "group", "watch", group, "--poll", "30")
    lines = start(cli_env, "group", "watch", group, "--poll", "30", "--json")
    for watcher in (table, lines):  # bound and listed: only events move them promptly now
        assert watcher.stderr is not None
        assert watcher.stderr.readline() == f"watching {group} (live, and listing every 30 s)\n"
    order = complete_claims(platform.queue, tq, 4)
    assert order[0] == "top" and order[-1] == "bottom"
    finished_at = time.monotonic()
    code, out, err = finish(table)
    assert code == 0, err
    assert time.monotonic() - finished_at < 10
    assert f"group {group}: 4 tasks: 4 completed (all completed)" in out
    for name in ("top", "left", "right", "bottom"):
        assert name in out
    code, out, err = finish(lines)
    assert code == 0, err
    documents = [json.loads(line) for line in out.splitlines()]
    assert documents[-1] == {
        "taskGroupId": group,
        "ok": True,
        "counts": {"completed": 4},
        "unsuccessful": [],
    }
    last_state = {d["taskId"]: d["state"] for d in documents[:-1]}
    assert last_state == {task_id: "completed" for task_id in ids.values()}


def test_a_failed_task_makes_the_watch_fail(
    platform: Platform, cli_env: dict[str, str], tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    graph = tmp_path / "diamond.yaml"
    graph.write_text(diamond_yaml(tq))
    submitted = flotilla(cli_env, "graph", "submit", str(graph))
    assert submitted.returncode == 0, submitted.stderr
    group = submitted.stdout.strip().splitlines()[-1]  # the table, then the group id
    assert "bottom" in submitted.stdout
    complete_claims(platform.queue, tq, 3, fail="left")  # top, then left fails, right
    code, out, err = finish(start(cli_env, "group", "watch", group, "--poll", "1"))
    assert code == 1, err
    assert "4 tasks: 2 completed, 1 failed, 1 blocked (NOT all completed)" in out
    assert "failed" in out and "blocked" in out
    # without RabbitMQ the watch still ends, by polling alone
    no_broker = {**cli_env, "FLOTILLA_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}
    code, out, err = finish(start(no_broker, "group", "watch", group, "--poll", "1", "--json"))
    assert code == 1 and err.startswith("no events (cannot connect to RabbitMQ")
    summary = json.loads(out.splitlines()[-1])
    assert summary["ok"] is False and summary["counts"] == {
        "completed": 2,
        "failed": 1,
        "blocked": 1,
    }


def test_task_create_log_artifacts_status_and_workers(
    platform: Platform, cli_env: dict[str, str], tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    definition = tmp_path / "hello.yaml"
    definition.write_text(f"taskQueueId: {tq}\npayload: {{command: [echo, hi]}}\n")
    created = flotilla(cli_env, "task", "create", str(definition))
    assert created.returncode == 0, created.stderr
    task_id = created.stdout.strip()
    queue = root_queue(platform.queue)
    task = queue.task(task_id)
    assert task["metadata"]["name"] == "hello" and task["taskGroupId"] == task_id
    assert task["deadline"] > task["created"] and task["expires"] > task["deadline"]

    claim = claim_one(queue, tq)
    worker = worker_queue(platform.queue, claim)
    text = "".join(f"log line {i}\n" for i in range(2000))
    upload(worker, task_id, BACKING_LOG, gzip.compress(text.encode()), gzip_encoded=True)
    upload(worker, task_id, "public/out.bin", bytes(range(256)) * 100)
    worker.reportCompleted(task_id, "0")

    log = flotilla(cli_env, "task", "log", task_id)
    assert log.returncode == 0, log.stderr
    assert log.stdout == text

    listed = flotilla(cli_env, "task", "artifacts", task_id, "--json")
    assert listed.returncode == 0, listed.stderr
    names = {a["name"] for a in json.loads(listed.stdout)["artifacts"]}
    assert names == {BACKING_LOG, "public/out.bin"}
    assert "public/out.bin" in flotilla(cli_env, "task", "artifacts", task_id).stdout

    got = flotilla(cli_env, "task", "artifacts", task_id, "get", "public/out.bin", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out.bin").read_bytes() == bytes(range(256)) * 100
    target = tmp_path / "log.txt"
    got = flotilla(cli_env, "task", "artifacts", task_id, "get", BACKING_LOG, "-o", str(target))
    assert got.returncode == 0, got.stderr
    assert target.read_text() == text

    status = flotilla(cli_env, "task", "status", task_id, "--json")
    assert json.loads(status.stdout)["status"]["state"] == "completed"
    shown = flotilla(cli_env, "task", "status", task_id)
    assert "completed" in shown.stdout and "wg/w1" in shown.stdout

    workers = flotilla(cli_env, "workers", "--json")
    assert tq in {q["taskQueueId"] for q in json.loads(workers.stdout)["taskQueues"]}
    of_queue = flotilla(cli_env, "workers", tq, "--json")
    assert [w["workerId"] for w in json.loads(of_queue.stdout)["workers"]] == ["w1"]

    rerun = flotilla(cli_env, "task", "rerun", task_id, "--json")
    assert json.loads(rerun.stdout)["status"]["state"] == "pending"
    cancelled = flotilla(cli_env, "task", "cancel", task_id)
    assert cancelled.returncode == 0 and "now exception" in cancelled.stdout


def upload(
    worker: taskcluster.Queue, task_id: str, name: str, data: bytes, gzip_encoded: bool = False
) -> None:
    created = worker.createArtifact(
        task_id,
        "0",
        name,
        {
            "storageType": "s3",
            "contentType": "text/plain",
            "expires": taskcluster.fromNowJSON("1 day"),
        },
    )
    headers = {"Content-Type": "text/plain"}
    if gzip_encoded:
        headers["Content-Encoding"] = "gzip"
    assert requests.put(created["putUrl"], data=data, headers=headers).status_code == 200


class LiveLogServer:
    """A worker's live-log endpoint: streams two lines, then holds the response open until
    released, then sends a third and ends."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.release = threading.Event()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/log/abc"

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"line 1\nline 2\n")
        await asyncio.to_thread(self.release.wait, 30)
        await response.write(b"line 3\n")
        await response.write_eof()
        return response

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        app = web.Application()
        app.router.add_get("/log/abc", self._stream)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> LiveLogServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def live_log_server() -> Iterator[LiveLogServer]:
    with LiveLogServer() as server:
        yield server


def test_log_follow_streams_the_live_log_until_the_task_resolves(
    platform: Platform, cli_env: dict[str, str], live_log_server: LiveLogServer
) -> None:
    queue, tq, task_id = root_queue(platform.queue), new_task_queue_id(), taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    follower = start(cli_env, "task", "log", "-f", task_id, "--poll", "0.2")  # before a run
    claim = claim_one(queue, tq)
    worker = worker_queue(platform.queue, claim)
    worker.createArtifact(
        task_id,
        "0",
        "public/logs/live.log",
        {
            "storageType": "reference",
            "url": live_log_server.url,
            "contentType": "text/plain",
            "expires": taskcluster.fromNowJSON("1 day"),
        },
    )
    assert follower.stdout is not None
    assert follower.stdout.readline() == "line 1\n"
    assert follower.stdout.readline() == "line 2\n"
    assert follower.poll() is None  # still following
    full = "line 1\nline 2\nline 3\nline 4 (only in the backing log)\n"
    upload(worker, task_id, BACKING_LOG, full.encode())
    worker.reportCompleted(task_id, "0")
    live_log_server.release.set()
    code, rest, err = finish(follower)
    assert code == 0, err
    assert "line 1\nline 2\n" + rest == full  # nothing twice, nothing missing


def test_listen_receives_events_by_group_and_route(
    platform: Platform, cli_env: dict[str, str]
) -> None:
    queue, tq = root_queue(platform.queue), new_task_queue_id()
    group, route = taskcluster.slugId(), f"cli-test.{taskcluster.slugId()}"
    by_group = start(cli_env, "listen", "task-completed", "--task-group", group, "--json",
                     "--count", "1")  # fmt: skip
    by_route = start(cli_env, "listen", "task-completed", "--route", route, "--count", "1")
    for listener in (by_group, by_route):
        assert listener.stderr is not None
        assert listener.stderr.readline().startswith("listening on ")  # bound
    other = taskcluster.slugId()  # another group's task: not delivered
    queue.createTask(other, task_definition(tq))
    complete_claims(platform.queue, tq, 1)
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, taskGroupId=group, routes=[route]))
    complete_claims(platform.queue, tq, 1)
    code, out, err = finish(by_group)
    assert code == 0, err
    event = json.loads(out)
    assert event["exchange"] == "exchange/taskcluster-queue/v1/task-completed"
    assert event["body"]["status"]["taskId"] == task_id
    assert event["routingKey"].startswith(f"primary.{task_id}.0.wg.w1.")
    code, out, err = finish(by_route)
    assert code == 0, err
    assert out.split()[:5] == ["task-completed", task_id, "run", "0", "completed"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "tasks:\n  a:\n    payload: {x: 1\n  b: {}\n",
            "flotilla: {path}:4: bad YAML: ",
        ),
        (
            "tasks:\n  a: {dependencies: [b]}\n  b: {dependencies: [a]}\n",
            "flotilla: dependency cycle: a -> b -> a",
        ),
        ("tasks:\n  a: {dependencies: [nope]}\n", "flotilla: task 'a' depends on 'nope'"),
        ("tasks:\n  a: {payload: {}}\n", "flotilla: the queue refused the request (400): "),
    ],
)
def test_bad_graph_files_are_one_line_errors(
    cli_env: dict[str, str], tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(text)
    result = flotilla(cli_env, "graph", "submit", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(expected.format(path=path)), result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


def test_unknown_tasks_and_bad_credentials(cli_env: dict[str, str]) -> None:
    missing = flotilla(cli_env, "task", "status", taskcluster.slugId())
    assert missing.returncode == 1
    assert (
        missing.stderr.startswith("flotilla: not found: ") and len(missing.stderr.splitlines()) == 1
    )
    bad = {**cli_env, "TASKCLUSTER_ACCESS_TOKEN": "wrong-token"}
    refused = flotilla(bad, "task", "cancel", taskcluster.slugId())
    assert refused.returncode == 1
    assert refused.stderr.startswith("flotilla: not authorized (401): "), refused.stderr
    # no provisioner answers there: one line, exit 1
    nowhere = {**cli_env, "FLOTILLA_PROVISIONER_URL": f"http://127.0.0.1:{_free_port()}"}
    pools = flotilla(nowhere, "pools")
    assert pools.returncode == 1 and len(pools.stderr.splitlines()) == 1, pools.stderr


def test_refusals_keep_the_field_and_the_missing_scopes(
    platform: Platform, cli_env: dict[str, str], tmp_path: Path
) -> None:
    tq = new_task_queue_id()
    definition = tmp_path / "task.yaml"
    definition.write_text(f"taskQueueId: {tq}\npriority: urgent\npayload: {{}}\n")
    refused = flotilla(cli_env, "task", "create", str(definition))
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "priority: must be one of" in refused.stderr

    definition.write_text(f"taskQueueId: {tq}\npayload: {{}}\n")
    weak = client_with_scopes(platform.queue, ["queue:get-task:*"])
    limited = {
        **cli_env,
        "TASKCLUSTER_CLIENT_ID": weak.options["credentials"]["clientId"],
        "TASKCLUSTER_ACCESS_TOKEN": weak.options["credentials"]["accessToken"],
    }
    refused = flotilla(limited, "task", "create", str(definition))
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "missing the following scopes: " in refused.stderr
    assert f"queue:create-task:lowest:{tq}" in refused.stderr, refused.stderr


def test_a_task_no_worker_took_is_listed_and_its_log_waited_for(
    platform: Platform, cli_env: dict[str, str]
) -> None:
    queue, tq, first = root_queue(platform.queue), new_task_queue_id(), taskcluster.slugId()
    queue.createTask(first, task_definition(tq))

    # the queue shows up before any worker asked it for work (a mistyped name, say)
    listed = flotilla(cli_env, "workers", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {q["taskQueueId"]: q for q in json.loads(listed.stdout)["taskQueues"]}
    assert rows[tq]["pendingTasks"] == 1

    follower = start(cli_env, "task", "log", "-f", first, "--poll", "0.2")
    assert follower.stderr is not None
    waiting = follower.stderr.readline()
    assert f"task {first} is pending on {tq}: waiting for a worker" in waiting, waiting
    claim = claim_one(queue, tq)
    worker = worker_queue(platform.queue, claim)
    upload(worker, first, BACKING_LOG, b"it broke\n")
    worker.reportFailed(first, "0")
    code, out, err = finish(follower)
    assert code == 0, err
    assert out == "it broke\n" and "worker wg/w1 started it" in err


def test_status_of_a_task_behind_a_failed_dependency_is_blocked(
    platform: Platform, cli_env: dict[str, str]
) -> None:
    queue, tq = root_queue(platform.queue), new_task_queue_id()
    first, second, third = (taskcluster.slugId() for _ in range(3))
    queue.createTask(first, task_definition(tq))
    queue.createTask(second, task_definition(tq, dependencies=[first]))
    queue.createTask(third, task_definition(tq, dependencies=[second]))
    claim = claim_one(queue, tq)
    worker_queue(platform.queue, claim).reportFailed(first, "0")

    for task_id, culprit in ((second, first), (third, second)):
        shown = flotilla(cli_env, "task", "status", task_id)
        assert shown.returncode == 0, shown.stderr
        assert f"state blocked (unscheduled; dependency {culprit}" in shown.stdout, shown.stdout
    as_json = json.loads(flotilla(cli_env, "task", "status", second, "--json").stdout)
    assert as_json["blockedBy"] == {"taskId": first, "state": "failed"}
    assert as_json["status"]["state"] == "unscheduled"  # the protocol's own state, unchanged


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(("name", "count"), [("diamond.yaml", 4), ("fan-out.yaml", 52)])
def test_the_example_graphs_are_submitted(
    platform: Platform, cli_env: dict[str, str], name: str, count: int
) -> None:
    """As the README's quick start does (the session's database: no worker takes them)."""
    submitted = flotilla(cli_env, "graph", "submit", str(EXAMPLES / name), "--json")
    assert submitted.returncode == 0, submitted.stderr
    answer = json.loads(submitted.stdout)
    assert len(answer["tasks"]) == count
    queue = root_queue(platform.queue)
    listed = queue.listTaskGroup(answer["taskGroupId"])["tasks"]
    assert len(listed) == count
    first = "fetch" if name == "diamond.yaml" else "split"
    assert queue.status(answer["tasks"][first])["status"]["state"] == "pending"
    last = queue.task(answer["tasks"]["ship" if name == "diamond.yaml" else "join"])
    assert last["payload"]["image"] == "flotilla/busybox:latest"
    assert len(last["dependencies"]) == (2 if name == "diamond.yaml" else 50)


def test_the_readme_download_calls(platform: Platform) -> None:
    """README "Artifacts": downloadArtifactToBuf (downloadArtifact wants a writerFactory),
    and curl needs -L and --compressed for an artifact stored gzip-encoded."""
    queue, tq, task_id = root_queue(platform.queue), new_task_queue_id(), taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    worker = worker_queue(platform.queue, claim_one(queue, tq))
    text = b"hello from the README\n" * 50
    upload(worker, task_id, "public/out.txt", gzip.compress(text), gzip_encoded=True)

    data, content_type = downloadArtifactToBuf(
        taskId=task_id, name="public/out.txt", queueService=queue
    )
    assert bytes(data) == text and content_type == "text/plain"
    url = f"{platform.queue.root_url}/api/queue/v1/task/{task_id}/artifacts/public/out.txt"
    curl = ["curl", "-sSf", "-L", url]
    assert subprocess.run([*curl, "--compressed"], capture_output=True, check=True).stdout == text
    assert gzip.decompress(subprocess.run(curl, capture_output=True, check=True).stdout) == text
