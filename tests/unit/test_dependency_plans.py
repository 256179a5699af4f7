"""The pure decisions of dependency resolution: where an edge is counted, how a batch of
resolutions is split, and how a fan-out's dependents are scheduled in bulk."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from services.dependency_resolver.release import bulk_updates, plan_release
from shared import dependencies, transitions
from shared.ids import slugid
from shared.taskstore import from_document, stored_definition, to_document
from shared.transitions import Enqueue, TaskRecord
from tests.unit.test_transitions import DEADLINE, NOW, definition

ROOT, OTHER = slugid(), slugid()
LAST, MORE, LATE, DONE, V7 = (slugid() for _ in range(5))


def test_a_few_dependencies_are_counted_on_the_task_itself() -> None:
    task = definition(dependencies=[ROOT, OTHER])
    assert dependencies.target("D", task, ROOT) == "D"
    assert dependencies.waiting_fields("D", task) == {
        "waiting": {ROOT: 1, OTHER: 1},
        "depsLeft": 2,
    }


def test_many_dependencies_are_counted_in_small_shards() -> None:
    requireds = [slugid() for _ in range(1000)]
    task = definition(dependencies=requireds)
    targets = {r: dependencies.target("D", task, r) for r in requireds}
    shards = set(targets.values())
    # ceil(1000 / 64) = 16 shards, each holding a fair share, none of them the task itself
    assert len(shards) == 16 and all(t.startswith("D#") for t in shards)
    sizes = [sum(1 for t in targets.values() if t == shard) for shard in shards]
    assert max(sizes) < 2 * dependencies.SHARD_SIZE
    fields = dependencies.waiting_fields("D", task)
    assert fields["depsLeft"] == 16
    assert set(fields["waiting"]) == {"#" + t.partition("#")[2] for t in shards}
    assert all(dependencies.dependent_of(t) == "D" for t in shards)


def test_a_batch_splits_into_single_and_several_edges() -> None:
    single, several = dependencies.plan({"A": ["x", "y"], "B": ["y", "z"], "C": ["w"]})
    assert single == {"A": ["x"], "B": ["z"], "C": ["w"]}
    assert several == {"y": ["A", "B"]}


def test_emptied_shards_become_edges_on_their_tasks() -> None:
    edges = dependencies.task_edges({"A": ["D1", "S#3"], "B": ["S#1"]}, ["S#3", "T#0"])
    assert edges == {"A": ["D1"], "#3": ["S"], "#0": ["T"]}
    assert sorted(dependencies.emptied_shards(edges)) == ["S#3", "T#0"]


def _stored(record: TaskRecord, waiting: dict[str, int]) -> dict[str, object]:
    return {**to_document(record), "waiting": waiting, "depsLeft": len(waiting)}


def test_release_schedules_last_edges_and_counts_down_the_rest() -> None:
    task = definition(dependencies=[ROOT])
    last = TaskRecord(LAST, task, (), 2, False, 1)
    more = TaskRecord(MORE, definition(dependencies=[ROOT, OTHER]), (), 2, False, 1)
    late = TaskRecord(LATE, task, (), 2, False, 1)
    scheduled = TaskRecord(DONE, task, (), 2, False, 1)
    scheduled = transitions.schedule(scheduled, NOW - timedelta(seconds=5)).record
    documents = [
        _stored(last, {ROOT: 1}),
        _stored(more, {ROOT: 1, OTHER: 1}),
        _stored(late, {ROOT: 1}),
        _stored(scheduled, {}),
    ]
    plan = plan_release(documents[:2] + documents[3:], ROOT, NOW)
    assert [record.task_id for record, _ in plan.schedule] == [LAST]
    assert plan.count_down == [MORE]
    assert [record.task_id for record in plan.announce] == [DONE]  # a repeat: again
    # Past its deadline: counted down only, so the one-by-one path resolves it.
    past = plan_release([documents[2]], ROOT, DEADLINE + timedelta(seconds=1))
    assert past.count_down == [LATE] and not past.schedule


def test_identical_changes_become_one_conditional_update() -> None:
    task = definition(dependencies=[ROOT])
    records = [TaskRecord(slugid(), task, (), 2, False, 1) for _ in range(3)]
    older = replace(records[0], task_id=V7, version=7)
    plan = plan_release([_stored(r, {ROOT: 1}) for r in [*records, older]], ROOT, NOW)
    updates = bulk_updates(ROOT, plan.schedule, NOW)
    assert len(updates) == 2  # by the version read
    first = next(u for u in updates if u.filter["version"] == 1)
    assert first.filter["_id"] == {"$in": [r.task_id for r in records]}
    assert first.filter[f"waiting.{ROOT}"] == {"$exists": True}
    assert first.update["$set"]["version"] == 2 and first.update["$set"]["depsLeft"] == 0
    assert first.update["$set"]["runs"][0]["state"] == "pending"
    assert first.update["$unset"][f"waiting.{ROOT}"] == ""
    # What is announced afterwards is what the transition decided: queue run 0, task-pending.
    effects = first.outcomes[0].effects
    assert isinstance(effects[0], Enqueue) and effects[0].task_id == records[0].task_id
    assert effects[1].event == "task-pending"  # type: ignore[union-attr]


def test_a_long_dependency_list_is_stored_beside_the_task() -> None:
    few = TaskRecord.new("F", definition(dependencies=[slugid() for _ in range(64)]))
    assert few.dependencies_ref is None
    assert len(from_document(to_document(few)).definition.dependencies) == 64

    requireds = [slugid() for _ in range(65)]
    many = TaskRecord.new("M", definition(dependencies=requireds))
    assert many.dependencies_ref is not None and many.dependencies_ref.startswith("M/")
    stored = to_document(many)
    assert not any(r in stored["definition"] for r in requireds)
    read = from_document(stored)
    assert read.partial and read.dependencies_ref == many.dependencies_ref
    # Written back (a transition changed the priority), it stays without the list.
    assert stored_definition(many) == stored_definition(read) == stored["definition"]
    # The id names the content: another list for the same taskId gets another id.
    other = TaskRecord.new("M", definition(dependencies=requireds[:-1] + [slugid()]))
    assert other.dependencies_ref != many.dependencies_ref
    assert TaskRecord.new("M", definition(dependencies=requireds)) == many
