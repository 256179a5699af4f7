"""`flotilla task create|status|rerun|cancel`."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import slugid

from cli.config import CliConfig
from cli.definitions import fill_task
from cli.documents import load_document, require_mapping
from cli.errors import CliError
from cli.groupstate import BLOCKED
from cli.output import Output
from cli.session import Clients

RESOLVED = frozenset({"completed", "failed", "exception"})


def source_for(config: CliConfig, path: Path) -> str:
    """metadata.source when the file gives none: it must be an http(s) URL."""
    return f"{config.root_url}/flotilla-cli/{path.name}"


async def create(
    clients: Clients, out: Output, config: CliConfig, path: Path, task_id: str | None
) -> int:
    definition = require_mapping(load_document(path), str(path))
    task_id = task_id or definition.pop("taskId", None) or slugid.nice()
    definition.pop("taskId", None)
    task = fill_task(
        definition,
        now=datetime.datetime.now(datetime.UTC),
        name=path.stem,
        owner=config.owner,
        source=source_for(config, path),
        where=str(path),
    )
    result = await clients.queue.createTask(task_id, task)
    if out.json_mode:
        out.json({"taskId": task_id, "status": result["status"]})
    else:
        out.line(task_id)
    return 0


async def latest_run(clients: Clients, task_id: str) -> tuple[dict[str, Any], int]:
    """The task's status and its latest run's id (an error if it has no run yet)."""
    status = (await clients.queue.status(task_id))["status"]
    if not status["runs"]:
        raise CliError(f"task {task_id} has no runs yet (it is {status['state']})")
    return status, status["runs"][-1]["runId"]


def run_rows(status: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for run in status["runs"]:
        worker = f"{run['workerGroup']}/{run['workerId']}" if run.get("workerId") else ""
        rows.append(
            [
                run["runId"],
                run["state"],
                run.get("reasonCreated", ""),
                run.get("reasonResolved", ""),
                worker,
                short_time(run.get("scheduled")),
                short_time(run.get("started")),
                short_time(run.get("resolved")),
            ]
        )
    return rows


def short_time(value: str | None) -> str:
    """`2025-01-02T03:04:05.678Z` → `2025-01-02 03:04:05`."""
    return value[:19].replace("T", " ") if value else ""


MAX_BLOCKING_DEPTH = 50  # how far up a chain of unscheduled dependencies to look


async def blocked_by(
    clients: Clients, task: dict[str, Any], state: str, depth: int = 0
) -> dict[str, str] | None:
    """For an unscheduled task that needs all its dependencies completed: the dependency
    that failed or ended in exception (directly or further up), so it would only wait for
    its deadline (`blocked`, as `group watch` shows it). None otherwise."""
    if state != "unscheduled" or task.get("requires", "all-completed") != "all-completed":
        return None
    if depth > MAX_BLOCKING_DEPTH:
        return None
    for dependency in task.get("dependencies") or []:
        dependency_state = (await clients.queue.status(dependency))["status"]["state"]
        if dependency_state in ("failed", "exception"):
            return {"taskId": dependency, "state": dependency_state}
        if dependency_state == "unscheduled":
            upstream = await clients.queue.task(dependency)
            if await blocked_by(clients, upstream, dependency_state, depth + 1) is not None:
                return {"taskId": dependency, "state": BLOCKED}
    return None


async def show_status(clients: Clients, out: Output, task_id: str) -> int:
    task, status = await clients.queue.task(task_id), await clients.queue.status(task_id)
    blocker = await blocked_by(clients, task, status["status"]["state"])
    if out.json_mode:
        document = {"task": task, "status": status["status"]}
        if blocker is not None:
            document["blockedBy"] = blocker
        out.json(document)
        return 0
    state = status["status"]
    shown = state["state"]
    if blocker is not None:
        shown = f"{BLOCKED} (unscheduled; dependency {blocker['taskId']} is {blocker['state']})"
    out.line(f"{task_id}  {task['metadata']['name']}")
    out.line(
        f"state {shown}   queue {state['taskQueueId']}   group {state['taskGroupId']}"
        f"   retries left {state['retriesLeft']}   deadline {short_time(state['deadline'])}"
    )
    if state["runs"]:
        out.table(
            [
                "run",
                "state",
                "created",
                "resolved as",
                "worker",
                "scheduled",
                "started",
                "resolved",
            ],
            run_rows(state),
        )
    else:
        out.line("no runs yet")
    return 0


async def rerun(clients: Clients, out: Output, task_id: str) -> int:
    status = (await clients.queue.rerunTask(task_id))["status"]
    return _report(out, task_id, status, "rerun")


async def cancel(clients: Clients, out: Output, task_id: str) -> int:
    status = (await clients.queue.cancelTask(task_id))["status"]
    return _report(out, task_id, status, "cancelled")


def _report(out: Output, task_id: str, status: dict[str, Any], verb: str) -> int:
    if out.json_mode:
        out.json({"taskId": task_id, "status": status})
    else:
        out.line(f"{task_id} {verb}: now {status['state']} (run {len(status['runs']) - 1})")
    return 0
