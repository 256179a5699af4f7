"""The suite's report: a failed or skipped workload leaves gaps, never a crash that would
lose the numbers of the workloads that did run; ratios are Flotilla / the other side."""

from __future__ import annotations

from pathlib import Path

from bench import report

W1 = {
    "writes": {
        "writes_per_task": 20.0,
        "per_command_per_task": {"insert": 8, "update": 8, "delete": 3, "findAndModify": 1},
    },
    "burst": {
        "tasks": 1000,
        "tasks_per_s": 50.0,
        "sent_to_completed": {"p50_ms": 100.0, "p99_ms": 400.0},
    },
    "processes": {
        "queue": {"cpu_s": 20.0, "cpu_s_per_1000_tasks": 20.0, "peak_rss_mb": 80.0},
        "ferretdb": {"cpu_s": 10.0, "cpu_s_per_1000_tasks": 10.0, "peak_rss_mb": 60.0},
    },
    "commands": {
        "commands_per_task": 12.5,
        "reads_per_task": 3.0,
        "writes_per_task": 9.0,
        "other_per_task": 0.5,
        "by_process": {"queue": 11.0, "claim_expiry": 1.5},
        "rabbitmq_messages_per_task": 5.0,
    },
}
CEILING = {
    "mongo": {
        "find_one_and_update $inc c=8": 800.0,
        "update_one {_id,version} c=8": 800.0,
        "insert_one c=8": 2000.0,
    },
    "rabbitmq": {"unrouted c=16": 4000.0},
}
PEER = {
    "w1": {
        "tasks_per_s": 500.0,
        "send_to_result_stored": {"p50_ms": 50.0, "p99_ms": 100.0},
        "cpu_s_per_1000_tasks_all": 6.0,
    }
}


def test_dig_and_ratio_tolerate_missing_parts() -> None:
    assert report.dig({"a": [{"b": 3}]}, "a", 0, "b") == 3
    assert report.dig({"a": {"failed": "boom"}}, "a", "burst", "tasks_per_s") is None
    assert report.ratio(50, 500) == 0.1
    assert report.ratio(None, 500) is None and report.ratio(5, 0) is None


def test_flotilla_is_set_against_celery_and_the_ceiling() -> None:
    results = {"w1": W1, "ceiling": CEILING, "peer": PEER}
    results["ceilings_derived"] = report.ceilings(results)
    # 8 inserts at 2000/s + 8 updates at 800/s + 4 others at 800/s = 0.019 s per task
    assert results["ceilings_derived"]["mongo_tasks_per_s"] == round(1 / 0.019, 1)
    assert results["ceilings_derived"]["rabbitmq_tasks_per_s"] == 1000.0
    rows = {row[1].strip(): row for row in report.summary_rows(results)}
    assert rows["Celery"][3:] == [500.0, 0.1]
    assert rows["burst sent→done p50, ms (Celery)"][2:] == [100.0, 50.0, 2.0]
    assert rows["CPU-ms per task, all processes"][2:] == [30.0, 6.0, 5.0]
    assert rows["MongoDB commands per task (reads / writes / other)"][2] == "12.5 (3.0 / 9.0 / 0.5)"
    assert rows["RabbitMQ messages published per task"][2] == 5.0
    processes = {(row[0], row[1]): row for row in report.process_rows(results)}
    assert processes[("W1", "queue")][3:5] == [20.0, 11.0]
    assert processes[("W1", "ferretdb")][4] is None  # servers are not counted


def test_a_run_where_everything_failed_still_reports(tmp_path: Path) -> None:
    results = {name: {"failed": "RuntimeError: x"} for name in ("w1", "w2", "w3", "peer")}
    report.finish(results, tmp_path)
    assert (tmp_path / "latest.json").exists()
    assert not list(tmp_path.glob("*.png"))
