"""MongoDB commands and RabbitMQ operations per task, from the files the services write when
FLOTILLA_COMMAND_STATS_DIR is set (shared.commandstats).

The suite snapshots the directory before and after a workload's measured window and
divides the difference, summed over the workload's Flotilla processes, by the tasks. The
benchmark's own clients (seeding, the bench workers' bookkeeping) are counted apart and
left out of the per-task figures.

Counting has a small cost, which the same run's CPU figures include: PyMongo builds an
event per command for the listener, measured at ~0.025 client CPU-ms per command (about
4 % of a find_one's client cost; ~1 ms per task at ~40 commands).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shared import commandstats

# Services write every FLUSH_S; waiting a few flushes makes a snapshot whole.
SETTLE_S = commandstats.FLUSH_S * 3

# How the counts are summed in reports: writes change documents, reads fetch them; the
# rest (index creation, handshakes, server status, session ends) is "other".
WRITES = frozenset({"insert", "update", "delete", "findAndModify"})
READS = frozenset({"find", "getMore", "aggregate", "count", "distinct"})


def kind(command_name: str) -> str:
    if command_name in WRITES:
        return "writes"
    if command_name in READS:
        return "reads"
    return "other"


Snapshot = dict[int, dict[str, Any]]  # pid -> the process's file


def read(directory: Path) -> Snapshot:
    found: Snapshot = {}
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):  # replaced atomically, but a file may vanish
            continue
        found[int(data["pid"])] = data
    return found


def settled(directory: Path) -> Snapshot:
    """A snapshot taken once every process has flushed what it did until now."""
    time.sleep(SETTLE_S)
    return read(directory)


def difference(before: Snapshot, after: Snapshot, pids: Iterable[int]) -> dict[str, Any]:
    """Per process (by its name): commands and AMQP operations between the snapshots. A
    process absent from `before` started inside the window and counts from zero."""
    result: dict[str, Any] = {}
    for pid in pids:
        if pid not in after:
            continue
        then = before.get(pid, {})
        name = after[pid]["process"]
        result[name] = {
            part: dict(Counter(after[pid].get(part, {})) - Counter(then.get(part, {})))
            for part in ("commands", "failed", "amqp")
        }
    return result


def per_task(by_process: Mapping[str, Any], tasks: int) -> dict[str, Any]:
    """The figures the report quotes: commands per task (reads, writes and other
    separately), per command name, per process, and AMQP operations per task."""
    if tasks <= 0:
        return {}
    commands: Counter[str] = Counter()
    amqp: Counter[str] = Counter()
    for counts in by_process.values():
        commands.update(counts.get("commands", {}))
        amqp.update(counts.get("amqp", {}))
    kinds: Counter[str] = Counter()
    for name, n in commands.items():
        kinds[kind(name)] += n

    def rate(n: float) -> float:
        return round(n / tasks, 2)

    return {
        "tasks": tasks,
        "commands_per_task": rate(sum(commands.values())),
        "reads_per_task": rate(kinds["reads"]),
        "writes_per_task": rate(kinds["writes"]),
        "other_per_task": rate(kinds["other"]),
        "by_command": {name: rate(n) for name, n in commands.most_common()},
        "by_process": {
            process: rate(sum(counts.get("commands", {}).values()))
            for process, counts in by_process.items()
        },
        "rabbitmq_messages_per_task": rate(amqp["publish"]),
        "amqp_per_task": {name: rate(n) for name, n in sorted(amqp.items())},
    }
