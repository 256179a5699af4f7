"""Queue service benchmarks over the HTTP API (official client), each next to a ceiling.

Absolute times are noisy on a small box, so every number is printed next to a ceiling
measured in the same run:

1. ceilings: raw MongoDB-protocol write rates (pymongo's AsyncMongoClient on a scratch
   collection of 10k documents, dropped afterwards) and RabbitMQ's rate of persistent,
   publisher-confirmed publishes (aio-pika, a scratch exchange deleted afterwards);
2. claim latency: W = 1, 10, 100 workers long-polling claimWork, tasks injected one at a
   time (the next once the claimer has completed its task and is polling again), with an
   exactly-once check of the claims;
3. no-op throughput: N tasks created at concurrency 16 while K workers drain them
   (claimWork tasks=8, reportCompleted with each claim's temporary credentials), next to
   fau_rate_at_8 / writes_per_task, the writes counted on the server
   (serverStatus.metrics.commands: FerretDB has no opcounters);
4. depth: claim and createTask latency with 1k / 10k tasks pending in other task queues
   (one waiting worker) and in the same task queue (backlog priority lowest, the probe
   highest, claimWork sent as soon as createTask returns: with a non-empty queue no worker
   can be waiting). The fills share what is left of --budget-s (each at most
   --fill-limit-s) and the depth reached is reported.

Each part starts its own `python -m services.queue` on a free port with a fresh database
(bench_<uuid>) and drops that database afterwards, even on failure. Results go to
bench/results/queue.json; the queue logs stay in a temporary directory that is printed.

    .venv/bin/python -m bench queue [--tasks 500] [--samples 100] [--only claim,depth]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pymongo
import taskcluster
import taskcluster.aio
from pymongo import AsyncMongoClient

from shared.config import load_settings

RESULTS = Path(__file__).parent / "results" / "queue.json"
REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("ceilings", "claim", "throughput", "depth")
WRITE_COMMANDS = ("insert", "update", "delete", "findAndModify")
CODE_READING_WRITES_PER_TASK = 10  # fallback when the server does not count commands
MEASUREMENT_RESERVE_S = 8.0  # kept back from the depth fills for each depth measured
MIN_FILL_S = 10.0
ASSUMED_CREATES_PER_S = 70.0  # until the first depth fill has shown the real rate
now = time.perf_counter


def progress(message: str) -> None:
    print(f"  .. {message}", flush=True)


# --- statistics and tables ----------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    out: dict[str, Any] = {"n": len(ms)}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        value = percentile(ms, q)
        out[f"{name}_ms"] = None if value is None else round(value, 2)
    out["min_ms"] = round(min(ms), 2) if ms else None
    out["max_ms"] = round(max(ms), 2) if ms else None
    return out


def raw_ms(seconds: list[float]) -> list[float]:
    return [round(s * 1000, 3) for s in seconds]


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(title: str, headers: list[str], rows: Iterable[Iterable[Any]]) -> None:
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    print(f"\n{title}")
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    print(line)
    print("-" * len(line))
    for row in cells:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


# --- a queue process of our own -------------------------------------------------------------


@dataclass
class QueueService:
    root_url: str
    client_id: str
    access_token: str
    database: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    errors: Counter[str] = field(default_factory=Counter)
    killed: bool = False  # did not exit within STOP_GRACE_S of SIGTERM
    stop_s: float | None = None
    # Other services started on the same database (bench_graphs.platform): name -> pid.
    companions: dict[str, int] = field(default_factory=dict)

    def pids(self) -> dict[str, int]:
        """The Flotilla processes serving this benchmark, for CPU and memory accounting."""
        own = {"queue": self.process.pid} if self.process is not None else {}
        return {**own, **self.companions}

    def options(self, credentials: dict[str, Any] | None = None) -> dict[str, Any]:
        creds = credentials or {"clientId": self.client_id, "accessToken": self.access_token}
        return {"rootUrl": self.root_url, "credentials": creds, "maxRetries": 0}

    def client(
        self, session: aiohttp.ClientSession, credentials: dict[str, Any] | None = None
    ) -> taskcluster.aio.Queue:
        return taskcluster.aio.Queue(self.options(credentials), session=session)

    async def call(self, name: str, request: Awaitable[Any]) -> Any:
        """Await one API call; count failures by endpoint and status instead of raising."""
        try:
            return await request
        except asyncio.CancelledError:
            raise
        except taskcluster.exceptions.TaskclusterRestFailure as exc:
            self.errors[f"{name}: HTTP {exc.status_code}"] += 1
        except Exception as exc:
            self.errors[f"{name}: {type(exc).__name__}: {str(exc)[:80]}"] += 1
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(service: QueueService, port: int) -> None:
    env = {
        **os.environ,
        "FLOTILLA_QUEUE_PORT": str(port),
        "FLOTILLA_ROOT_URL": service.root_url,
        "FLOTILLA_ROOT_ACCESS_TOKEN": service.access_token,
        "FLOTILLA_MONGO_DB": service.database,
        "FLOTILLA_CLAIM_TIMEOUT": os.environ.get("FLOTILLA_CLAIM_TIMEOUT", "1200"),
        # as bench_graphs.platform's resolver: the queue declares the resolver's queue too
        "FLOTILLA_RESOLVER_QUEUE_EXPIRES": "60",
    }
    with service.log_path.open("wb") as log_file:
        service.process = subprocess.Popen(
            [sys.executable, "-m", "services.queue"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    deadline = time.monotonic() + 30
    url = f"{service.root_url}/api/queue/v1/ping"
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            tail = service.log_path.read_text()[-1500:]
            raise RuntimeError(f"queue exited with {service.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"queue did not answer {url} within 30 s")


def _wait_for_infrastructure(settings: Any, timeout_s: float = 90) -> None:
    """Both servers accept connections (another session may be restarting them)."""
    from urllib.parse import urlsplit

    deadline = time.monotonic() + timeout_s
    for url in (settings.mongo_url, settings.amqp_url):
        parts = urlsplit(url)
        while True:
            try:
                with socket.create_connection((parts.hostname, parts.port), timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{parts.hostname}:{parts.port} unreachable") from None
                progress(f"waiting for {parts.hostname}:{parts.port}")
                time.sleep(2)


STOP_GRACE_S = 5.0


def _stop(service: QueueService) -> None:
    """SIGTERM, then SIGKILL after STOP_GRACE_S: on SIGTERM the queue waits for open
    claimWork long polls (up to 20 s) even when their clients have gone."""
    process = service.process
    if process is None:
        return
    started = time.monotonic()
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        service.killed = True
    service.stop_s = round(time.monotonic() - started, 2)


def _drop_database(mongo_url: str, name: str) -> None:
    with pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000) as client:
        client.drop_database(name)


def scan_log(path: Path) -> dict[str, Any]:
    """Warnings, errors and tracebacks in the queue's JSON log, grouped by message."""
    found: Counter[str] = Counter()
    examples: dict[str, str] = {}
    lines = 0
    if not path.exists():
        return {"lines": 0, "problems": {}}
    for line in path.read_text(errors="replace").splitlines():
        lines += 1
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line or "Error" in line:
                found[f"(raw) {line[:120]}"] += 1
            continue
        level = str(entry.get("level", ""))
        if level in ("warning", "error", "critical"):
            key = f"{level}: {entry.get('logger')}: {str(entry.get('message'))[:100]}"
            found[key] += 1
            if key not in examples and entry.get("exception"):
                examples[key] = str(entry["exception"])[-600:]
    return {"lines": lines, "problems": dict(found), "exception_tails": examples}


