"""The web console in a real browser: Debian's Chromium driven headless by Playwright,
against the session's queue, dependency-resolver and RabbitMQ (nothing mocked).

Set FLOTILLA_WEB_SCREENSHOTS=<dir> to also save the README's screenshots there.
"""

from __future__ import annotations

import gzip
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pymongo
import pytest
import requests
import taskcluster
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from shared.config import load_settings
from tests.conftest import Platform, RunningService, launch_service, stop_process
from tests.integration.queue_support import new_task_queue_id, root_queue, task_definition

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = os.environ.get("FLOTILLA_WEB_SCREENSHOTS")
# Waits, not performance limits: this box is shared and listing a 5,000-task group
# through the queue takes tens of seconds under load (bench/bench_web.py has the figure).
WAIT_MS = 180_000
expect.set_options(timeout=60_000)


def new_context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS)
    return context


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def console(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m services.web` reading through the session's queue; yields its URL."""
    port = _free_port()
    process = launch_service(
        "web",
        tmp_path_factory.mktemp("web"),
        database=platform.queue.mongo_db,
        extra_env={"FLOTILLA_ROOT_URL": platform.queue.root_url, "FLOTILLA_WEB_PORT": str(port)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"services.web exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/static/console.css", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("services.web did not answer within 30 s")
                time.sleep(0.1)
        yield url
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def anonymous(browser: Browser) -> Iterator[BrowserContext]:
    context = new_context(browser)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def signed_in(browser: Browser, console: str, queue_service: RunningService) -> Iterator[Page]:
    """A page whose visitor signed in with the root client's credentials."""
    context = new_context(browser)
    page = context.new_page()
    page.goto(f"{console}/login")
    page.fill("#clientId", queue_service.root_client_id)
    page.fill("#accessToken", queue_service.root_access_token)
    page.click("#sign-in-submit")
    expect(page.locator("#client-id")).to_have_text(queue_service.root_client_id)
    try:
        yield page
    finally:
        context.close()


def shot(page: Page, name: str, selector: str | None = None) -> None:
    if not SCREENSHOTS:
        return
    Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
    target = page.locator(selector) if selector else page
    target.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


def claim(queue: taskcluster.Queue, task_queue_id: str) -> tuple[str, int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        claims = queue.claimWork(
            task_queue_id, {"workerGroup": "web-tests", "workerId": "w1", "tasks": 1}
        )["tasks"]
        if claims:
            return claims[0]["status"]["taskId"], claims[0]["runId"]
    pytest.fail(f"nothing became claimable in {task_queue_id}")


def upload_log(queue: taskcluster.Queue, task_id: str, run_id: int, text: bytes) -> None:
    """The backing log as docker-worker leaves it: gzip-encoded text in an s3 artifact."""
    created = queue.createArtifact(
        task_id,
        run_id,
        "public/logs/live_backing.log",
        {
            "storageType": "s3",
            "contentType": "text/plain; charset=utf-8",
            "expires": taskcluster.fromNowJSON("1 day"),
        },
    )
    response = requests.put(
        created["putUrl"],
        data=gzip.compress(text),
        headers={"Content-Type": "text/plain; charset=utf-8", "Content-Encoding": "gzip"},
        timeout=30,
    )
    response.raise_for_status()


def test_diamond_group_turns_green_task_by_task_without_reload(
    signed_in: Page, console: str, platform: Platform
) -> None:
    queue = root_queue(platform.queue)
    task_queue_id = new_task_queue_id()
    group = taskcluster.slugId()
    ids = {name: taskcluster.slugId() for name in ("build", "test-a", "test-b", "release")}
    needs = {"build": [], "test-a": ["build"], "test-b": ["build"], "release": ["test-a", "test-b"]}
    for name, task_id in ids.items():
        queue.createTask(
            task_id,
            task_definition(
                task_queue_id,
                taskGroupId=group,
                dependencies=[ids[d] for d in needs[name]],
                metadata={**task_definition("x/y")["metadata"], "name": name},
            ),
        )
    page = signed_in
    page.goto(f"{console}/tasks/groups/{group}")
    expect(page.locator("#tasks tbody tr")).to_have_count(4)
    expect(page.locator("svg.graph g.node")).to_have_count(4)
    expect(page.locator("#count-total")).to_have_text("4")
    expect(page.locator("body")).to_have_attribute("data-live-ready", "1")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    for done in range(1, 5):
        task_id, run_id = claim(queue, task_queue_id)
        queue.reportCompleted(task_id, run_id)
        expect(page.locator(f"#t-{task_id}")).to_have_attribute("data-state", "completed")
        expect(page.locator(f'g.node[data-task-id="{task_id}"]')).to_have_class(
            "node state-completed"
        )
        expect(page.locator("#count-completed")).to_have_text(str(done))
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "group")
    shot(page, "graph", "#graph")
    page.goto(f"{console}/tasks/groups/{group}/profiler")
    expect(page.locator("#critical-path ol.path li")).to_have_count(3)  # build, a test, release
    shot(page, "profiler")


class FakeLiveLog:
    """A worker's live-log endpoint: streams lines, and ends when `finish()` is called."""

    def __init__(self, lines: list[bytes]) -> None:
        self.finished = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.end_headers()
                for line in lines:
                    self.wfile.write(line)
                    self.wfile.flush()
                owner.finished.wait(60)
                self.wfile.write(b"live stream over\n")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/log/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.finished.set()
        self.server.shutdown()
        self.server.server_close()


def test_task_page_follows_the_live_log_then_shows_the_backing_log(
    signed_in: Page, console: str, queue_service: RunningService
) -> None:
    queue = root_queue(queue_service)
    task_queue_id = new_task_queue_id()
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(task_queue_id))
    claimed, run_id = claim(queue, task_queue_id)
    assert claimed == task_id
    live = FakeLiveLog([b"LIVE LINE one\n", b"\x1b[32mLIVE LINE two\x1b[0m\n"])
    try:
        queue.createArtifact(
            task_id,
            run_id,
            "public/logs/live.log",
            {
                "storageType": "reference",
                "url": live.url,
                "contentType": "text/plain; charset=utf-8",
                "expires": taskcluster.fromNowJSON("1 day"),
            },
        )
        page = signed_in
        page.goto(f"{console}/tasks/{task_id}")
        expect(page.locator("#task-state")).to_have_text("running")
        expect(page.locator("#log")).to_contain_text("LIVE LINE two")
        expect(page.locator("#log span.fg2")).to_have_text("LIVE LINE two")
        expect(page.locator("#log")).not_to_have_attribute("data-mode", "backing")
        shot(page, "task-live")
        upload_log(queue, task_id, run_id, b"BACKING LINE one\nBACKING LINE two\n")
        queue.reportCompleted(task_id, run_id)
        live.finished.set()  # the worker closes the live log when the run ends
        expect(page.locator("#log")).to_have_attribute("data-mode", "backing")
        expect(page.locator("#log")).to_contain_text("BACKING LINE two")
        expect(page.locator("#L2")).to_contain_text("BACKING LINE two")  # line anchors
    finally:
        live.close()


def test_cancel_from_the_page_resolves_the_task(
    signed_in: Page, console: str, queue_service: RunningService
) -> None:
    queue = root_queue(queue_service)
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(new_task_queue_id()))
    page = signed_in
    page.goto(f"{console}/tasks/{task_id}")
    expect(page.locator("#task-state")).to_have_text("pending")
    page.click("#cancel-task")
    expect(page.locator("#task-state")).to_have_text("exception")
    run = queue.status(task_id)["status"]["runs"][-1]
    assert (run["state"], run["reasonResolved"]) == ("exception", "canceled")
    expect(page.locator("#cancel-task")).to_have_count(0)  # nothing left to cancel


def test_cancel_group_from_the_page_resolves_its_open_tasks(
    signed_in: Page, console: str, queue_service: RunningService
) -> None:
    queue = root_queue(queue_service)
    group, task_queue_id = taskcluster.slugId(), new_task_queue_id()
    first, second = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(first, task_definition(task_queue_id, taskGroupId=group))
    queue.createTask(
        second, task_definition(task_queue_id, taskGroupId=group, dependencies=[first])
    )
    page = signed_in
    page.goto(f"{console}/tasks/groups/{group}")
    expect(page.locator("#count-total")).to_have_text("2")
    page.click("#cancel-group")
    expect(page.locator("#count-exception")).to_have_text("2")
    assert {queue.status(t)["status"]["state"] for t in (first, second)} == {"exception"}


def test_anonymous_visitors_get_no_actions_and_forged_posts_are_refused(
    anonymous: BrowserContext, signed_in: Page, console: str, queue_service: RunningService
) -> None:
    queue = root_queue(queue_service)
    task_id = taskcluster.slugId()
    group = taskcluster.slugId()
    queue.createTask(task_id, task_definition(new_task_queue_id(), taskGroupId=group))
    page = anonymous.new_page()
    for path in (f"/tasks/{task_id}", f"/tasks/groups/{group}", "/tasks/create"):
        page.goto(console + path)
        expect(page.locator("#sign-in")).to_be_visible()
        for action in ("#cancel-task", "#rerun-task", "#cancel-group", "#create-submit"):
            expect(page.locator(action)).to_have_count(0)
    # The default anonymous role reads tasks (upstream's public read scopes): the page
    # shows the task, with nothing to act on.
    page.goto(f"{console}/tasks/{task_id}")
    expect(page.locator("h1")).to_contain_text("test task")
    # A forged POST (no CSRF token), anonymous or riding a signed-in visitor's cookie:
    refused = anonymous.request.post(f"{console}/tasks/{task_id}/cancel", form={"x": "1"})
    assert refused.status == 403
    refused = signed_in.request.post(f"{console}/tasks/{task_id}/cancel", form={"csrf": "guess"})
    assert refused.status == 403
    refused = signed_in.request.post(f"{console}/tasks/groups/{group}/cancel", form={})
    assert refused.status == 403
    assert queue.status(task_id)["status"]["state"] == "pending"


def test_markup_and_ansi_in_names_and_logs_render_as_text(
    signed_in: Page, console: str, queue_service: RunningService
) -> None:
    queue = root_queue(queue_service)
    task_queue_id = new_task_queue_id()
    task_id = taskcluster.slugId()
    evil = "<script>window.pwned = 1</script><img src=x onerror='window.pwned=2'>"
    definition = task_definition(task_queue_id)
    queue.createTask(task_id, {**definition, "metadata": {**definition["metadata"], "name": evil}})
    claimed, run_id = claim(queue, task_queue_id)
    log_text = f"plain\n\x1b[31;1m{evil}\x1b[0m after\n".encode()
    upload_log(queue, task_id, run_id, log_text)
    queue.reportCompleted(claimed, run_id)
    page = signed_in
    page.goto(f"{console}/tasks/{task_id}")
    expect(page.locator("#task-name")).to_have_text(evil)
    expect(page.locator("#log span.fg1.b")).to_have_text(evil)
    expect(page.locator("#L2")).to_contain_text(" after")
    assert "\x1b" not in page.locator("#log").inner_text()
    page.goto(f"{console}/tasks/groups/{definition.get('taskGroupId', task_id)}")
    expect(page.locator(f"#t-{task_id} a")).to_have_text(evil)
    assert page.evaluate("window.pwned") is None
    if SCREENSHOTS:
        page.goto(f"{console}/tasks/{task_id}")
        shot(page, "task")


# Listing 5,000 tasks through the queue's API takes 40-110 s on this shared box (FerretDB
# sorts the whole group for every page); the wait is generous, the figure is in bench/.
@pytest.mark.timeout(600)
def test_a_5000_task_group_renders_all_counts(
    signed_in: Page, console: str, queue_service: RunningService
) -> None:
    """The tasks are stored the way createTask stores them (copies of one real task's
    document), because 5,000 createTask calls would take minutes on this box. How fast the
    page becomes interactive is a benchmark figure (bench/bench_web.py), not asserted."""
    queue = root_queue(queue_service)
    group = taskcluster.slugId()
    first = taskcluster.slugId()
    queue.createTask(first, task_definition(new_task_queue_id(), taskGroupId=group))
    pending, unscheduled = seed_group_copies(queue_service, first, pending=1999, unscheduled=3000)
    page = signed_in
    page.goto(f"{console}/tasks/groups/{group}")
    expect(page.locator("#count-total")).to_have_text("5000")
    expect(page.locator("#count-pending")).to_have_text(str(pending + 1))
    expect(page.locator("#count-unscheduled")).to_have_text(str(unscheduled))
    expect(page.locator("#tasks tbody tr")).to_have_count(5000)
    page.select_option("#state-filter", "pending")
    expect(page.locator("#shown")).to_have_text(f"{pending + 1} shown")


def seed_group_copies(
    service: RunningService, template_id: str, *, pending: int, unscheduled: int
) -> tuple[int, int]:
    """Copies of a pending task's stored document under new ids in the same group."""
    settings_url = load_settings().mongo_url
    with pymongo.MongoClient(settings_url) as client:
        tasks = client[service.mongo_db]["tasks"]
        template = tasks.find_one({"_id": template_id})
        assert template is not None
        copies = [{**template, "_id": taskcluster.slugId()} for _ in range(pending)]
        copies += [
            {**template, "_id": taskcluster.slugId(), "runs": []} for _ in range(unscheduled)
        ]
        for start in range(0, len(copies), 1000):
            tasks.insert_many(copies[start : start + 1000], ordered=False)
    return pending, unscheduled


def test_task_queue_page_counts_and_charts_pending_work(
    signed_in: Page, console: str, queue_service: RunningService
) -> None:
    queue = root_queue(queue_service)
    task_queue_id = new_task_queue_id()
    for _ in range(2):
        queue.createTask(taskcluster.slugId(), task_definition(task_queue_id))
    claim(queue, task_queue_id)  # a worker shows up: the queue now knows the task queue
    page = signed_in
    page.goto(f"{console}/provisioners")
    expect(
        page.locator(f'a[href="/provisioners/{task_queue_id.replace("/", "/worker-types/")}"]')
    ).to_have_count(1)
    page.goto(f"{console}/provisioners/{task_queue_id.replace('/', '/worker-types/')}")
    expect(page.locator("#pending-now")).to_have_text("1")
    expect(page.locator("#claimed-now")).to_have_text("1")
    expect(page.locator("table.workers")).to_contain_text("web-tests/w1")
    expect(page.locator("#chart polyline.pending")).not_to_have_attribute("points", "")


def test_create_task_from_yaml_shows_schema_errors_inline(
    signed_in: Page, console: str, queue_service: RunningService
) -> None:
    page = signed_in
    page.goto(f"{console}/tasks/create")
    page.fill("#definition", "taskQueueId: nope/x\npayload: {}\n")  # no created, deadline, ...
    page.click("#create-submit")
    expect(page.locator("#schema-errors")).to_contain_text("deadline")
    expect(page.locator("#definition")).to_have_value("taskQueueId: nope/x\npayload: {}\n")
    task_queue_id = new_task_queue_id()
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    later = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 3600))
    page.fill(
        "#definition",
        f"taskQueueId: {task_queue_id}\ncreated: {now}\ndeadline: {later}\npayload: {{}}\n"
        "metadata:\n  name: from the editor\n  description: d\n  owner: a@example.com\n"
        "  source: https://example.com\n",
    )
    page.click("#create-submit")
    expect(page.locator("#task-name")).to_have_text("from the editor")
    task_id = page.url.rsplit("/", 1)[1]
    assert root_queue(queue_service).task(task_id)["taskQueueId"] == task_queue_id
