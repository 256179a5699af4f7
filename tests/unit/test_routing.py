"""Routing keys must match the binding patterns that `taskcluster.QueueEvents` builds."""

from __future__ import annotations

import re

import pytest
import taskcluster

from shared.config import load_settings
from shared.ids import slugid
from shared.routing import (
    EXCHANGES,
    RoutingKeyError,
    cc_routes,
    exchange_name,
    task_group_routing_key,
    task_routing_key,
)

EVENTS = taskcluster.QueueEvents({"rootUrl": "http://127.0.0.1:8080"})


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic semantics: `*` is one word, `#` zero or more words."""
    parts = []
    for word in pattern.split("."):
        parts.append(r"(?:[^.]+)" if word == "*" else "#" if word == "#" else re.escape(word))
    regex = r"\.".join(parts)
    # `#` may absorb the dot before it, so `a.#` matches `a`.
    regex = regex.replace(r"\.#", r"(?:\.[^.]+)*").replace("#", r"(?:[^.]+(?:\.[^.]+)*)?")
    return re.fullmatch(regex, key) is not None


def key(**overrides: object) -> str:
    fields: dict[str, object] = dict(
        task_id="T" * 22,
        run_id=0,
        worker_group="wg",
        worker_id="w1",
        provisioner_id="prov",
        worker_type="wt",
        scheduler_id="-",
        task_group_id="G" * 22,
    )
    fields.update(overrides)
    return task_routing_key(**fields)  # type: ignore[arg-type]


def test_task_key_has_upstream_word_order_and_reserved_slot() -> None:
    assert key() == f"primary.{'T' * 22}.0.wg.w1.prov.wt.-.{'G' * 22}._"


def test_missing_words_become_underscores() -> None:
    assert key(run_id=None, worker_group=None, worker_id="") == (
        f"primary.{'T' * 22}._._._.prov.wt.-.{'G' * 22}._"
    )


def test_run_id_zero_is_a_word_not_missing() -> None:
    assert key(run_id=0).split(".")[2] == "0"


def test_words_may_not_contain_dots() -> None:
    with pytest.raises(RoutingKeyError, match="workerId"):
        key(worker_id="a.b")


def test_key_longer_than_255_is_refused() -> None:
    with pytest.raises(RoutingKeyError, match="255"):
        key(worker_id="x" * 240)


def test_group_key() -> None:
    assert task_group_routing_key(task_group_id="G" * 22, scheduler_id="sched") == (
        f"primary.{'G' * 22}.sched._"
    )


@pytest.mark.parametrize(
    "method, filters",
    [
        ("taskDefined", {}),
        ("taskPending", {"taskId": "T" * 22}),
        ("taskRunning", {"workerGroup": "wg", "workerId": "w1"}),
        ("taskCompleted", {"provisionerId": "prov", "workerType": "wt"}),
        ("taskFailed", {"schedulerId": "-", "taskGroupId": "G" * 22}),
        ("taskException", {"runId": 0}),
        ("artifactCreated", {"taskId": "T" * 22, "runId": 0}),
    ],
)
def test_task_keys_match_queue_events_patterns(method: str, filters: dict[str, object]) -> None:
    binding = getattr(EVENTS, method)(filters)
    assert binding["exchange"].startswith(load_settings().exchange_prefix)
    assert topic_matches(binding["routingKeyPattern"], key())


def test_queue_events_filter_rejects_other_tasks() -> None:
    pattern = EVENTS.taskCompleted({"taskId": slugid()})["routingKeyPattern"]
    assert not topic_matches(pattern, key())


def test_group_keys_match_queue_events_patterns() -> None:
    pattern = EVENTS.taskGroupResolved({"taskGroupId": "G" * 22})["routingKeyPattern"]
    assert topic_matches(pattern, task_group_routing_key(task_group_id="G" * 22, scheduler_id="s"))


def test_route_bindings_match_cc_keys() -> None:
    pattern = EVENTS.taskCompleted("route.index.project.#")["routingKeyPattern"]
    assert [k for k in cc_routes(["index.project.a.b", "other"]) if topic_matches(pattern, k)] == [
        "route.index.project.a.b"
    ]


def test_exchange_names_follow_queue_events() -> None:
    prefix = load_settings().exchange_prefix
    checked = 0
    for event in EXCHANGES:
        method = re.sub(r"-(\w)", lambda m: m.group(1).upper(), event)
        if hasattr(EVENTS, method):
            assert getattr(EVENTS, method)({})["exchange"] == exchange_name(prefix, event)
            checked += 1
    assert checked >= 9  # every exchange the 113.x client knows, not a vacuous pass


def test_unknown_exchange_is_refused() -> None:
    with pytest.raises(ValueError):
        exchange_name("x/", "task-vanished")


def test_topic_matcher_itself() -> None:
    # The test's own matcher must agree with RabbitMQ's documented semantics.
    assert topic_matches("a.*.c", "a.b.c")
    assert not topic_matches("a.*.c", "a.b.b.c")
    assert topic_matches("a.#", "a")
    assert topic_matches("a.#", "a.b.c")
    assert topic_matches("#", "anything.at.all")
    assert not topic_matches("a.*", "a")
