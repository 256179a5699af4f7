"""Taskcluster-style binding patterns for the queue's exchanges, and one-line event text.
Pure functions; exchange names come from shared.routing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cli.errors import EXIT_USAGE, CliError
from shared.broker import Binding
from shared.routing import EXCHANGES, TASK_EXCHANGES

# The words of a task routing key after `primary`, in order (then `reserved`: `#`).
TASK_KEY_FIELDS = (
    "taskId",
    "runId",
    "workerGroup",
    "workerId",
    "provisionerId",
    "workerType",
    "schedulerId",
    "taskGroupId",
)


def event_name(exchange: str, prefix: str) -> str:
    """`task-completed` from either that or the full exchange name."""
    event = exchange.removeprefix(prefix)
    if event not in EXCHANGES:
        raise CliError(f"unknown exchange {exchange!r}; one of: {', '.join(EXCHANGES)}", EXIT_USAGE)
    return event


def _word(field: str, value: str | None) -> str:
    if value is None or value == "":
        return "*"
    if "." in value or value in ("*", "#"):
        raise CliError(f"{field} {value!r} cannot be matched as one routing-key word", EXIT_USAGE)
    return value


def task_pattern(**fields: str | None) -> str:
    """`primary.<taskId>.<runId>....<taskGroupId>.#` with `*` for every field not given."""
    unknown = set(fields) - set(TASK_KEY_FIELDS)
    if unknown:
        raise ValueError(f"not routing-key fields: {sorted(unknown)}")
    return ".".join(["primary", *(_word(f, fields.get(f)) for f in TASK_KEY_FIELDS), "#"])


def group_pattern(task_group_id: str | None) -> str:
    """Task-group exchanges: `primary.<taskGroupId>.<schedulerId>._`."""
    return f"primary.{_word('taskGroupId', task_group_id)}.#"


def listen_bindings(
    event: str,
    *,
    task_group_id: str | None = None,
    task_id: str | None = None,
    task_queue_id: str | None = None,
    routes: Sequence[str] = (),
) -> list[Binding]:
    """The primary-key binding for the filters given (skipped when only routes are given),
    plus `route.<r>` for each route: a message matching any binding is delivered once."""
    filtered = task_group_id or task_id or task_queue_id
    bindings = [Binding(event, f"route.{route}") for route in routes]
    if event in TASK_EXCHANGES:
        provisioner_id = worker_type = None
        if task_queue_id:
            provisioner_id, _, worker_type = task_queue_id.partition("/")
            if not worker_type:
                raise CliError(f"task queue {task_queue_id!r} is not <prov>/<type>", EXIT_USAGE)
        pattern = task_pattern(
            taskId=task_id,
            taskGroupId=task_group_id,
            provisionerId=provisioner_id,
            workerType=worker_type,
        )
    else:
        if task_id or task_queue_id:
            raise CliError(f"{event} messages carry no taskId or task queue", EXIT_USAGE)
        pattern = group_pattern(task_group_id)
    if filtered or not routes:
        bindings.insert(0, Binding(event, pattern))
    return bindings


def describe_event(event: str, routing_key: str, body: dict[str, Any]) -> str:
    """One line for people: event, task, run, state, worker, reason (what the event has)."""
    status = body.get("status") or {}
    if event not in TASK_EXCHANGES:
        group = body.get("taskGroupId", "?")
        return f"{event:<28} group {group} scheduler {body.get('schedulerId', '?')}"
    run_id = body.get("runId")
    parts = [f"{event:<22}", status.get("taskId", routing_key.split(".")[1:2][0])]
    if run_id is not None:
        parts.append(f"run {run_id}")
    parts.append(status.get("state", ""))
    if body.get("workerId"):
        parts.append(f"on {body.get('workerGroup')}/{body['workerId']}")
    runs = status.get("runs") or []
    if run_id is not None and run_id < len(runs) and runs[run_id].get("reasonResolved"):
        parts.append(runs[run_id]["reasonResolved"])
    if event == "artifact-created" and "artifact" in body:
        parts.append(body["artifact"].get("name", ""))
    parts.append(f"group {status.get('taskGroupId', '?')}")
    return " ".join(p for p in parts if p)
