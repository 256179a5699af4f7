"""The web console with a large task group: how long until a 5,000-task group page is
interactive in Debian's Chromium, and where that time goes.

Starts its own queue and console on a fresh database, stores N tasks in one group the
way createTask stores them (copies of one real task's document: N createTask calls would
dominate the run), then measures with Playwright:
- `api_list_s`: listing the group through the queue's API (every page, as the console does);
- `first_byte_s`: the console's HTML arriving (it lists the group, then renders);
- `browser_s`: from the last byte to the page being interactive (parse, layout, script);
- `interactive_s`: the whole, navigation start to the live stream being ready;
- `sort_ms`, `filter_ms`: re-sorting and filtering all rows in the page.

    python -m bench web [--tasks 5000] [--other-tasks 45000] [--out bench/results/web.json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pymongo
import taskcluster

from shared.config import load_settings

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(module: str, env: dict[str, str], log: Path, probe: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(probe, timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"{module} did not start; see {log}")


def seed(root_url: str, token: str, database: str, count: int, others: int = 0) -> str:
    settings = load_settings()
    queue = taskcluster.Queue(
        {
            "rootUrl": root_url,
            "credentials": {"clientId": settings.root_client_id, "accessToken": token},
        }
    )
    group, first = taskcluster.slugId(), taskcluster.slugId()
    queue.createTask(
        first,
        {
            "taskGroupId": group,
            "taskQueueId": f"bench-web/w{uuid.uuid4().hex[:8]}",
            "created": taskcluster.fromNowJSON("0 seconds"),
            "deadline": taskcluster.fromNowJSON("1 hour"),
            "payload": {},
            "metadata": {
                "name": "bench",
                "description": "bench",
                "owner": "b@example.com",
                "source": "https://example.com",
            },
        },
    )
    with pymongo.MongoClient(settings.mongo_url) as client:
        tasks = client[database]["tasks"]
        template = tasks.find_one({"_id": first})
        assert template is not None
        copies = [
            {**template, "_id": taskcluster.slugId(), **({"runs": []} if i % 3 else {})}
            for i in range(count - 1)
        ]
        # Tasks of other groups in the same collection, interleaved with the group's.
        strangers = [taskcluster.slugId() for _ in range(9)]
        copies += [
            {**template, "_id": taskcluster.slugId(), "taskGroupId": strangers[i % 9]}
            for i in range(others)
        ]
        for start in range(0, len(copies), 1000):
            tasks.insert_many(copies[start : start + 1000], ordered=False)
    return group


def measure(console: str, root_url: str, token: str, group: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    settings = load_settings()
    queue = taskcluster.Queue(
        {
            "rootUrl": root_url,
            "credentials": {"clientId": settings.root_client_id, "accessToken": token},
        }
    )
    started = time.monotonic()
    query: dict[str, Any] = {"limit": 1000}
    while True:
        page_ = queue.listTaskGroup(group, query=query)
        if not page_.get("continuationToken"):
            break
        query = {"limit": 1000, "continuationToken": page_["continuationToken"]}
    api_list_s = time.monotonic() - started
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        context = browser.new_context()
        context.set_default_timeout(600_000)
        page = context.new_page()
        page.goto(f"{console}/login")
        page.fill("#clientId", settings.root_client_id)
        page.fill("#accessToken", token)
        page.click("#sign-in-submit")
        page.wait_for_selector("#client-id")
        page.goto(f"{console}/tasks/groups/{group}", wait_until="commit")
        page.wait_for_selector("body[data-live-ready='1']")
        timing = page.evaluate(
            "(() => { const t = performance.getEntriesByType('navigation')[0];"
            " return {start: t.startTime, firstByte: t.responseStart, end: t.responseEnd,"
            " now: performance.now()}; })()"
        )
        sort_ms = page.evaluate(
            "(() => { const t0 = performance.now();"
            " document.querySelector('th[data-sort=state]').click();"
            " return performance.now() - t0; })()"
        )
        filter_ms = page.evaluate(
            "(() => { const s = document.getElementById('state-filter'); s.value = 'pending';"
            " const t0 = performance.now(); s.dispatchEvent(new Event('change'));"
            " return performance.now() - t0; })()"
        )
        rows = page.locator("#tasks tbody tr").count()
        browser.close()
    return {
        "tasks": rows,
        "api_list_s": round(api_list_s, 2),
        "first_byte_s": round((timing["firstByte"] - timing["start"]) / 1000, 2),
        "browser_s": round((timing["now"] - timing["end"]) / 1000, 2),
        "interactive_s": round((timing["now"] - timing["start"]) / 1000, 2),
        "sort_ms": round(sort_ms, 1),
        "filter_ms": round(filter_ms, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument(
        "--other-tasks",
        type=int,
        default=0,
        help="tasks of other groups stored beside it (45000: a 50,000-task collection)",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "web.json"))
    args = parser.parse_args()
    settings = load_settings()
    database = f"bench_web_{uuid.uuid4().hex[:8]}"
    queue_port, web_port = _free_port(), _free_port()
    token = secrets.token_urlsafe(33)[:44]
    root_url = f"http://127.0.0.1:{queue_port}"
    logs = REPO / ".flotilla" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        "FLOTILLA_MONGO_DB": database,
        "FLOTILLA_QUEUE_PORT": str(queue_port),
        "FLOTILLA_ROOT_URL": root_url,
        "FLOTILLA_ROOT_ACCESS_TOKEN": token,
        "FLOTILLA_WEB_PORT": str(web_port),
        "FLOTILLA_RESOLVER_QUEUE_EXPIRES": "60",
    }
    processes = []
    try:
        processes.append(
            _start(
                "services.queue", env, logs / "bench-web-queue.log", f"{root_url}/api/queue/v1/ping"
            )
        )
        console = f"http://127.0.0.1:{web_port}"
        processes.append(
            _start("services.web", env, logs / "bench-web.log", f"{console}/static/console.css")
        )
        group = seed(root_url, token, database, args.tasks, args.other_tasks)
        result = {
            "benchmark": "web",
            "cpus": os.cpu_count(),
            **measure(console, root_url, token, group),
        }
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
        with pymongo.MongoClient(settings.mongo_url) as client:
            client.drop_database(database)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
