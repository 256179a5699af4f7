"""The suite's commands per task: the difference between two snapshots of the services'
count files, summed over the workload's processes and divided by its tasks; commands are
summed as reads, writes or other."""

from __future__ import annotations

from bench import commandcounts


def snapshot(pid: int, process: str, commands: dict[str, int], amqp: dict[str, int]) -> dict:
    return {"process": process, "pid": pid, "commands": commands, "failed": {}, "amqp": amqp}


def test_kinds() -> None:
    names = ("insert", "findAndModify", "getMore", "endSessions")
    assert [commandcounts.kind(n) for n in names] == ["writes", "writes", "reads", "other"]


def test_only_the_window_and_the_workloads_processes_count() -> None:
    before = {
        10: snapshot(10, "queue", {"insert": 100, "find": 50}, {"publish": 40}),
        30: snapshot(30, "bench", {"insert": 999}, {}),
    }
    after = {
        10: snapshot(10, "queue", {"insert": 120, "find": 60, "update": 30}, {"publish": 60}),
        # started during the window: all of its counts are inside it
        20: snapshot(20, "claim_expiry", {"find": 10, "endSessions": 2}, {"ack": 10}),
        30: snapshot(30, "bench", {"insert": 5000}, {}),  # seeding: not one of the pids
    }
    counted = commandcounts.difference(before, after, [10, 20, 99])
    assert counted == {
        "queue": {
            "commands": {"insert": 20, "find": 10, "update": 30},
            "failed": {},
            "amqp": {"publish": 20},
        },
        "claim_expiry": {
            "commands": {"find": 10, "endSessions": 2},
            "failed": {},
            "amqp": {"ack": 10},
        },
    }
    figures = commandcounts.per_task(counted, tasks=10)
    assert figures["commands_per_task"] == 7.2
    assert (figures["reads_per_task"], figures["writes_per_task"], figures["other_per_task"]) == (
        2.0,
        5.0,
        0.2,
    )
    assert figures["by_process"] == {"queue": 6.0, "claim_expiry": 1.2}
    assert figures["rabbitmq_messages_per_task"] == 2.0
    assert figures["amqp_per_task"] == {"ack": 1.0, "publish": 2.0}
    assert commandcounts.per_task(counted, tasks=0) == {}
