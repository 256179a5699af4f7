"""The suite's results for people: one table on the terminal, bench/results/latest.json and a
PNG chart per workload. Every number is picked with `dig` so a failed workload leaves
gaps ("-"), never a crash that loses the rest."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import charts
from bench.bench_queue import add_ceilings, print_table

FLOTILLA_PROCESSES = ("queue", "dependency_resolver", "claim_expiry", "ferretdb", "rabbitmq")


def dig(data: Any, *path: str | int) -> Any:
    """data[path[0]][path[1]]..., or None where any step is missing."""
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)  # type: ignore[call-overload]
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return None
    return round(a / b, 3)


def ceilings(results: dict[str, Any]) -> dict[str, Any]:
    """The tasks/s this machine's servers allow for the writes and publishes a task needs,
    measured in the same run (bench_queue's arithmetic)."""
    shaped = {
        "ceilings": results.get("ceiling"),
        "throughput": {"writes": dig(results, "w1", "writes")},
    }
    if not shaped["ceilings"] or not shaped["throughput"]["writes"]:
        return {}
    add_ceilings(shaped)
    return {
        "writes_per_task": dig(shaped, "throughput", "writes", "writes_per_task"),
        "mongo_tasks_per_s": shaped["throughput"].get("mix_ceiling_tasks_per_s"),
        "mongo_fau8_tasks_per_s": shaped["throughput"].get("fau8_ceiling_tasks_per_s"),
        # task-defined, task-pending, task-running, task-completed: four confirmed publishes
        "rabbitmq_tasks_per_s": ratio(dig(results, "ceiling", "rabbitmq", "unrouted c=16"), 4),
    }


def summary_rows(results: dict[str, Any]) -> list[list[Any]]:
    """[workload, measure, Flotilla, peer or ceiling, Flotilla / that]."""
    rows: list[list[Any]] = []
    ceiling = results.get("ceilings_derived") or {}
    w1, celery = results.get("w1") or {}, results.get("peer") or {}
    tasks_per_s = dig(w1, "burst", "tasks_per_s")
    celery_rate = dig(celery, "w1", "tasks_per_s")
    rows.append(["W1", "no-op burst, tasks/s", tasks_per_s, "", ""])
    rows.append(["", "  Celery", "", celery_rate, ratio(tasks_per_s, celery_rate)])
    rows.append(
        [
            "",
            "  ceiling: MongoDB writes",
            "",
            ceiling.get("mongo_tasks_per_s"),
            ratio(tasks_per_s, ceiling.get("mongo_tasks_per_s")),
        ]
    )
    rows.append(
        [
            "",
            "  ceiling: RabbitMQ publishes",
            "",
            ceiling.get("rabbitmq_tasks_per_s"),
            ratio(tasks_per_s, ceiling.get("rabbitmq_tasks_per_s")),
        ]
    )
    for name in ("p50_ms", "p99_ms"):
        ours = dig(w1, "burst", "sent_to_completed", name)
        theirs = dig(celery, "w1", "send_to_result_stored", name)
        rows.append(
            ["", f"burst sent→done {name[:3]}, ms (Celery)", ours, theirs, ratio(ours, theirs)]
        )
    # CPU-ms per task is CPU-s per 1,000 tasks: the same number.
    ours_cpu = w1.get("cpu_ms_per_task") or total_cpu_per_1000(dig(w1, "processes"))
    theirs_cpu = dig(celery, "w1", "cpu_s_per_1000_tasks_all")
    rows.append(
        [
            "",
            "CPU-ms per task, all processes",
            ours_cpu,
            theirs_cpu,
            ratio(ours_cpu, theirs_cpu),
        ]
    )
    commands = w1.get("commands") or {}
    rows.append(
        [
            "",
            "MongoDB commands per task (reads / writes / other)",
            commands.get("commands_per_task")
            and f"{commands.get('commands_per_task')} ({commands.get('reads_per_task')} / "
            f"{commands.get('writes_per_task')} / {commands.get('other_per_task')})",
            "",
            "",
        ]
    )
    rows.append(
        [
            "",
            "RabbitMQ messages published per task",
            commands.get("rabbitmq_messages_per_task"),
            "",
            "",
        ]
    )
    rows.append(
        [
            "",
            "ramp: highest rate with pending→claimed p99 < 100 ms",
            dig(w1, "ramp", "highest_rate_within_limit"),
            "",
            "",
        ]
    )
    for w, run in (dig(results, "w2", "per_w") or {}).items():
        latency = run.get("claim_after_create_returned") or {}
        once = run.get("exactly_once") or {}
        rows.append(
            [
                "W2" if w == "1" else "",
                f"claim latency W={w}, p50 / p99 ms",
                f"{latency.get('p50_ms')} / {latency.get('p99_ms')}",
                f"exactly once: {once.get('claimed_once')}/{once.get('injected')}",
                "",
            ]
        )
    w3 = results.get("w3") or {}
    rows.append(
        [
            "W3",
            f"fan-out {dig(w3, 'fan_out', 'size')}: root done → all pending, s",
            dig(w3, "fan_out", "seconds"),
            "target < 3",
            "",
        ]
    )
    floor = dig(w3, "fan_out_floor", "sum_s")
    rows.append(
        [
            "",
            "  floor: the same reads, writes and publishes on the raw servers, s",
            "",
            floor,
            ratio(dig(w3, "fan_out", "seconds"), floor),
        ]
    )
    hop = dig(w3, "fan_in", "last_hop_ms")
    celery_hop = dig(celery, "w3", "last_header_stored_to_callback_started_ms")
    rows.append(
        [
            "",
            f"fan-in {dig(w3, 'fan_in', 'size')}: last done → sink pending, ms (Celery chord)",
            hop,
            celery_hop,
            ratio(hop, celery_hop),
        ]
    )
    rows.append(
        [
            "",
            "  the same, from reportCompleted sent, ms",
            dig(w3, "fan_in", "last_hop_from_report_sent_ms"),
            "",
            "",
        ]
    )
    burst = dig(w3, "fan_in", "burst_completions_per_s")
    celery_burst = dig(celery, "w3", "header_tasks_per_s")
    rows.append(
        [
            "",
            "fan-in: dependencies completed per s (Celery chord header)",
            burst,
            celery_burst,
            ratio(burst, celery_burst),
        ]
    )
    rows.append(
        [
            "",
            f"chain {dig(w3, 'chain', 'depth')}: hop p50 / p99, ms",
            f"{dig(w3, 'chain', 'hop', 'p50_ms')} / {dig(w3, 'chain', 'hop', 'p99_ms')}",
            "target p50 < 50",
            "",
        ]
    )
    w4 = results.get("w4") or {}
    for key, label in (("expiry_late", "claim expiry"), ("deadline_late", "deadline")):
        rows.append(
            [
                "W4" if key == "expiry_late" else "",
                f"{label}: late p50 / p99 / max, ms ({dig(w4, 'claims_held')} claims held)",
                f"{dig(w4, key, 'p50_ms')} / {dig(w4, key, 'p99_ms')} / {dig(w4, key, 'max_ms')}",
                "target p99 < 1000",
                "",
            ]
        )
    w5 = dig(results, "w5", "rounds", 0) or {}
    rows.append(
        [
            "W5",
            f"spike of {w5.get('tasks')} on a docker pool (max {w5.get('max_capacity')}): "
            "first claim / full capacity, s",
            f"{w5.get('first_task_claimed_s')} / {w5.get('full_capacity_running_s')}",
            "",
            "",
        ]
    )
    for level in dig(results, "w6", "levels") or []:
        rows.append(
            [
                "W6" if level is dig(results, "w6", "levels", 0) else "",
                f"{level['depth']:,} pending: claim p50 one queue / spread, ms",
                f"{dig(level, 'one_queue', 'claim_after_create_returned', 'p50_ms')} / "
                f"{dig(level, 'spread', 'claim_after_create_returned', 'p50_ms')}",
                f"createTask p50 {dig(level, 'one_queue', 'create_task', 'p50_ms')}",
                "",
            ]
        )
    return rows


def ran(results: dict[str, Any], rows: list[list[Any]]) -> list[list[Any]]:
    """Only the rows of workloads that ran (a row with an empty first cell belongs to the
    workload named above it)."""
    kept, section = [], ""
    for row in rows:
        section = row[0] or section
        if section.lower() in results:
            kept.append(row)
    return kept


def total_cpu_per_1000(processes: dict[str, Any] | None) -> float | None:
    if not processes:
        return None
    values = [p.get("cpu_s_per_1000_tasks") for p in processes.values()]
    known = [v for v in values if isinstance(v, int | float)]
    return round(sum(known), 3) if known else None


def process_rows(results: dict[str, Any]) -> list[list[Any]]:
    """[workload, process, CPU s, CPU-ms per task, MongoDB commands per task, peak RSS]."""
    rows = []
    for workload in ("w1", "w3", "w4"):
        processes = dig(results, workload, "processes") or {}
        for label, usage in processes.items():
            rows.append(
                [
                    workload.upper(),
                    label,
                    usage.get("cpu_s"),
                    usage.get("cpu_s_per_1000_tasks"),
                    dig(results, workload, "commands", "by_process", label),
                    usage.get("peak_rss_mb"),
                ]
            )
    for label, usage in (dig(results, "peer", "w1", "processes") or {}).items():
        rows.append(
            [
                "Celery W1",
                label,
                usage.get("cpu_s"),
                usage.get("cpu_s_per_1000_tasks"),
                None,
                usage.get("peak_rss_mb"),
            ]
        )
    return rows


def draw(results: dict[str, Any], directory: Path) -> list[Path]:
    """One PNG per workload that produced numbers."""
    drawn: list[Path] = []
    celery = results.get("peer") or {}
    ceiling = results.get("ceilings_derived") or {}
    w1 = results.get("w1") or {}
    if dig(w1, "burst", "tasks_per_s"):
        drawn.append(
            charts.bar_chart(
                directory / "w1_throughput.png",
                f"W1 no-op burst of {dig(w1, 'burst', 'tasks'):,} tasks: tasks/s",
                {
                    "tasks/s": {
                        "Flotilla": dig(w1, "burst", "tasks_per_s"),
                        "Celery": dig(celery, "w1", "tasks_per_s"),
                        "ceiling (MongoDB)": ceiling.get("mongo_tasks_per_s"),
                        "ceiling (RabbitMQ)": ceiling.get("rabbitmq_tasks_per_s"),
                    }
                },
                ylabel="tasks per second",
                log_scale=True,
            )
        )
        drawn.append(
            charts.percentile_chart(
                directory / "w1_latency.png",
                "W1 burst: sent → completed (Celery: sent → result stored)",
                {
                    "Flotilla": dig(w1, "burst", "sent_to_completed") or {},
                    "Celery": dig(celery, "w1", "send_to_result_stored") or {},
                },
            )
        )
    steps = dig(w1, "ramp", "steps") or []
    if steps:
        drawn.append(
            charts.line_chart(
                directory / "w1_ramp.png",
                "W1 open-loop ramp: pending → claimed",
                {
                    f"{p}": {
                        s["offered_per_s"]: dig(s, "pending_to_claimed", f"{p}_ms") for s in steps
                    }
                    for p in ("p50", "p99")
                },
                xlabel="arrivals per second",
                ylabel="ms",
                log_y=True,
            )
        )
    per_w = dig(results, "w2", "per_w") or {}
    if per_w:
        drawn.append(
            charts.percentile_chart(
                directory / "w2_claim_latency.png",
                "W2 claim latency: createTask returned → claimWork returned",
                {
                    f"W={w}": run.get("claim_after_create_returned") or {}
                    for w, run in per_w.items()
                },
            )
        )
    w3 = results.get("w3") or {}
    if w3.get("fan_in") or w3.get("chain"):
        drawn.append(
            charts.bar_chart(
                directory / "w3_dependencies.png",
                "W3 dependencies: hops, ms",
                {
                    "chain hop p50": {"Flotilla": dig(w3, "chain", "hop", "p50_ms"), "target": 50},
                    "fan-in last hop": {
                        "Flotilla": dig(w3, "fan_in", "last_hop_ms"),
                        "target": 50,
                        "Celery": dig(celery, "w3", "last_header_stored_to_callback_started_ms"),
                    },
                    "fan-out, all pending": {
                        "Flotilla": _ms(dig(w3, "fan_out", "seconds")),
                        "target": 3000,
                    },
                },
                ylabel="ms",
                log_scale=True,
            )
        )
    w4 = results.get("w4") or {}
    if w4.get("expiry_late"):
        drawn.append(
            charts.percentile_chart(
                directory / "w4_precision.png",
                f"W4 lateness with {w4.get('claims_held')} claims held",
                {
                    "claim expiry": w4.get("expiry_late") or {},
                    "deadline": w4.get("deadline_late") or {},
                },
            )
        )
    w5 = dig(results, "w5", "rounds", 0)
    if w5:
        drawn.append(
            charts.bar_chart(
                directory / "w5_provisioner.png",
                f"W5 provisioner: spike of {w5.get('tasks')} on an empty docker pool "
                f"(max {w5.get('max_capacity')})",
                {
                    "first launch": {"seconds": w5.get("first_worker_launched_s")},
                    "first claim": {"seconds": w5.get("first_task_claimed_s")},
                    "all workers up": {"seconds": w5.get("all_workers_up_s")},
                    "full capacity": {"seconds": w5.get("full_capacity_running_s")},
                },
                ylabel="seconds after the spike",
            )
        )
    levels = dig(results, "w6", "levels") or []
    if levels:
        series = {
            "claimWork p50, one queue": ("one_queue", "claim_after_create_returned"),
            "claimWork p50, spread": ("spread", "claim_after_create_returned"),
            "createTask p50, one queue": ("one_queue", "create_task"),
        }
        drawn.append(
            charts.line_chart(
                directory / "w6_depth.png",
                "W6 latency against pending tasks",
                {
                    label: {lvl["depth"]: dig(lvl, part, key, "p50_ms") for lvl in levels}
                    for label, (part, key) in series.items()
                },
                xlabel="pending tasks",
                ylabel="ms",
                log_x=True,
            )
        )
    return drawn


def _ms(seconds: Any) -> float | None:
    return seconds * 1000 if isinstance(seconds, int | float) else None


def _fmt(rows: Iterable[list[Any]]) -> list[list[Any]]:
    return [["-" if cell is None else cell for cell in row] for row in rows]


def finish(results: dict[str, Any], directory: Path) -> None:
    results["ceilings_derived"] = ceilings(results)
    directory.mkdir(parents=True, exist_ok=True)
    latest = directory / "latest.json"
    latest.write_text(json.dumps(results, indent=2, default=str) + "\n")
    machine = results.get("machine") or {}
    print_table(
        f"Flotilla benchmark suite ({results.get('profile')} profile; {machine.get('cpus')} cores, "
        f"{machine.get('memory_gb')} GB; total {results.get('total_seconds')} s)",
        ["", "measure", "Flotilla", "peer / ceiling", "ratio"],
        _fmt(ran(results, summary_rows(results))),
    )
    print_table(
        "CPU, MongoDB commands and peak RSS per process",
        ["workload", "process", "CPU s", "CPU ms / task", "commands / task", "peak RSS MB"],
        _fmt(process_rows(results)),
    )
    try:
        drawn = draw(results, directory)
    except ImportError as exc:  # matplotlib is a bench extra; the numbers stand without it
        print(f"charts skipped: {exc}")
        drawn = []
    print(f"\nwrote {latest}" + "".join(f"\n      {path}" for path in drawn))
