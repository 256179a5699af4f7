"""Exchange names and routing keys, exactly as upstream's Pulse exchanges spell them.

Every name a service publishes to or binds with comes from here (never a literal elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterable

# The queue's exchanges, in upstream's order. Names are appended to the exchange prefix
# (`exchange/taskcluster-queue/v1/` by default).
TASK_EXCHANGES = (
    "task-defined",
    "task-pending",
    "task-running",
    "artifact-created",
    "task-completed",
    "task-failed",
    "task-exception",
    "task-priority-changed",
)
TASK_GROUP_EXCHANGES = (
    "task-group-resolved",
    "task-group-sealed",
    "task-group-priority-changed",
)
EXCHANGES = TASK_EXCHANGES + TASK_GROUP_EXCHANGES

MAX_ROUTING_KEY_LENGTH = 255
_EMPTY = "_"


class RoutingKeyError(ValueError):
    """A routing-key word would contain a dot, or the key would exceed 255 characters."""


def exchange_name(prefix: str, event: str) -> str:
    if event not in EXCHANGES:
        raise ValueError(f"unknown exchange {event!r}")
    return prefix + event


def _word(name: str, value: object) -> str:
    if value is None or value == "":
        return _EMPTY
    text = str(value)
    if "." in text:
        raise RoutingKeyError(f"routing key word {name}={text!r} may not contain '.'")
    return text


def _join(words: Iterable[str]) -> str:
    key = ".".join(words)
    if len(key) > MAX_ROUTING_KEY_LENGTH:
        raise RoutingKeyError(f"routing key is {len(key)} characters (at most 255)")
    return key


def task_routing_key(
    *,
    task_id: str,
    run_id: int | None = None,
    worker_group: str | None = None,
    worker_id: str | None = None,
    provisioner_id: str,
    worker_type: str,
    scheduler_id: str,
    task_group_id: str,
) -> str:
    """`primary.<taskId>.<runId>.<workerGroup>.<workerId>.<prov>.<wt>.<schedulerId>.<group>._`"""
    return _join(
        (
            "primary",
            _word("taskId", task_id),
            _word("runId", run_id),
            _word("workerGroup", worker_group),
            _word("workerId", worker_id),
            _word("provisionerId", provisioner_id),
            _word("workerType", worker_type),
            _word("schedulerId", scheduler_id),
            _word("taskGroupId", task_group_id),
            _EMPTY,  # `reserved`: always `_` when publishing; binders match it with `#`
        )
    )


def task_group_routing_key(*, task_group_id: str, scheduler_id: str) -> str:
    """`primary.<taskGroupId>.<schedulerId>._`"""
    return _join(
        ("primary", _word("taskGroupId", task_group_id), _word("schedulerId", scheduler_id), "_")
    )


def cc_routes(routes: Iterable[str]) -> list[str]:
    """The CC keys for a task's routes: `route.<r>` (dots inside a route are allowed here)."""
    return [f"route.{route}" for route in routes]


def task_queue_of_routing_key(routing_key: str) -> str | None:
    """`<provisionerId>/<workerType>` from a task routing key (None if it is not one)."""
    words = routing_key.split(".")
    if len(words) < 10 or words[0] != "primary" or _EMPTY in (words[5], words[6]):
        return None
    return f"{words[5]}/{words[6]}"


# Durable queues of Flotilla's own services (competing consumers share one).


def dependency_resolver_queue(database: str) -> str:
    """One per deployment (named after its database): the exchanges carry the events of
    every deployment on the broker, and a resolver must never take another's."""
    return f"flotilla/{database}/dependency-resolver"


def pending_queue(database: str, task_queue_id: str) -> str:
    """The durable queue of a task queue's pending runs (one per deployment and task
    queue; a task queue id is at most 77 characters, well within RabbitMQ's 255)."""
    return f"flotilla/{database}/pending/{task_queue_id}"


RESOLUTION_EVENTS = ("task-completed", "task-failed", "task-exception")


def index_queue(database: str) -> str:
    """The index service's durable queue of task-completed events, one per deployment."""
    return f"flotilla/{database}/index"


# The index service binds task-completed (only: failed and exception runs are never
# indexed, as upstream) with the CC keys of `index.<namespace>` routes.
INDEX_ROUTE_PREFIX = "index."
INDEX_BINDING = "route.index.#"


# Binding patterns of a subscriber that follows one task group (the web console).


def task_group_tasks_pattern(task_group_id: str) -> str:
    """Every task event of the group: `primary.*.*.*.*.*.*.*.<taskGroupId>.#`."""
    return _join(("primary", *("*",) * 7, _word("taskGroupId", task_group_id), "#"))


def task_group_events_pattern(task_group_id: str) -> str:
    """The group's own events (task-group-resolved, ...): `primary.<taskGroupId>.#`."""
    return _join(("primary", _word("taskGroupId", task_group_id), "#"))


def web_console_queue(instance: str) -> str:
    """A console replica's private (exclusive, auto-deleted) queue of task-group events."""
    return f"flotilla/web/{instance}"