def service_health(service: QueueService) -> dict[str, Any]:
    return {**scan_log(service.log_path), "stop_s": service.stop_s, "killed": service.killed}


@asynccontextmanager
async def queue_service(label: str, log_dir: Path) -> AsyncIterator[QueueService]:
    settings = load_settings()
    port = _free_port()
    database = f"bench_{uuid.uuid4().hex[:12]}"
    service = QueueService(
        root_url=f"http://127.0.0.1:{port}",
        client_id=settings.root_client_id,
        access_token=secrets.token_urlsafe(33)[:44],
        database=database,
        log_path=log_dir / f"queue-{label}.log",
    )
    try:
        await asyncio.to_thread(_wait_for_infrastructure, settings)
        await asyncio.to_thread(_launch, service, port)
        yield service
    finally:
        await asyncio.to_thread(_stop, service)
        await asyncio.to_thread(_drop_database, settings.mongo_url, database)


# --- tasks ----------------------------------------------------------------------------------


def task_definition(task_queue_id: str, priority: str = "lowest") -> dict[str, Any]:
    return {
        "taskQueueId": task_queue_id,
        "created": taskcluster.fromNowJSON("0 seconds"),
        "deadline": taskcluster.fromNowJSON("1 hour"),
        "priority": priority,
        "payload": {"command": ["true"]},
        "metadata": {
            "name": "bench task",
            "description": "made by bench.bench_queue",
            "owner": "bench@example.com",
            "source": "https://example.com/flotilla/bench",
        },
    }


def new_task_queue_id(kind: str) -> str:
    return f"bench-{kind}/wt-{uuid.uuid4().hex[:8]}"


def session_for(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    return taskcluster.aio.createSession(connector=connector)


# --- 1. ceilings ----------------------------------------------------------------------------


async def timed_rate(
    seconds: float, concurrency: int, op: Callable[[int, int], Awaitable[None]]
) -> float:
    """Operations per second of `op(worker, k)` run back to back by `concurrency` workers."""
    counts = [0] * concurrency
    deadline = now() + seconds

    async def worker(w: int) -> None:
        k = 0
        while now() < deadline:
            await op(w, k)
            k += 1
        counts[w] = k

    started = now()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return sum(counts) / (now() - started)


async def mongo_ceilings(mongo_url: str, seconds: float, docs: int) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, maxPoolSize=32)
    name = f"bench_ceiling_{uuid.uuid4().hex[:10]}"
    collection = client[name]["docs"]
    pad = "x" * 400  # documents of ~0.5 KB, between a pending entry and a task

    def doc_id(number: int) -> str:
        # String ids like taskIds: the server answers only string/ObjectId `_id`
        # conditions from its index (an integer _id means a scan of every document).
        return f"doc-{number:08d}-{'s' * 12}"

    results: dict[str, Any] = {"docs_prefilled": docs, "doc_bytes": 450, "seconds": seconds}
    try:
        started = now()
        for first in range(0, docs, 1000):
            batch = range(first, min(first + 1000, docs))
            await collection.insert_many(
                [{"_id": doc_id(i), "n": 0, "version": 0, "pad": pad} for i in batch]
            )
        results["prefill_s"] = round(now() - started, 2)
        versions: dict[int, int] = {}
        misses = Counter[str]()

        async def find_one_and_update(w: int, k: int) -> None:
            await collection.find_one_and_update(
                {"_id": doc_id(random.randrange(docs))}, {"$inc": {"n": 1}}
            )

        def update_op(concurrency: int) -> Callable[[int, int], Awaitable[None]]:
            async def update_versioned(w: int, k: int) -> None:
                # Each worker owns the ids congruent to it, so it knows their versions and
                # every conditional update matches (as an uncontended task update would).
                number = random.randrange(docs // concurrency) * concurrency + w
                version = versions.get(number, 0)
                result = await collection.update_one(
                    {"_id": doc_id(number), "version": version},
                    {"$set": {"state": f"s{k}", "at": k}, "$inc": {"version": 1}},
                )
                if result.matched_count == 1:
                    versions[number] = version + 1
                else:
                    misses["update_one"] += 1

            return update_versioned

        async def insert_one(w: int, k: int) -> None:
            await collection.insert_one({"_id": f"i-{w}-{k}-{uuid.uuid4().hex}", "pad": pad})

        for label, concurrency in (
            ("find_one_and_update $inc", 1),
            ("find_one_and_update $inc", 8),
            ("update_one {_id,version}", 1),
            ("update_one {_id,version}", 8),
            ("insert_one", 1),
            ("insert_one", 8),
        ):
            if label.startswith("find"):
                op = find_one_and_update
            elif label.startswith("update"):
                op = update_op(concurrency)
            else:
                op = insert_one
            progress(f"ceiling mongo {label} c={concurrency}")
            rate = await timed_rate(seconds, concurrency, op)
            results[f"{label} c={concurrency}"] = round(rate, 1)
        results["conditional_update_misses"] = misses["update_one"]
    finally:
        await client.drop_database(name)
        await client.close()
    return results


async def rabbit_ceilings(amqp_url: str, seconds: float) -> dict[str, Any]:
    connection = await aio_pika.connect_robust(amqp_url)
    results: dict[str, Any] = {"seconds": seconds}
    try:
        channel = await connection.channel(publisher_confirms=True)
        name = f"bench-ceiling-{uuid.uuid4().hex[:10]}"
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
        body = json.dumps(
            {"status": {"taskId": "x" * 22, "runs": [{"runId": 0}] * 4}, "pad": "p" * 900},
            separators=(",", ":"),
        ).encode()
        results["body_bytes"] = len(body)
        durable_queue = None
        try:

            async def publish(w: int, k: int) -> None:
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        content_type="application/json",
                    ),
                    routing_key=f"primary.{w}.{k}",
                )

            for concurrency in (1, 16):
                progress(f"ceiling rabbitmq unrouted c={concurrency}")
                rate = await timed_rate(seconds, concurrency, publish)
                results[f"unrouted c={concurrency}"] = round(rate, 1)
            # Also routed into a durable queue: the broker then has to persist each message.
            durable_queue = await channel.declare_queue(f"{name}-q", durable=True)
            await durable_queue.bind(exchange, "#")
            for concurrency in (1, 16):
                progress(f"ceiling rabbitmq to durable queue c={concurrency}")
                rate = await timed_rate(seconds, concurrency, publish)
                results[f"to durable queue c={concurrency}"] = round(rate, 1)
        finally:
            if durable_queue is not None:
                await durable_queue.delete(if_unused=False, if_empty=False)
            await exchange.delete()
    finally:
        await connection.close()
    return results


