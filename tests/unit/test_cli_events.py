"""Binding patterns for `listen` / `group watch`, event lines, and group-watch state."""

from __future__ import annotations

from typing import Any

import pytest
import taskcluster

from cli.bindings import describe_event, event_name, listen_bindings, task_pattern
from cli.errors import CliError
from cli.groupstate import BLOCKED, GroupState, progress_key, summary_line
from shared.broker import Binding
from shared.routing import task_routing_key
from tests.unit.test_routing import topic_matches

PREFIX = "exchange/taskcluster-queue/v1/"
EVENTS = taskcluster.QueueEvents({"rootUrl": "http://127.0.0.1:8080"})


def test_task_pattern_matches_what_queue_events_builds() -> None:
    assert (
        task_pattern(taskGroupId="G")
        == EVENTS.taskCompleted({"taskGroupId": "G"})["routingKeyPattern"]
    )
    assert task_pattern(taskId="T") == EVENTS.taskCompleted({"taskId": "T"})["routingKeyPattern"]
    key = task_routing_key(
        task_id="T",
        run_id=0,
        worker_group="wg",
        worker_id="w",
        provisioner_id="p",
        worker_type="t",
        scheduler_id="-",
        task_group_id="G",
    )
    assert topic_matches(task_pattern(taskGroupId="G"), key)
    assert not topic_matches(task_pattern(taskGroupId="H"), key)


def test_listen_bindings() -> None:
    assert listen_bindings("task-completed") == [Binding("task-completed", task_pattern())]
    assert listen_bindings("task-completed", routes=["a.b"]) == [
        Binding("task-completed", "route.a.b")
    ]
    both = listen_bindings("task-failed", task_group_id="G", task_queue_id="p/t", routes=["r"])
    assert both == [
        Binding("task-failed", "primary.*.*.*.*.p.t.*.G.#"),
        Binding("task-failed", "route.r"),
    ]
    assert listen_bindings("task-group-resolved", task_group_id="G") == [
        Binding("task-group-resolved", "primary.G.#")
    ]


@pytest.mark.parametrize(
    ("event", "kwargs"),
    [
        ("task-group-resolved", {"task_id": "T"}),
        ("task-completed", {"task_group_id": "a.b"}),
        ("task-completed", {"task_queue_id": "no-slash"}),
    ],
)
def test_bad_listen_filters(event: str, kwargs: dict[str, str]) -> None:
    with pytest.raises(CliError):
        listen_bindings(event, **kwargs)


def test_event_names() -> None:
    assert event_name("task-completed", PREFIX) == "task-completed"
    assert event_name(PREFIX + "task-failed", PREFIX) == "task-failed"
    with pytest.raises(CliError, match="unknown exchange 'task-done'"):
        event_name("task-done", PREFIX)


def status(task_id: str, *runs: str, state: str | None = None) -> dict[str, Any]:
    return {
        "taskId": task_id,
        "taskGroupId": "G",
        "state": state or (runs[-1] if runs else "unscheduled"),
        "runs": [
            {"runId": i, "state": s, "reasonResolved": "failed" if s == "failed" else ""}
            for i, s in enumerate(runs)
        ],
    }


def test_describe_event() -> None:
    body = {"status": status("T", "failed"), "runId": 0, "workerGroup": "wg", "workerId": "w"}
    line = describe_event("task-failed", "primary.T.0.wg.w.p.t.-.G._", body)
    assert line.split() == ["task-failed", "T", "run", "0", "failed", "on", "wg/w", "failed"] + [
        "group",
        "G",
    ]
    group_line = describe_event("task-group-resolved", "", {"taskGroupId": "G", "schedulerId": "-"})
    assert group_line.split() == ["task-group-resolved", "group", "G", "scheduler", "-"]


def test_progress_key_orders_statuses_of_one_task() -> None:
    keys = [
        progress_key(status("T")),
        progress_key(status("T", "pending")),
        progress_key(status("T", "running")),
        progress_key(status("T", "exception")),
        progress_key(status("T", "exception", "pending")),
    ]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def listing(task_id: str, st: dict[str, Any], deps: list[str], **task: Any) -> dict[str, Any]:
    return {"status": st, "task": {"metadata": {"name": task_id}, "dependencies": deps, **task}}


def test_a_stale_event_does_not_undo_a_listing() -> None:
    state = GroupState()
    state.apply_listing([listing("a", status("a", "completed"), [])])
    assert state.apply_status(status("a", "running")) is False
    assert state.tasks["a"].state == "completed"
    assert state.apply_status(status("b", "pending")) is True  # unknown: list again


def test_a_failed_diamond_side_blocks_the_bottom_and_finishes() -> None:
    state = GroupState()
    state.apply_listing(
        [
            listing("top", status("top", "completed"), []),
            listing("left", status("left", "failed"), ["top"]),
            listing("right", status("right", "running"), ["top"]),
            listing("bottom", status("bottom"), ["left", "right"]),
            listing("after", status("after"), ["bottom"]),
            listing("lenient", status("lenient"), ["left"], requires="all-resolved"),
        ]
    )
    assert state.blocked() == {"bottom", "after"}
    assert not state.finished()  # right still runs, lenient will run
    state.apply_status(status("right", "completed"))
    state.apply_status(status("lenient", "completed"))
    assert state.finished() and not state.succeeded()
    counts = state.counts()
    assert counts == {"completed": 3, "failed": 1, BLOCKED: 2}
    assert summary_line(counts) == "6 tasks: 3 completed, 1 failed, 2 blocked"


def test_all_completed_succeeds_and_empty_is_not_finished() -> None:
    assert not GroupState().finished()
    state = GroupState()
    state.apply_listing([listing("a", status("a", "completed"), [])])
    assert state.finished() and state.succeeded()
