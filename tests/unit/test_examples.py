"""The ready graphs in examples/ (the README's quick start) plan as they claim to."""

from __future__ import annotations

import datetime
import itertools
from pathlib import Path

import pytest

from cli.documents import load_document
from cli.graph import GraphPlan, plan_graph

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def plan(name: str) -> GraphPlan:
    counter = itertools.count()
    return plan_graph(
        load_document(EXAMPLES / name),
        now=datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC),
        new_id=lambda: f"id-{next(counter)}",
        owner="me@example.com",
        source="https://example.com/examples",
    )


@pytest.mark.parametrize("name", ["diamond.yaml", "fan-out.yaml"])
def test_every_example_runs_containers_on_the_local_worker(name: str) -> None:
    for task in plan(name).tasks:
        definition = task.definition
        assert definition["taskQueueId"] == "flotilla/local"
        assert definition["payload"]["image"] == "flotilla/busybox:latest"
        assert definition["payload"]["command"][:2] == ["sh", "-c"]


def test_the_diamond() -> None:
    tasks = {task.name: task for task in plan("diamond.yaml").tasks}
    assert [t.name for t in plan("diamond.yaml").tasks][0] == "fetch"
    assert tasks["build"].dependencies == tasks["test"].dependencies == ("fetch",)
    assert tasks["ship"].dependencies == ("build", "test")


def test_the_fan_out_of_50_and_its_fan_in() -> None:
    planned = plan("fan-out.yaml")
    tasks = {task.name: task for task in planned.tasks}
    parts = [f"part-{i:02d}" for i in range(50)]
    assert set(tasks) == {"split", "join", *parts}
    assert all(tasks[part].dependencies == ("split",) for part in parts)
    assert tasks["join"].dependencies == tuple(parts)
    assert planned.tasks[-1].name == "join"