async def run_ceilings(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    return {
        "mongo": await mongo_ceilings(settings.mongo_url, args.ceiling_seconds, 10_000),
        "rabbitmq": await rabbit_ceilings(settings.amqp_url, args.ceiling_seconds),
    }


# --- 2. claim latency -----------------------------------------------------------------------


@dataclass
class LatencyRun:
    """Tasks injected one at a time into a task queue that has waiting workers."""

    service: QueueService
    queue: taskcluster.aio.Queue
    task_queue_id: str
    claims: dict[str, list[str]] = field(default_factory=dict)
    claimed: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    back: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    injected: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    create_s: list[float] = field(default_factory=list)
    claim_s: list[float] = field(default_factory=list)  # claim returned - create returned
    sent_claim_s: list[float] = field(default_factory=list)  # claim returned - create sent
    missed: int = 0

    async def worker(self, worker_id: str) -> None:
        request = {"workerGroup": "bench", "workerId": worker_id, "tasks": 1}
        while True:
            result = await self.service.call(
                "claimWork", self.queue.claimWork(self.task_queue_id, request)
            )
            returned = now()
            if result is None:
                await asyncio.sleep(0.2)
                continue
            for claim in result["tasks"]:
                task_id = claim["status"]["taskId"]
                self.claims.setdefault(task_id, []).append(worker_id)
                if task_id not in self.claimed:
                    self.unexpected.append(task_id)
                elif not self.claimed[task_id].done():
                    self.claimed[task_id].set_result(returned)
                await self.service.call(
                    "reportCompleted", self.queue.reportCompleted(task_id, str(claim["runId"]))
                )
                if task_id in self.back and not self.back[task_id].done():
                    self.back[task_id].set_result(now())

    async def inject(self, priority: str = "lowest", record: bool = True) -> None:
        loop = asyncio.get_running_loop()
        task_id = taskcluster.slugId()
        self.claimed[task_id] = loop.create_future()
        self.back[task_id] = loop.create_future()
        definition = task_definition(self.task_queue_id, priority)
        sent = now()
        created = await self.service.call("createTask", self.queue.createTask(task_id, definition))
        returned = now()
        if created is None:
            return
        self.injected.append(task_id)
        try:
            claimed = await asyncio.wait_for(self.claimed[task_id], 30)
            # The claimer completes it and polls again before the next task goes in, so
            # every injection meets W waiting workers (a poll needs a moment to register).
            await asyncio.wait_for(self.back[task_id], 30)
            await asyncio.sleep(0.05)
        except TimeoutError:
            self.missed += 1
            return
        if record:
            self.create_s.append(returned - sent)
            self.claim_s.append(claimed - returned)
            self.sent_claim_s.append(claimed - sent)

    def clear_samples(self) -> None:
        for samples in (self.create_s, self.claim_s, self.sent_claim_s, self.injected):
            samples.clear()
        self.missed = 0

    def exactly_once(self) -> dict[str, int]:
        counts = Counter(len(self.claims.get(t, [])) for t in self.injected)
        return {
            "injected": len(self.injected),
            "claimed_once": counts.get(1, 0),
            "never_claimed": counts.get(0, 0),
            "claimed_twice_or_more": sum(v for k, v in counts.items() if k > 1),
            "claims_of_unknown_tasks": len(self.unexpected),
        }

    def summary(self) -> dict[str, Any]:
        slow = sum(1 for s in self.claim_s if s > 1.0)
        return {
            "claim_after_create_returned": summary_ms(self.claim_s),
            "claim_after_create_sent": summary_ms(self.sent_claim_s),
            "create_task": summary_ms(self.create_s),
            "negative_samples": sum(1 for s in self.claim_s if s < 0),
            "samples_over_1s": slow,
            "missed_30s": self.missed,
            "exactly_once": self.exactly_once(),
            "raw_ms": {
                "claim_after_create_returned": raw_ms(self.claim_s),
                "claim_after_create_sent": raw_ms(self.sent_claim_s),
                "create_task": raw_ms(self.create_s),
            },
        }


async def measure_waiting(
    run: LatencyRun, samples: int, label: str, warmup: int = 3, limit_s: float = 60.0
) -> None:
    """Inject warmup + samples tasks one at a time; stop early once limit_s has passed."""
    for _ in range(warmup):
        await run.inject(record=False)
    step = max(1, samples // 4)
    deadline = now() + limit_s
    for i in range(samples):
        await run.inject()
        if (i + 1) % step == 0 or i + 1 == samples:
            progress(f"{label}: {i + 1}/{samples}")
        if now() > deadline:
            progress(f"{label}: stopped at {i + 1}/{samples} after {limit_s:.0f} s")
            return


async def with_workers(
    run: LatencyRun, count: int, body: Callable[[], Awaitable[None]], prefix: str = "w"
) -> None:
    workers = [asyncio.create_task(run.worker(f"{prefix}{i}")) for i in range(count)]
    try:
        # Let every worker's first poll register (each one writes its worker record).
        await asyncio.sleep(1.0 + 0.02 * count)
        await body()
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def run_claim_latency(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"per_w": {}}
    async with queue_service("claim-latency", log_dir) as service:
        results["database"] = service.database
        widths = args.workers
        async with session_for(max(widths) + 20) as session:
            queue = service.client(session)
            for w in widths:
                samples = args.samples
                run = LatencyRun(service, queue, new_task_queue_id(f"w{w}"))
                label = f"claim latency W={w}"
                await with_workers(
                    run, w, lambda r=run, n=samples, s=label: measure_waiting(r, n, s)
                )
                results["per_w"][str(w)] = run.summary()
        results["errors"] = dict(service.errors)
    results["log"] = await asyncio.to_thread(service_health, service)
    return results


# --- 3. no-op throughput --------------------------------------------------------------------


async def server_write_counts(client: AsyncMongoClient[dict[str, Any]]) -> dict[str, int] | None:
    """Write commands served so far, from serverStatus (server-wide, every database)."""
    status = await client.admin.command("serverStatus")
    commands = (status.get("metrics") or {}).get("commands") or {}
    if not commands:
        return None
    return {name: int((commands.get(name) or {}).get("total", 0)) for name in WRITE_COMMANDS}


@dataclass
class DrainRun:
    service: QueueService
    queue: taskcluster.aio.Queue
    session: aiohttp.ClientSession
    task_queue_id: str
    total: int
    sent: dict[str, float] = field(default_factory=dict)
    created: dict[str, float] = field(default_factory=dict)
    completed: dict[str, float] = field(default_factory=dict)
    claims: Counter[str] = field(default_factory=Counter)
    batch_sizes: list[int] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self, worker_id: str) -> None:
        request = {"workerGroup": "bench", "workerId": worker_id, "tasks": 8}
        while True:
            result = await self.service.call(
                "claimWork", self.queue.claimWork(self.task_queue_id, request)
            )
            if result is None:
                await asyncio.sleep(0.2)
                continue
            if result["tasks"]:
                self.batch_sizes.append(len(result["tasks"]))
            await asyncio.gather(*(self.complete(claim) for claim in result["tasks"]))

    async def complete(self, claim: dict[str, Any]) -> None:
        task_id = claim["status"]["taskId"]
        self.claims[task_id] += 1
        # Each run is resolved with the temporary credentials its claim carries.
        worker_queue = self.service.client(self.session, claim["credentials"])
        result = await self.service.call(
            "reportCompleted", worker_queue.reportCompleted(task_id, str(claim["runId"]))
        )
        if result is not None:
            self.completed.setdefault(task_id, now())
            if len(self.completed) >= self.total:
                self.done.set()

    async def create_all(self, concurrency: int) -> None:
        ids = iter([taskcluster.slugId() for _ in range(self.total)])

        async def creator() -> None:
            for task_id in ids:
                definition = task_definition(self.task_queue_id)
                self.sent[task_id] = now()
                if await self.service.call(
                    "createTask", self.queue.createTask(task_id, definition)
                ):
                    self.created[task_id] = now()

        await asyncio.gather(*(creator() for _ in range(concurrency)))

    async def run(
        self, workers: int, concurrency: int, timeout_s: float, label: str, prefix: str
    ) -> None:
        tasks = [asyncio.create_task(self.worker(f"{prefix}-{i}")) for i in range(workers)]
        try:
            await asyncio.sleep(1.0)  # first polls register their worker records

            async def report() -> None:
                while not self.done.is_set():
                    await asyncio.sleep(3)
                    progress(f"{label}: {len(self.created)} created, {len(self.completed)} done")

            reporter = asyncio.create_task(report())
            await self.create_all(concurrency)
            try:
                await asyncio.wait_for(self.done.wait(), timeout_s)
            except TimeoutError:
                pass
            reporter.cancel()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def summary(self) -> dict[str, Any]:
        first = min(self.sent.values()) if self.sent else 0.0
        last = max(self.completed.values()) if self.completed else first
        elapsed = last - first
        latencies = [
            self.completed[t] - self.created[t] for t in self.completed if t in self.created
        ]
        from_sent = [self.completed[t] - self.sent[t] for t in self.completed if t in self.sent]
        create_end = max(self.created.values()) if self.created else first
        return {
            "tasks": self.total,
            "created": len(self.created),
            "completed": len(self.completed),
            "elapsed_s": round(elapsed, 3),
            "tasks_per_s": round(len(self.completed) / elapsed, 2) if elapsed > 0 else None,
            "creates_per_s": round(len(self.created) / (create_end - first), 2)
            if create_end > first
            else None,
            "create_to_completed": summary_ms(latencies),
            "sent_to_completed": summary_ms(from_sent),
            "claims_per_claimwork_mean": round(sum(self.batch_sizes) / len(self.batch_sizes), 2)
            if self.batch_sizes
            else None,
            "claimed_twice_or_more": sum(1 for c in self.claims.values() if c > 1),
            "never_completed": self.total - len(self.completed),
        }


async def count_writes_per_task(
    service: QueueService, session: aiohttp.ClientSession, tasks: int
) -> dict[str, Any]:
    """Server-side write commands per task for create → claimWork(8) → reportCompleted."""
    settings = load_settings()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    try:
        if await server_write_counts(client) is None:
            return {
                "method": "code reading (the server reports no command counters)",
                "writes_per_task": CODE_READING_WRITES_PER_TASK,
            }
        run = DrainRun(
            service, service.client(session), session, new_task_queue_id("writes"), tasks
        )
        workers = [asyncio.create_task(run.worker(f"count-{i}")) for i in range(4)]
        try:
            await asyncio.sleep(1.5)  # worker records written before we start counting
            a = await server_write_counts(client)
            idle_started = now()
            await asyncio.sleep(2.0)
            b = await server_write_counts(client)
            idle_s = now() - idle_started
            busy_started = now()
            await run.create_all(16)
            try:
                await asyncio.wait_for(run.done.wait(), 60)
            except TimeoutError:
                progress(f"writes count: only {len(run.completed)}/{tasks} tasks completed")
            await asyncio.sleep(0.3)
            c = await server_write_counts(client)
            busy_s = now() - busy_started
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        assert a is not None and b is not None and c is not None
        idle = {k: b[k] - a[k] for k in WRITE_COMMANDS}
        busy = {k: c[k] - b[k] for k in WRITE_COMMANDS}
        # Writes by other clients of the same server during the idle window, scaled to the
        # busy window, are subtracted (the counters are server-wide).
        background = sum(idle.values()) * busy_s / idle_s
        per_task = {k: round(v / tasks, 2) for k, v in busy.items()}
        return {
            "method": "serverStatus.metrics.commands delta (server-wide; FerretDB has no "
            "opcounters) over a batch, minus the idle-window rate",
            "tasks": tasks,
            "completed": len(run.completed),
            "writes": sum(busy.values()),
            "idle_window_writes": sum(idle.values()),
            "background_subtracted": round(background, 1),
            "per_command_per_task": per_task,
            "writes_per_task": round((sum(busy.values()) - background) / tasks, 2),
            "sequential_per_call": await writes_per_call(service, session, client),
        }
    finally:
        await client.close()


async def writes_per_call(
    service: QueueService,
    session: aiohttp.ClientSession,
    client: AsyncMongoClient[dict[str, Any]],
    tasks: int = 3,
) -> dict[str, dict[str, float]]:
    """Write commands of each call of one task's life, one call at a time (no worker
    waiting; the claimer's worker record exists already), averaged over a few tasks."""
    queue = service.client(session)
    tq = new_task_queue_id("percall")
    request = {"workerGroup": "bench", "workerId": "percall", "tasks": 1}
    totals: dict[str, Counter[str]] = {c: Counter() for c in ("createTask", "claimWork")}
    totals["reportCompleted"] = Counter()

    async def counted(name: str, request: Awaitable[Any]) -> Any:
        before = await server_write_counts(client)
        result = await service.call(name, request)
        await asyncio.sleep(0.3)  # effects finish after the response
        after = await server_write_counts(client)
        assert before is not None and after is not None
        totals[name].update({k: after[k] - before[k] for k in WRITE_COMMANDS})
        return result

    # Warm-up: the first claim writes the worker and task-queue records.
    task_id = taskcluster.slugId()
    await service.call("createTask", queue.createTask(task_id, task_definition(tq)))
    if await service.call("claimWork", queue.claimWork(tq, request)):
        await service.call("reportCompleted", queue.reportCompleted(task_id, "0"))
    for _ in range(tasks):
        task_id = taskcluster.slugId()
        await counted("createTask", queue.createTask(task_id, task_definition(tq)))
        result = await counted("claimWork", queue.claimWork(tq, request))
        claim = (result or {"tasks": [None]})["tasks"][0]
        if claim is None:
            continue
        worker_queue = service.client(session, claim["credentials"])
        await counted("reportCompleted", worker_queue.reportCompleted(task_id, str(claim["runId"])))
    return {
        name: {k: round(v / tasks, 2) for k, v in sorted(counts.items()) if v}
        for name, counts in totals.items()
    }


async def run_throughput(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"per_k": {}, "tasks": args.tasks, "create_concurrency": 16}
    async with queue_service("throughput", log_dir) as service:
        results["database"] = service.database
        async with session_for(16 + 8 * 9 + 20) as session:
            progress("counting database writes per task (50 tasks)")
            results["writes"] = await count_writes_per_task(service, session, 50)
            for k in args.drainers:
                run = DrainRun(
                    service,
                    service.client(session),
                    session,
                    new_task_queue_id(f"k{k}"),
                    args.tasks,
                )
                await run.run(k, 16, 60 + args.tasks / 5, f"throughput K={k}", f"k{k}")
                results["per_k"][str(k)] = run.summary()
        results["errors"] = dict(service.errors)
    results["log"] = await asyncio.to_thread(service_health, service)
    return results


# --- 4. depth -------------------------------------------------------------------------------


async def fill(
    service: QueueService,
    queue: taskcluster.aio.Queue,
    queue_ids: list[str],
    count: int,
    limit_s: float,
    label: str,
) -> dict[str, Any]:
    """createTask `count` lowest-priority tasks round-robin over queue_ids, concurrency 16,
    stopping early once limit_s has passed."""
    deadline = now() + limit_s
    started = now()
    numbers = iter(range(count))
    created = 0
    next_report = [now() + 10]

    async def creator() -> None:
        nonlocal created
        for n in numbers:
            if now() > deadline:
                return
            definition = task_definition(queue_ids[n % len(queue_ids)], "lowest")
            if await service.call("createTask", queue.createTask(taskcluster.slugId(), definition)):
                created += 1
            if now() > next_report[0]:
                next_report[0] = now() + 10
                progress(f"{label}: {created}/{count}")

    await asyncio.gather(*(creator() for _ in range(16)))
    elapsed = now() - started
    return {
        "requested": count,
        "created": created,
        "seconds": round(elapsed, 1),
        "creates_per_s": round(created / elapsed, 1),
        "stopped_by_time_limit": created < count and now() > deadline,
    }


@dataclass
class ImmediateRun:
    """Same-queue depth: a waiting worker is impossible while the queue has pending tasks,
    so the worker calls claimWork right after createTask returns. The probe task has
    priority `highest` and the backlog `lowest`, so a correct claim picks the probe."""

    service: QueueService
    queue: taskcluster.aio.Queue
    task_queue_id: str
    create_s: list[float] = field(default_factory=list)
    claim_s: list[float] = field(default_factory=list)
    claimwork_call_s: list[float] = field(default_factory=list)
    wrong_task: int = 0
    empty: int = 0

    async def inject(self, record: bool = True) -> None:
        task_id = taskcluster.slugId()
        sent = now()
        created = await self.service.call(
            "createTask",
            self.queue.createTask(task_id, task_definition(self.task_queue_id, "highest")),
        )
        returned = now()
        if created is None:
            return
        request = {"workerGroup": "bench", "workerId": "depth", "tasks": 1}
        result = await self.service.call(
            "claimWork", self.queue.claimWork(self.task_queue_id, request)
        )
        claimed = now()
        claims = (result or {}).get("tasks", [])
        if not claims:
            self.empty += 1
            return
        for claim in claims:
            got = claim["status"]["taskId"]
            if got != task_id:
                self.wrong_task += 1
            await self.service.call(
                "reportCompleted", self.queue.reportCompleted(got, str(claim["runId"]))
            )
        if record and claims[0]["status"]["taskId"] == task_id:
            self.create_s.append(returned - sent)
            self.claim_s.append(claimed - returned)
            self.claimwork_call_s.append(claimed - returned)

    def summary(self) -> dict[str, Any]:
        return {
            "claim_after_create_returned": summary_ms(self.claim_s),
            "create_task": summary_ms(self.create_s),
            "claimed_a_backlog_task_instead": self.wrong_task,
            "claim_returned_nothing": self.empty,
            "raw_ms": {
                "claim_after_create_returned": raw_ms(self.claim_s),
                "create_task": raw_ms(self.create_s),
            },
        }


async def pending_count(service: QueueService, queue: taskcluster.aio.Queue, tq: str) -> Any:
    started = now()
    result = await service.call("pendingTasks", queue.pendingTasks(tq))
    elapsed = now() - started
    return {
        "pendingTasks": (result or {}).get("pendingTasks"),
        "call_ms": round(elapsed * 1000, 1),
    }


async def run_depth(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"other_queues": [], "same_queue": [], "samples": args.depth_samples}
    levels = args.depths
    logs: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    # What is left to fill (other queues, then the same queue) and to measure: a fill may
    # use what remains of the run's time budget less what the later fills will need at
    # the create rate seen so far.
    steps = [b - a for a, b in zip([0, *levels[:-1]], levels, strict=True)]
    fills_left = [*steps, *steps]
    measurements_left = [2 * (len(levels) + 1)]
    rate = [ASSUMED_CREATES_PER_S]

    async def budgeted_fill(
        service: QueueService, queue: taskcluster.aio.Queue, ids: list[str], count: int, label: str
    ) -> dict[str, Any]:
        if fills_left:
            fills_left.pop(0)
        spare = args.deadline - now() - MEASUREMENT_RESERVE_S * measurements_left[0]
        limit = max(MIN_FILL_S, min(args.fill_limit_s, spare - sum(fills_left) / rate[0]))
        result = await fill(service, queue, ids, count, limit, label)
        if result["creates_per_s"] > 0:
            rate[0] = result["creates_per_s"]
        return result

    # Pending tasks in other task queues of the same database; one worker waits on a fresh one.
    async with queue_service("depth-other", log_dir) as service:
        async with session_for(40) as session:
            queue = service.client(session)
            others = [new_task_queue_id("other") for _ in range(10)]
            probe = LatencyRun(service, queue, new_task_queue_id("probe"))
            reached = 0

            async def measure_other() -> None:
                nonlocal reached
                for depth in [0, *levels]:
                    info: dict[str, Any] = {"target_depth": depth}
                    if depth > reached:
                        info["fill"] = await budgeted_fill(
                            service,
                            queue,
                            others,
                            depth - reached,
                            f"depth other queues: filling to {depth}",
                        )
                        reached += info["fill"]["created"]
                    info["depth"] = reached
                    measurements_left[0] -= 1
                    info["pending_in_one_other_queue"] = await pending_count(
                        service, queue, others[0]
                    )
                    await measure_waiting(
                        probe, args.depth_samples, f"depth {reached} in other queues", warmup=2
                    )
                    info.update(probe.summary())
                    probe.clear_samples()
                    results["other_queues"].append(info)

            await with_workers(probe, 1, measure_other, prefix="depth")
        errors["other_queues"] = dict(service.errors)
    logs["other_queues"] = await asyncio.to_thread(service_health, service)

    # Pending tasks in the same task queue (a fresh database, so nothing else is pending).
    async with queue_service("depth-same", log_dir) as service:
        async with session_for(40) as session:
            queue = service.client(session)
            tq = new_task_queue_id("same")
            reached = 0
            for depth in [0, *levels]:
                info = {"target_depth": depth}
                if depth > reached:
                    info["fill"] = await budgeted_fill(
                        service,
                        queue,
                        [tq],
                        depth - reached,
                        f"depth same queue: filling to {depth}",
                    )
                    reached += info["fill"]["created"]
                info["depth"] = reached
                measurements_left[0] -= 1
                info["pending_in_queue"] = await pending_count(service, queue, tq)
                run = ImmediateRun(service, queue, tq)
                for _ in range(2):
                    await run.inject(record=False)
                for i in range(args.depth_samples):
                    await run.inject()
                    if (i + 1) % max(1, args.depth_samples // 2) == 0:
                        progress(f"depth {reached} in same queue: {i + 1}/{args.depth_samples}")
                info.update(run.summary())
                results["same_queue"].append(info)
        errors["same_queue"] = dict(service.errors)
    logs["same_queue"] = await asyncio.to_thread(service_health, service)
    results["errors"] = errors
    results["log"] = logs
    return results


# --- report ---------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    ceilings = report.get("ceilings")
    fau8 = None
    if ceilings:
        mongo, rabbit = ceilings["mongo"], ceilings["rabbitmq"]
        rows = []
        for op in ("find_one_and_update $inc", "update_one {_id,version}", "insert_one"):
            rows.append((op, mongo[f"{op} c=1"], mongo[f"{op} c=8"]))
        fau8 = mongo["find_one_and_update $inc c=8"]
        print_table(
            f"Ceilings: MongoDB-protocol server, ops/s ({mongo['docs_prefilled']:,} docs, "
            f"{mongo['seconds']} s each)",
            ["operation", "c=1", "c=8"],
            rows,
        )
        print_table(
            f"Ceilings: RabbitMQ persistent confirmed publishes/s ({rabbit['body_bytes']} B body)",
            ["exchange", "c=1", "c=16"],
            [
                ("durable topic, unrouted", rabbit["unrouted c=1"], rabbit["unrouted c=16"]),
                (
                    "durable topic -> durable queue",
                    rabbit["to durable queue c=1"],
                    rabbit["to durable queue c=16"],
                ),
            ],
        )

    claim = report.get("claim")
    if claim:
        rows = []
        for w, s in claim["per_w"].items():
            for name, key in (
                ("claim - create returned", "claim_after_create_returned"),
                ("claim - create sent", "claim_after_create_sent"),
                ("createTask", "create_task"),
            ):
                d = s[key]
                rows.append(
                    (f"W={w} {name}", d["n"], d["p50_ms"], d["p90_ms"], d["p99_ms"], d["max_ms"])
                )
        print_table(
            "Claim latency, ms (tasks injected one at a time; W workers waiting in claimWork)",
            ["W / measure", "n", "p50", "p90", "p99", "max"],
            rows,
        )
        rows = []
        for w, s in claim["per_w"].items():
            e = s["exactly_once"]
            rows.append(
                (
                    f"W={w}",
                    e["injected"],
                    e["claimed_once"],
                    e["never_claimed"],
                    e["claimed_twice_or_more"],
                    e["claims_of_unknown_tasks"],
                    s["negative_samples"],
                    s["samples_over_1s"],
                )
            )
        print_table(
            "Claim exactly-once check",
            ["W", "injected", "once", "never", "twice+", "unknown", "negative", ">1s"],
            rows,
        )

    throughput = report.get("throughput")
    if throughput:
        writes = throughput["writes"]
        per_task = writes["writes_per_task"]
        print(f"\nWrites per task: {per_task} ({writes['method']})")
        if "per_command_per_task" in writes:
            print(
                "  per command per task: "
                + ", ".join(f"{k} {v}" for k, v in writes["per_command_per_task"].items())
                + f"; idle-window writes by other clients: {writes['idle_window_writes']}"
            )
        for name, counts in (writes.get("sequential_per_call") or {}).items():
            detail = ", ".join(f"{k} {v}" for k, v in counts.items())
            print(f"  one call at a time, {name}: {sum(counts.values()):.1f} ({detail})")
        ceiling = fau8 / per_task if fau8 and per_task else None
        mix = throughput.get("mix_ceiling_tasks_per_s")
        rows = []
        for k, s in throughput["per_k"].items():
            lat = s["create_to_completed"]
            rows.append(
                (
                    f"K={k}",
                    f"{s['completed']}/{s['tasks']}",
                    s["tasks_per_s"],
                    ceiling,
                    f"{s['tasks_per_s'] / ceiling:.0%}" if ceiling and s["tasks_per_s"] else "-",
                    mix,
                    f"{s['tasks_per_s'] / mix:.0%}" if mix and s["tasks_per_s"] else "-",
                    s["creates_per_s"],
                    lat["p50_ms"],
                    lat["p99_ms"],
                    s["claims_per_claimwork_mean"],
                    s["claimed_twice_or_more"],
                )
            )
        print_table(
            f"No-op throughput ({throughput['tasks']} tasks, createTask concurrency 16, "
            f"claimWork tasks=8); ceiling = fau c=8 / writes per task; mix = the same writes "
            "at each command's own c=8 rate",
            [
                "drainers",
                "done",
                "tasks/s",
                "ceiling",
                "of ceiling",
                "mix",
                "of mix",
                "creates/s",
                "p50 ms",
                "p99 ms",
                "tasks/claim",
                "claimed 2x+",
            ],
            rows,
        )

    depth = report.get("depth")
    if depth:
        for key, title in (
            ("other_queues", "Depth: pending tasks in 10 OTHER task queues (one waiting worker)"),
            (
                "same_queue",
                "Depth: pending tasks in the SAME task queue (probe priority highest, "
                "claimWork sent when createTask returns)",
            ),
        ):
            rows = []
            for level in depth[key]:
                c, t = level["claim_after_create_returned"], level["create_task"]
                fill_info = level.get("fill") or {}
                counted = level.get("pending_in_one_other_queue") or level.get("pending_in_queue")
                rows.append(
                    (
                        level["depth"],
                        counted["pendingTasks"],
                        counted["call_ms"],
                        c["n"],
                        c["p50_ms"],
                        c["p90_ms"],
                        c["max_ms"],
                        t["p50_ms"],
                        t["p90_ms"],
                        t["max_ms"],
                        fill_info.get("creates_per_s"),
                    )
                )
            print_table(
                title,
                [
                    "pending",
                    "pendingTasks()" if key == "same_queue" else "pendingTasks(one)",
                    "ms",
                    "n",
                    "claim p50",
                    "p90",
                    "max",
                    "create p50",
                    "p90",
                    "max",
                    "fill creates/s",
                ],
                rows,
            )
        for key in ("other_queues", "same_queue"):
            for level in depth[key]:
                fill_info = level.get("fill") or {}
                if fill_info.get("stopped_by_time_limit"):
                    print(
                        f"  {key}: fill toward {level['target_depth']:,} stopped by the time "
                        f"limit at {level['depth']:,} pending ({fill_info['seconds']} s)"
                    )
        print(
            "  same-queue claims that returned a backlog task instead of the probe: "
            + ", ".join(
                f"{lvl['depth']}: {lvl['claimed_a_backlog_task_instead']}"
                for lvl in depth["same_queue"]
            )
        )

    print("\nService health (client-side failures; warnings/errors in the queue's log)")
    for section in ("claim", "throughput", "depth"):
        part = report.get(section)
        if not part:
            continue
        errors = part.get("errors") or {}
        logs = part.get("log") or {}
        if section == "depth":
            errors = {f"{k}: {e}": n for k, v in errors.items() for e, n in v.items()}
            problems = {
                f"{k}: {p}": n for k, v in logs.items() for p, n in v.get("problems", {}).items()
            }
            killed = [k for k, v in logs.items() if v.get("killed")]
        else:
            problems = logs.get("problems", {})
            killed = [section] if logs.get("killed") else []
        print(f"  {section}: client errors {errors or 'none'}; log problems {problems or 'none'}")
        if killed:
            print(
                f"    queue process(es) {', '.join(killed)} still running {STOP_GRACE_S:.0f} s "
                "after SIGTERM (open claimWork long polls), killed"
            )
    print(f"  queue logs: {report['log_dir']}")


def box_cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat (0, 0 elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def own_cpu_s() -> tuple[float, float]:
    """CPU seconds of this process and of its finished (waited-for) children."""
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def cpu_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total > 0 else 0.0


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--tasks",
        type=int,
        default=int(os.environ.get("FLOTILLA_BENCH_TASKS", "500")),
        help="tasks per no-op throughput run (env FLOTILLA_BENCH_TASKS)",
    )
    parser.add_argument("--samples", type=int, default=100, help="claim latency samples per W")
    parser.add_argument("--depth-samples", type=int, default=30, help="samples per depth level")
    parser.add_argument("--ceiling-seconds", type=float, default=3.0)
    parser.add_argument(
        "--fill-limit-s", type=float, default=180.0, help="time limit of one depth fill"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="the depth fills stop early so that the whole run ends about then",
    )
    parser.add_argument("--workers", default="1,10,100", help="W values for claim latency")
    parser.add_argument("--drainers", default="4,8", help="K values for throughput")
    parser.add_argument("--depths", default="1000,10000", help="pending depths")
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run")
    args = parser.parse_args(argv)
    args.workers = [int(x) for x in args.workers.split(",")]
    args.drainers = [int(x) for x in args.drainers.split(",")]
    args.depths = [int(x) for x in args.depths.split(",")]
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="flotilla-bench-queue-"))
    report: dict[str, Any] = {
        "benchmark": "queue",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "config": {k: v for k, v in vars(args).items()},
        "log_dir": str(log_dir),
    }
    started = now()
    args.deadline = started + args.budget_s
    for section, runner in (
        ("ceilings", lambda: run_ceilings(args)),
        ("claim", lambda: run_claim_latency(args, log_dir)),
        ("throughput", lambda: run_throughput(args, log_dir)),
        ("depth", lambda: run_depth(args, log_dir)),
    ):
        if section not in args.only:
            continue
        section_started = now()
        cpu_before = box_cpu_times()
        own_before = own_cpu_s()
        print(f"[{section}]", flush=True)
        try:
            report[section] = await runner()
        except Exception as exc:  # report what failed and go on with the other sections
            print(f"[{section}] FAILED: {type(exc).__name__}: {exc}", flush=True)
            report.setdefault("failures", {})[section] = f"{type(exc).__name__}: {exc}"
            continue
        report[section]["section_seconds"] = round(now() - section_started, 1)
        report[section]["box_cpu_busy"] = cpu_busy(cpu_before, box_cpu_times())
        report[section]["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
        elapsed = now() - section_started
        own = own_cpu_s()
        # Cores' worth of CPU: this client, and the queue processes it started and stopped.
        report[section]["bench_client_cores"] = round((own[0] - own_before[0]) / elapsed, 2)
        report[section]["queue_process_cores"] = round((own[1] - own_before[1]) / elapsed, 2)
        print(
            f"[{section}] {report[section]['section_seconds']} s; machine "
            f"{report[section]['box_cpu_busy']:.0%} busy (of {os.cpu_count()} cores), "
            f"bench client {report[section]['bench_client_cores']} cores, queue process "
            f"{report[section]['queue_process_cores']} cores",
            flush=True,
        )
    report["total_seconds"] = round(now() - started, 1)
    return report


def add_ceilings(report: dict[str, Any]) -> None:
    """Throughput ceilings from this run's raw rates: every write at the find_one_and_update
    rate (as asked), and the measured mix of writes each at its own c=8 rate (deletes
    and findAndModify at the find_one_and_update rate: both find by _id, then write)."""
    throughput, ceilings = report.get("throughput"), report.get("ceilings")
    if not throughput or not ceilings:
        return
    mongo, writes = ceilings["mongo"], throughput["writes"]
    fau8 = mongo["find_one_and_update $inc c=8"]
    throughput["fau8_ceiling_tasks_per_s"] = round(fau8 / writes["writes_per_task"], 1)
    per_command = writes.get("per_command_per_task")
    if per_command:
        seconds = (
            per_command["insert"] / mongo["insert_one c=8"]
            + per_command["update"] / mongo["update_one {_id,version} c=8"]
            + (per_command["delete"] + per_command["findAndModify"]) / fau8
        )
        throughput["mix_ceiling_tasks_per_s"] = round(1 / seconds, 1) if seconds else None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = asyncio.run(run(args))
    add_ceilings(report)
    print_report(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ntotal {report['total_seconds']} s; wrote {RESULTS}")


if __name__ == "__main__":
    main()
