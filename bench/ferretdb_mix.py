"""Server CPU per command of FerretDB builds and settings, on a fixed task-shaped command mix.

Used to decide which FerretDB tuning pays (deploy/ferretdb/README.md quotes its numbers).
Each variant is a binary plus environment (e.g. GOGC=200). Rounds run the variants in turn
(A B C A B C ...), each on a fresh FerretDB of its own on a spare port with a fresh data
directory, so drift in the shared machine's load spreads over all of them; the report is
the median over rounds of the server's CPU time (utime + stime from /proc/<pid>/stat)
divided by the commands sent.

The mix, per simulated task (sent one at a time by one PyMongo client, as a service does):
insert of a ~1 KB document, find by _id, conditional update_one by _id + version with a
$set of a ~1 KB runs array, an $unset, and an $inc upsert on a counter document.

    python -m bench.ferretdb_mix --port 27117 --tasks 5000 --rounds 3 \\
        base=/tmp/a/flotilla-ferretdb gogc200=/tmp/a/flotilla-ferretdb@GOGC=200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pymongo import MongoClient

COMMANDS_PER_TASK = 5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Variant:
    name: str
    binary: str
    env: dict[str, str] = field(default_factory=dict)


def parse_variant(text: str) -> Variant:
    """`name=/path/to/binary[@VAR=value[,VAR=value...]]`."""
    name, _, rest = text.partition("=")
    binary, _, env_text = rest.partition("@")
    env = dict(item.split("=", 1) for item in env_text.split(",") if item)
    if not name or not binary:
        raise argparse.ArgumentTypeError(f"bad variant {text!r}: want name=binary[@VAR=v,...]")
    return Variant(name, binary, env)


def cpu_ms(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) * 1000 / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"FerretDB exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"FerretDB did not listen on {port}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_mix(client: MongoClient, tasks: int, prefix: str) -> None:
    collection = client["mix"]["tasks"]
    counters = client["mix"]["counters"]
    payload = "x" * 900
    runs = [
        {
            "runId": n,
            "state": "completed",
            "reasonCreated": "scheduled",
            "workerGroup": "group-" + "g" * 40,
            "workerId": "worker-" + "w" * 40,
            "scheduled": "2026-12-02T11:00:00.000Z",
            "started": "2026-12-02T11:00:01.000Z",
        }
        for n in range(4)
    ]
    for n in range(tasks):
        task_id = f"{prefix}-{n}"
        collection.insert_one(
            {
                "_id": task_id,
                "version": 0,
                "payload": payload,
                "outbox": [{"event": "task-pending", "body": "y" * 200}],
            }
        )
        collection.find_one({"_id": task_id})
        collection.update_one(
            {"_id": task_id, "version": 0}, {"$set": {"runs": runs, "version": 1}}
        )
        collection.update_one({"_id": task_id}, {"$unset": {"outbox": ""}})
        counters.update_one({"_id": f"group-{n % 50}"}, {"$inc": {"n": 1}}, upsert=True)


def measure(variant: Variant, port: int, tasks: int, round_no: int) -> dict[str, float]:
    data = tempfile.mkdtemp(prefix="ferretdb-mix-")
    env = {**os.environ, **variant.env}
    process = subprocess.Popen(
        [variant.binary, "-listen", f"127.0.0.1:{port}", "-data-dir", data],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, process)
        client: MongoClient = MongoClient(f"mongodb://127.0.0.1:{port}/", directConnection=True)
        # Warm up: create the database, the collections and the connection pool first.
        run_mix(client, 200, f"warm{round_no}")
        before_cpu, before_wall = cpu_ms(process.pid), time.monotonic()
        run_mix(client, tasks, f"r{round_no}")
        spent = cpu_ms(process.pid) - before_cpu
        wall = time.monotonic() - before_wall
        client.close()
        commands = tasks * COMMANDS_PER_TASK
        return {
            "cpu_ms_per_command": spent / commands,
            "wall_ms_per_command": wall * 1000 / commands,
            "peak_rss_mb": peak_rss_mb(process.pid),
        }
    finally:
        stop(process)
        shutil.rmtree(data, ignore_errors=True)


def paired(variants: list[Variant], port: int, tasks: int, rounds: int) -> dict[str, Any]:
    """Each variant runs at the same time as the first (the baseline), on its own port, so
    both see the same load from the rest of the machine; the figure is the median over
    rounds of variant CPU / baseline CPU."""
    baseline, others = variants[0], variants[1:]
    ratios: dict[str, list[float]] = {v.name: [] for v in others}
    for round_no in range(rounds):
        for variant in others:
            with ThreadPoolExecutor(2) as pool:
                base_run = pool.submit(measure, baseline, port, tasks, round_no)
                other_run = pool.submit(measure, variant, port + 1, tasks, round_no)
                base, other = base_run.result(), other_run.result()
            ratio = other["cpu_ms_per_command"] / base["cpu_ms_per_command"]
            ratios[variant.name].append(ratio)
            print(
                json.dumps(
                    {
                        "round": round_no,
                        "variant": variant.name,
                        "ratio": round(ratio, 4),
                        "base_cpu_ms": round(base["cpu_ms_per_command"], 4),
                        "cpu_ms": round(other["cpu_ms_per_command"], 4),
                        "peak_rss_mb": round(other["peak_rss_mb"], 1),
                    }
                ),
                flush=True,
            )
    return {
        name: {"median_ratio": round(statistics.median(r), 3), "ratios": [round(x, 3) for x in r]}
        for name, r in ratios.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="+", type=parse_variant)
    parser.add_argument("--port", type=int, default=27117, help="a spare port (not 27017)")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--paired",
        action="store_true",
        help="run each variant alongside the first one (uses --port and --port + 1)",
    )
    args = parser.parse_args()
    if args.paired:
        result = paired(args.variants, args.port, args.tasks, args.rounds)
        print(json.dumps({"paired": result}, indent=1))
        return

    samples: dict[str, list[dict[str, float]]] = {v.name: [] for v in args.variants}
    for round_no in range(args.rounds):
        for variant in args.variants:
            result = measure(variant, args.port, args.tasks, round_no)
            samples[variant.name].append(result)
            print(json.dumps({"round": round_no, "variant": variant.name, **result}), flush=True)
    summary = {
        name: {
            key: round(statistics.median(s[key] for s in runs), 4)
            for key in ("cpu_ms_per_command", "wall_ms_per_command", "peak_rss_mb")
        }
        | {"cpu_ms_per_command_all": [round(s["cpu_ms_per_command"], 4) for s in runs]}
        for name, runs in samples.items()
    }
    print(json.dumps({"median": summary}, indent=1))


if __name__ == "__main__":
    main()
