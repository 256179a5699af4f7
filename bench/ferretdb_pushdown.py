"""What one listTaskGroup page and a whole group listing cost FerretDB builds, on one data set.

Used for deploy/ferretdb/sqlite-index-pushdown.patch (deploy/ferretdb/README.md quotes its
numbers). Each variant (a FerretDB binary) gets a fresh server on its own port and data
directory, the declared indexes (shared.db.INDEXES) and the same task documents
(shared.taskstore.to_document, ~1.5 KB each): --groups groups of --group-size tasks
(default 10 x 5,000 = 50,000). Then, in rounds, the variants run the same queries one
after another (A B A B ...), so drift in the shared machine's load spreads over all of
them, and the report is the median over rounds of each variant's time and server CPU
(utime + stime from /proc/<pid>/stat) divided by the first variant's:

- `first_page`: listTaskGroup's query for its first page, as the queue sends it
  (`find({taskGroupId}).sort(_id).limit(1001)`), read to the end;
- `listing`: the whole group a page at a time (`_id > last` after the first), which is
  what the web console's group view asks for;
- `count`: `count_documents({taskGroupId})`.

    python -m bench.ferretdb_pushdown --port 27117 --rounds 5 \\
        old=/tmp/fdb-old/bin/flotilla-ferretdb new=/tmp/fdb-new/bin/flotilla-ferretdb
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection

from bench.ferretdb_mix import Variant, cpu_ms, parse_variant, stop, wait_port
from shared.db import INDEXES
from shared.models import TaskDefinition
from shared.taskstore import TASKS, to_document
from shared.timeutil import format_ts
from shared.transitions import TaskRecord

PAGE = 1000  # listTaskGroup's largest page (shared.paging.MAX_LIMIT)
INSERT_BATCH = 500


@dataclass
class Server:
    variant: Variant
    process: subprocess.Popen[bytes]
    client: MongoClient

    @property
    def tasks(self) -> Collection:
        return self.client["pushdown"][TASKS]


@contextmanager
def server(variant: Variant, port: int) -> Iterator[Server]:
    data = tempfile.mkdtemp(prefix="ferretdb-pushdown-")
    process = subprocess.Popen(
        [variant.binary, "-listen", f"127.0.0.1:{port}", "-data-dir", data],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client: MongoClient = MongoClient(f"mongodb://127.0.0.1:{port}/", directConnection=True)
    try:
        wait_port(port, process)
        yield Server(variant, process, client)
    finally:
        client.close()
        stop(process)
        shutil.rmtree(data, ignore_errors=True)


def slugid(rng: random.Random) -> str:
    """A v4 slugid (shared.ids.slugid's form) from a seeded generator: same data every run."""
    raw = bytearray(uuid.UUID(bytes=rng.randbytes(16), version=4).bytes)
    raw[0] &= 0x7F
    return base64.urlsafe_b64encode(bytes(raw)).decode("ascii")[:22]


def task_documents(groups: int, group_size: int, seed: int = 7) -> tuple[list[str], list[Any]]:
    """Group ids and every task document, interleaved across groups as a busy queue is."""
    rng = random.Random(seed)
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    group_ids = [slugid(rng) for _ in range(groups)]
    documents = []
    for n in range(group_size):
        for group_id in group_ids:
            definition = TaskDefinition.model_validate(
                {
                    "provisionerId": "proj-ci",
                    "workerType": f"linux-{n % 7}",
                    "schedulerId": "taskcluster-github",
                    "taskGroupId": group_id,
                    "routes": [f"index.project.ci.{group_id}.{n}"],
                    "priority": "low",
                    "retries": 5,
                    "created": format_ts(now),
                    "deadline": format_ts(now + timedelta(days=1)),
                    "expires": format_ts(now + timedelta(days=30)),
                    "payload": {
                        "image": "ubuntu:24.04",
                        "command": ["/bin/bash", "-c", f"make -j4 test SHARD={n} " + "x" * 300],
                        "env": {f"VAR_{k}": "v" * 20 for k in range(10)},
                        "maxRunTime": 3600,
                    },
                    "metadata": {
                        "name": f"test shard {n}",
                        "description": "a test shard " + "d" * 100,
                        "owner": "ci@example.com",
                        "source": "https://example.com/ci",
                    },
                    "tags": {"kind": "test"},
                }
            )
            documents.append(to_document(TaskRecord.new(slugid(rng), definition)))
    return group_ids, documents


def load(target: Server, documents: list[Any]) -> None:
    for collection, models in INDEXES.items():
        for model in models:
            target.client["pushdown"][collection].create_indexes([model])
    for start in range(0, len(documents), INSERT_BATCH):
        target.tasks.insert_many(documents[start : start + INSERT_BATCH], ordered=False)


def page(tasks: Collection, group_id: str, after: str | None) -> list[Any]:
    query: dict[str, Any] = {"taskGroupId": group_id}
    if after is not None:
        query["_id"] = {"$gt": after}
    return list(tasks.find(query).sort("_id", ASCENDING).limit(PAGE + 1))


def listing(tasks: Collection, group_id: str) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        records = page(tasks, group_id, after)
        ids.extend(d["_id"] for d in records[:PAGE])
        if len(records) <= PAGE:
            return ids
        after = ids[-1]


def measure(target: Server, work: Callable[[Collection], Any]) -> tuple[float, float, Any]:
    cpu, wall = cpu_ms(target.process.pid), time.monotonic()
    result = work(target.tasks)
    return (time.monotonic() - wall) * 1000, cpu_ms(target.process.pid) - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "variants", nargs="+", type=parse_variant, help="name=binary; first is base"
    )
    parser.add_argument("--port", type=int, default=27117, help="first of spare ports (not 27017)")
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--group-size", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    group_ids, documents = task_documents(args.groups, args.group_size)
    group = group_ids[len(group_ids) // 2]
    expected = sorted(d["_id"] for d in documents if d["taskGroupId"] == group)
    work: dict[str, Callable[[Collection], Any]] = {
        "first_page": lambda tasks: [d["_id"] for d in page(tasks, group, None)],
        "listing": lambda tasks: listing(tasks, group),
        "count": lambda tasks: tasks.count_documents({"taskGroupId": group}),
    }
    checks = {"first_page": expected[: PAGE + 1], "listing": expected, "count": len(expected)}

    with ExitStack() as stack:
        servers = [
            stack.enter_context(server(v, args.port + i)) for i, v in enumerate(args.variants)
        ]
        for target in servers:
            began = time.monotonic()
            load(target, documents)
            print(
                f"{target.variant.name}: loaded {len(documents)} tasks in "
                f"{time.monotonic() - began:.0f} s",
                flush=True,
            )
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for round_no in range(args.rounds):
            for name, job in work.items():
                for target in servers:
                    wall_ms, cpu, result = measure(target, job)
                    if result != checks[name]:
                        raise SystemExit(f"{target.variant.name} {name}: wrong result")
                    samples.setdefault((name, target.variant.name), []).append((wall_ms, cpu))
                    print(
                        json.dumps(
                            {
                                "round": round_no,
                                "query": name,
                                "variant": target.variant.name,
                                "wall_ms": round(wall_ms, 1),
                                "cpu_ms": round(cpu, 1),
                            }
                        ),
                        flush=True,
                    )

    base = args.variants[0].name
    summary: dict[str, Any] = {}
    for name in work:
        for variant in args.variants:
            runs = samples[(name, variant.name)]
            bases = samples[(name, base)]
            summary[f"{name}/{variant.name}"] = {
                "wall_ms_median": round(statistics.median(w for w, _ in runs), 1),
                "cpu_ms_median": round(statistics.median(c for _, c in runs), 1),
                # per round, this variant over the base (run back to back in that round)
                "wall_ratio_median": round(
                    statistics.median(w / bw for (w, _), (bw, _) in zip(runs, bases, strict=True)),
                    4,
                ),
                "cpu_ratio_median": round(
                    statistics.median(
                        c / max(bc, 1) for (_, c), (_, bc) in zip(runs, bases, strict=True)
                    ),
                    4,
                ),
            }
    print(json.dumps({"summary": summary}, indent=1))


if __name__ == "__main__":
    main()
