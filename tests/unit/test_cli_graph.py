"""Graph files: planning order, errors that name the culprit, defaults and filled times."""

from __future__ import annotations

import datetime
import itertools

import pytest

from cli.definitions import fill_task, json_time
from cli.errors import EXIT_USAGE, CliError
from cli.graph import find_cycle, merge_defaults, plan_graph, topological_order

NOW = datetime.datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)


def ids() -> itertools.count[int]:
    return itertools.count(1)


def plan(document: dict, **kwargs):  # type: ignore[no-untyped-def]
    counter = ids()
    return plan_graph(
        document,
        now=NOW,
        new_id=lambda: f"id{next(counter)}",
        owner="me",
        source="https://example.com/g.yaml",
        **kwargs,
    )


def usage_error(call, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(CliError) as raised:
        call(*args, **kwargs)
    assert raised.value.exit_code == EXIT_USAGE
    return raised.value.message


def test_a_diamond_is_ordered_after_its_dependencies() -> None:
    order = topological_order(
        {"bottom": ["left", "right"], "left": ["top"], "right": ["top"], "top": []}
    )
    assert order == ["top", "left", "right", "bottom"]


def test_independent_tasks_keep_the_files_order() -> None:
    assert topological_order({"b": [], "a": [], "c": ["a"]}) == ["b", "a", "c"]


def test_a_cycle_is_named() -> None:
    message = usage_error(topological_order, {"a": ["c"], "b": ["a"], "c": ["b"], "d": []})
    assert message.startswith("dependency cycle: ")
    path = message.removeprefix("dependency cycle: ").split(" -> ")
    assert path[0] == path[-1] and set(path) == {"a", "b", "c"}


def test_find_cycle_is_empty_without_one() -> None:
    assert find_cycle({"a": [], "b": ["a"]}) == []


def test_an_unknown_dependency_is_named() -> None:
    message = usage_error(topological_order, {"build": ["fetchh"], "fetch": []})
    assert "'build'" in message and "'fetchh'" in message


def test_self_dependency_is_a_cycle() -> None:
    message = usage_error(plan, {"tasks": {"a": {"dependencies": ["a"]}}})
    assert message == "dependency cycle: a -> a"


def test_plan_assigns_ids_group_and_dependencies() -> None:
    graph = plan(
        {
            "defaults": {"taskQueueId": "local/demo", "metadata": {"owner": "team"}},
            "tasks": {
                "build": {"dependencies": ["fetch"], "payload": {"x": 1}},
                "fetch": {"taskQueueId": "local/other", "metadata": {"name": "Fetch!"}},
            },
        }
    )
    assert graph.task_group_id == "id1"
    assert [t.name for t in graph.tasks] == ["fetch", "build"]
    fetch, build = graph.tasks
    assert graph.ids() == {"build": "id2", "fetch": "id3"}
    assert build.definition["dependencies"] == [fetch.task_id]
    assert fetch.definition["dependencies"] == []
    assert {t.definition["taskGroupId"] for t in graph.tasks} == {"id1"}
    assert fetch.definition["taskQueueId"] == "local/other"  # the task wins
    assert build.definition["taskQueueId"] == "local/demo"  # the default fills
    assert fetch.definition["metadata"] == {
        "name": "Fetch!",
        "owner": "team",  # mappings merge key by key
        "description": "",
        "source": "https://example.com/g.yaml",
    }
    assert build.definition["metadata"]["name"] == "build"
    assert fetch.definition["payload"] == {}


def test_plan_keeps_given_ids() -> None:
    graph = plan({"taskGroupId": "G", "tasks": {"a": {"taskId": "fixed"}}})
    assert graph.task_group_id == "G" and graph.tasks[0].task_id == "fixed"
    assert "taskId" not in graph.tasks[0].definition
    assert plan({"tasks": {"a": {}}}, task_group_id="H").task_group_id == "H"


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"tasks": {}}, "no tasks"),
        ({}, "tasks must be a mapping, not nothing"),
        ({"tasks": ["a"]}, "tasks must be a mapping, not list"),
        ({"tasks": {"a": {}}, "task": {}}, "unknown top-level keys ['task']"),
        ({"tasks": {"a": {"dependencies": "b"}}}, "dependencies must be a list"),
        ({"tasks": {"a": 3}}, "task 'a' must be a mapping"),
        ([1, 2], "the graph file must be a mapping"),
    ],
)
def test_bad_graph_files(document: object, fragment: str) -> None:
    assert fragment in usage_error(plan, document)


def test_merge_defaults_replaces_lists_and_merges_mappings() -> None:
    defaults = {"payload": {"image": "busybox", "env": {"A": "1"}}, "routes": ["x"]}
    merged = merge_defaults(defaults, {"payload": {"env": {"B": "2"}}, "routes": ["y"]})
    assert merged == {"payload": {"image": "busybox", "env": {"A": "1", "B": "2"}}, "routes": ["y"]}
    assert defaults["payload"]["env"] == {"A": "1"}  # not modified


def fill(definition: dict) -> dict:
    return fill_task(definition, now=NOW, name="n", owner="o", source="https://s", where="f")


def test_times_are_filled_like_the_queue_would() -> None:
    task = fill({})
    assert task["created"] == "2030-05-06T07:08:09.123Z"
    assert task["deadline"] == "2030-05-07T07:08:09.123Z"  # one day
    assert task["expires"] == "2031-05-07T07:08:09.123Z"  # deadline + 1 year


def test_relative_and_absolute_times() -> None:
    task = fill({"deadline": "2 hours", "expires": "2030-06-01T00:00:00Z"})
    assert task["deadline"] == "2030-05-06T09:08:09.123Z"
    assert task["expires"] == "2030-06-01T00:00:00.000Z"


def test_a_bad_time_is_a_usage_error() -> None:
    assert "deadline 'soonish'" in usage_error(fill, {"deadline": "soonish"})


def test_json_time_is_millisecond_utc() -> None:
    moment = datetime.datetime(2030, 1, 2, 3, 4, 5, 999999, tzinfo=datetime.UTC)
    assert json_time(moment) == "2030-01-02T03:04:05.999Z"
