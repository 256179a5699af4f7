"""The peer (`python -m bench celery`): Celery 5.x on the same RabbitMQ, with a durable Redis
result backend, doing what Flotilla's W1 and W3 do.

Set-up, chosen to match Flotilla's durability and this 2-core box:
- broker: the RabbitMQ Flotilla uses, a durable classic queue (and direct exchange) of our
  own, persistent messages, publisher confirms on every send, acks_late (a task is acked
  after it ran and its result was stored), prefetch 4 per pool process (Celery's default);
- result backend: Debian's redis-server, started here on a free port in a temporary
  directory with `appendonly yes`, `appendfsync everysec` and no RDB snapshots;
- one worker, `python -m bench.celery_app` (Celery's own `worker_main`): prefork pool,
  concurrency 2 (Celery's default on 2 cores), log level WARNING (Celery's default),
  without gossip/mingle/heartbeat, events and remote control.

W1 no-op burst: N tasks sent by 50 threads (a thread pool, each thread calling send_task in
a loop with a producer connection of its own: Celery's client is synchronous), drained by
the worker, which runs a no-op and stores the result. The send time (wall clock) is the
task's argument; the backend stamps date_done when it stores the result, so latency is
date_done - sent and throughput is N / (last date_done - first send). The client watches
the result keys with EXISTS every 50 ms.

W3 fan-in: one chord, a header of N no-op tasks and a no-op callback, sent as a Celery user
would (`chord(header)(callback)`, one thread). Timed: the send, the header's completion
rate, and the hop from the last header result stored (and from the last header body's end)
to the callback's first line.

For each workload, /proc is sampled (bench.procstats) for the CPU-seconds and peak memory
of the worker (with its pool children), redis-server, RabbitMQ (beam.smp and children: it
is shared, so other users' traffic counts too) and this client. Afterwards the worker and
Redis are stopped, their directory removed, and our queue and exchange deleted.

    .venv/bin/python -m bench celery [--tasks 10000] [--only w1,w3]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import celery
import kombu
import redis
from celery import Celery, chord

from bench.bench_queue import (
    REPO,
    _free_port,
    box_cpu_times,
    cpu_busy,
    print_table,
    progress,
    summary_ms,
)
from bench.celery_app import CALLBACK, CONFIG_ENV, HEADER, NOOP, PeerConfig, make_app
from bench.procstats import (
    CLOCK_TICKS_PER_S,
    ProcessSampler,
    ProcessUsage,
    cpu_s_per_1000,
    pid_by_name,
)
from shared.config import load_settings

RESULTS = Path(__file__).resolve().parent / "results" / "celery.json"
WORKLOADS = ("w1", "w3")
POLL_INTERVAL_S = 0.05
WARMUP_TASKS = 100
STOP_GRACE_S = 10.0


# --- Redis, the result backend --------------------------------------------------------------


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=0)


REDIS_DURABILITY = {"appendonly": "yes", "appendfsync": "everysec", "save": ""}


def start_redis(directory: Path) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (run: make bench-deps)")
    port = _free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    argv += ["--daemonize", "no", "--logfile", str(directory / "redis.log")]
    # Durable like a production result backend: every write goes to the append-only file,
    # fsynced once a second. No RDB snapshots: their forks would add noise, not durability.
    for key, value in REDIS_DURABILITY.items():
        argv += [f"--{key}", value]
    server = RedisServer(subprocess.Popen(argv, cwd=directory), port, directory)
    client = server.client()
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            return server
        except redis.ConnectionError:
            if server.process.poll() is not None or time.monotonic() > deadline:
                log = (directory / "redis.log").read_text(errors="replace")[-1000:]
                raise RuntimeError(f"redis-server did not start:\n{log}") from None
            time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> bool:
    """SIGTERM, then SIGKILL after grace_s; True when it had to be killed."""
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
        return False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True


# --- the worker and the broker objects ------------------------------------------------------


def start_worker(config: PeerConfig, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, CONFIG_ENV: config.to_env()}
    node = f"flotilla-bench-{uuid.uuid4().hex[:6]}@%h"
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.celery_app", node],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def broker_facts(amqp_url: str) -> dict[str, Any]:
    with kombu.Connection(amqp_url, connect_timeout=10) as connection:
        connection.ensure_connection(max_retries=10)
        props = connection.connection.server_properties
        version = props.get("version")
    return {"rabbitmq_version": version.decode() if isinstance(version, bytes) else version}


def delete_broker_objects(amqp_url: str, queue: str) -> dict[str, Any]:
    """Our queue and exchange go; any message still in the queue goes with them."""
    deleted: dict[str, Any] = {}
    with kombu.Connection(amqp_url, connect_timeout=10) as connection:
        channel = connection.channel()
        try:
            deleted["queue_messages_left"] = channel.queue_delete(queue)
            channel.exchange_delete(queue)
            deleted["deleted"] = [f"queue {queue}", f"exchange {queue}"]
        finally:
            channel.close()
    return deleted


# --- waiting for results --------------------------------------------------------------------


def count_present(client: redis.Redis, keys: Sequence[bytes]) -> int:
    pipe = client.pipeline(transaction=False)
    for first in range(0, len(keys), 1000):
        pipe.exists(*keys[first : first + 1000])
    return sum(int(n) for n in pipe.execute())


def wait_for_keys(
    client: redis.Redis, keys: Sequence[bytes], limit_s: float, what: str
) -> tuple[float, int]:
    """Poll until every key exists (or limit_s passes): (time.time() then, keys present)."""
    deadline = time.monotonic() + limit_s
    next_report = time.monotonic() + 5
    while True:
        present = count_present(client, keys)
        if present >= len(keys):
            return time.time(), present
        if time.monotonic() > deadline:
            progress(f"{what}: gave up after {limit_s:.0f} s with {present}/{len(keys)}")
            return time.time(), present
        if time.monotonic() > next_report:
            progress(f"{what}: {present}/{len(keys)}")
            next_report += 5
        time.sleep(POLL_INTERVAL_S)


def fetch_meta(client: redis.Redis, keys: Sequence[bytes]) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for first in range(0, len(keys), 1000):
        for raw in client.mget(keys[first : first + 1000]):
            out.append(None if raw is None else json.loads(raw))
    return out


def done_at(meta: dict[str, Any] | None) -> float | None:
    """The backend's date_done (when the worker stored the result) as a Unix time."""
    if not meta or not meta.get("date_done"):
        return None
    return datetime.fromisoformat(meta["date_done"]).timestamp()


def release_pending_results(app: Celery | None) -> None:
    """A chord's header results stay registered with the Redis backend until read, and
    unsubscribe from Redis when destroyed; drop them now, while Redis runs, rather than at
    interpreter exit (an ignored ConnectionError traceback). Celery has no public call for
    this, so a Celery without `_pending_results` is left alone."""
    if app is None:
        return
    for mapping in getattr(app.backend, "_pending_results", ()):
        for waiters in list(mapping.values()):
            for result in list(waiters.values()):
                app.backend.remove_pending_result(result)
    app.close()


# --- the workloads --------------------------------------------------------------------------


@dataclass
class Burst:
    task_ids: list[str]
    sent: list[float]  # wall clock, the task's argument
    call_s: list[float]  # how long each send_task call took (publisher confirm included)
    errors: list[str]  # one entry per failed send
    seconds: float


def send_burst(app: Celery, tasks: int, concurrency: int) -> Burst:
    ids = [str(uuid.uuid4()) for _ in range(tasks)]
    sent = [0.0] * tasks
    call_s = [0.0] * tasks
    errors: list[str] = []  # list.append and next() are atomic under the GIL: no locks
    numbers = itertools.count()

    def sender() -> None:
        while (i := next(numbers)) < tasks:
            sent[i] = time.time()
            started = time.perf_counter()
            try:
                app.send_task(NOOP, args=(sent[i],), task_id=ids[i])
            except Exception as exc:  # counted and reported; the burst goes on
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
            call_s[i] = time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="send") as pool:
        for future in [pool.submit(sender) for _ in range(concurrency)]:
            future.result()
    return Burst(ids, sent, call_s, errors, time.perf_counter() - started)


@contextmanager
def measured(roots: dict[str, int], children: list[str], into: dict[str, Any]) -> Iterator[None]:
    """Sample the processes and the machine around a workload; fills into['processes']
    (per label) and into['box_cpu_busy']."""
    box_before = box_cpu_times()
    sampler = ProcessSampler(roots, include_children=children, interval_s=0.25)
    with sampler:
        yield
    box_after = box_cpu_times()
    usage: dict[str, ProcessUsage] = sampler.usage()
    into["processes"] = {label: u.as_dict() for label, u in usage.items()}
    into["box_cpu_busy"] = cpu_busy(box_before, box_after)
    # The machine is shared: CPU that none of our processes used was someone else's, and
    # says how much the numbers above were squeezed.
    box_s = (box_after[0] - box_before[0]) / CLOCK_TICKS_PER_S
    into["box_cpu_s"] = round(box_s, 2)
    into["others_cpu_s"] = round(max(0.0, box_s - sum(u.cpu_s for u in usage.values())), 2)
    into["sampler"] = {"samples": sampler.samples, "window_s": sampler.window_s}


def add_cpu_per_1000(part: dict[str, Any], tasks: int) -> None:
    for stats in part["processes"].values():
        stats["cpu_s_per_1000_tasks"] = cpu_s_per_1000(stats["cpu_s"], tasks)
    total = sum(s["cpu_s"] for s in part["processes"].values())
    part["cpu_s_per_1000_tasks_all"] = cpu_s_per_1000(total, tasks)


def warm_up(app: Celery, backend: redis.Redis, concurrency: int) -> None:
    """Connections opened and the worker's pool running before anything is timed."""
    burst = send_burst(app, WARMUP_TASKS, concurrency)
    keys = [app.backend.get_key_for_task(t) for t in burst.task_ids]
    _, present = wait_for_keys(backend, keys, 60, "warm-up")
    if present < len(keys):
        raise RuntimeError(f"the Celery worker ran {present}/{len(keys)} warm-up tasks in 60 s")
    backend.flushdb()


def noop_burst(
    app: Celery, backend: redis.Redis, args: argparse.Namespace, roots: dict[str, int]
) -> dict[str, Any]:
    part: dict[str, Any] = {"tasks": args.tasks, "send_concurrency": args.concurrency}
    with measured(roots, ["celery worker", "rabbitmq"], part):
        burst = send_burst(app, args.tasks, args.concurrency)
        progress(f"W1: sent {args.tasks} in {burst.seconds:.1f} s; waiting for the results")
        keys = [app.backend.get_key_for_task(t) for t in burst.task_ids]
        seen_all_at, present = wait_for_keys(backend, keys, args.limit_s, "W1 results")
    metas = fetch_meta(backend, keys)
    done = [done_at(m) for m in metas]
    latencies = [d - s for d, s in zip(done, burst.sent, strict=True) if d is not None]
    stored = [d for d in done if d is not None]
    first_send = min(burst.sent)
    span_s = (max(stored) - first_send) if stored else None
    part.update(
        {
            "completed": len(stored),
            "send_errors": len(burst.errors),
            "send_error_examples": sorted(set(burst.errors))[:5],
            "send_seconds": round(burst.seconds, 3),
            "sends_per_s": round(args.tasks / burst.seconds, 1),
            "send_call": summary_ms(burst.call_s),
            "first_send_to_last_result_s": None if span_s is None else round(span_s, 3),
            "tasks_per_s": round(len(stored) / span_s, 1) if span_s else None,
            "client_saw_all_after_s": round(seen_all_at - first_send, 3) if present else None,
            "send_to_result_stored": summary_ms(latencies),
            "results_wrong": sum(
                1 for m, s in zip(metas, burst.sent, strict=True) if m and m.get("result") != s
            ),
        }
    )
    add_cpu_per_1000(part, args.tasks)
    backend.flushdb()
    return part


def chord_fan_in(
    app: Celery, backend: redis.Redis, args: argparse.Namespace, roots: dict[str, int]
) -> dict[str, Any]:
    header_ids = [str(uuid.uuid4()) for _ in range(args.tasks)]
    part: dict[str, Any] = {"header_tasks": args.tasks}
    with measured(roots, ["celery worker", "rabbitmq"], part):
        started = time.time()
        header = [
            app.signature(HEADER, args=(i,), options={"task_id": t})
            for i, t in enumerate(header_ids)
        ]
        # Only the id is kept: the AsyncResult unsubscribes from Redis when collected, which
        # must happen while Redis still runs (not at interpreter exit).
        callback_id = chord(header)(app.signature(CALLBACK)).id
        sent = time.time()
        progress(f"W3: chord of {args.tasks} sent in {sent - started:.1f} s; waiting")
        callback_key = app.backend.get_key_for_task(callback_id)
        wait_for_keys(backend, [callback_key], args.limit_s, "W3 callback")
    callback_meta = fetch_meta(backend, [callback_key])[0]
    header_meta = fetch_meta(backend, [app.backend.get_key_for_task(t) for t in header_ids])
    header_done = [d for d in (done_at(m) for m in header_meta) if d is not None]
    value = (callback_meta or {}).get("result") or {}
    callback_started = value.get("started")
    last_header_stored = max(header_done) if header_done else None
    part.update(
        {
            "header_results_stored": len(header_done),
            "callback_ran": callback_started is not None,
            "callback_saw_results": value.get("n"),
            "send_s": round(sent - started, 3),
            "header_tasks_per_s": (
                round(len(header_done) / (last_header_stored - started), 1)
                if last_header_stored
                else None
            ),
            "first_send_to_callback_started_s": (
                round(callback_started - started, 3) if callback_started else None
            ),
            "first_send_to_callback_stored_s": (
                round(done_at(callback_meta) - started, 3) if done_at(callback_meta) else None
            ),
            "last_header_stored_to_callback_started_ms": (
                round((callback_started - last_header_stored) * 1000, 1)
                if callback_started and last_header_stored
                else None
            ),
            "last_header_end_to_callback_started_ms": (
                round((callback_started - value["last_header_end"]) * 1000, 1)
                if callback_started
                else None
            ),
        }
    )
    add_cpu_per_1000(part, args.tasks + 1)
    backend.flushdb()
    return part


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10000, help="W1 burst and W3 chord size")
    parser.add_argument("--concurrency", type=int, default=50, help="W1 sending threads")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--pool", default="prefork", choices=("prefork", "threads", "solo"))
    parser.add_argument("--prefetch-multiplier", type=int, default=4)
    parser.add_argument("--limit-s", type=float, default=150.0, help="wait per workload")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads: w1,w3")
    args = parser.parse_args(argv)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(args.only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {WORKLOADS}")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    work_dir = Path(tempfile.mkdtemp(prefix="flotilla-bench-celery-"))
    config = PeerConfig(
        broker_url=settings.amqp_url,
        backend_url="",  # known once Redis has a port
        queue=f"flotilla-bench-celery-{uuid.uuid4().hex[:8]}",
        concurrency=args.worker_concurrency,
        pool=args.pool,
        prefetch_multiplier=args.prefetch_multiplier,
        publish_connections=args.concurrency,
    )
    report: dict[str, Any] = {
        "benchmark": "celery",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": os.cpu_count(),
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
    }
    started = time.monotonic()
    progress(f"Redis and a Celery worker in {work_dir}")
    server = start_redis(work_dir)
    worker: subprocess.Popen[bytes] | None = None
    app: Celery | None = None
    try:
        config = dataclasses.replace(config, backend_url=server.url)
        facts = broker_facts(config.broker_url)
        backend = server.client()
        report["config"] = {
            "celery": celery.__version__,
            "kombu": kombu.__version__,
            "redis_server": backend.info("server").get("redis_version"),
            **facts,
            "worker": {
                "processes": 1,
                "pool": config.pool,
                "concurrency": config.concurrency,
                "prefetch_multiplier": config.prefetch_multiplier,
                "loglevel": "WARNING",
                "flags": "--without-gossip --without-mingle --without-heartbeat",
            },
            "broker": {
                "queue": "classic, durable (own queue, deleted afterwards)",
                "delivery_mode": "persistent",
                "publisher_confirms": True,
                "acks_late": True,
                "prefetch_count": config.prefetch_multiplier * config.concurrency,
            },
            "result_backend": {"redis": REDIS_DURABILITY, "serializer": "json"},
            "client": {
                "w1": f"{args.concurrency} threads calling send_task, one connection each",
                "w3": "chord(header)(callback) from one thread",
            },
            "tasks": args.tasks,
        }
        worker = start_worker(config, work_dir / "worker.log")
        app = make_app(config)
        progress("warming up")
        warm_up(app, backend, args.concurrency)
        roots = {"celery worker": worker.pid, "redis-server": server.process.pid}
        rabbit = pid_by_name("beam.smp")
        if rabbit is not None:
            roots["rabbitmq"] = rabbit
        roots["bench client"] = os.getpid()
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "w1": lambda: noop_burst(app, backend, args, roots),
            "w3": lambda: chord_fan_in(app, backend, args, roots),
        }
        for name in args.only:
            print(f"[{name}]", flush=True)
            section_started = time.monotonic()
            try:
                report[name] = runners[name]()
            except Exception as exc:  # report what failed and go on, as bench_queue does
                print(f"[{name}] FAILED: {type(exc).__name__}: {exc}", flush=True)
                report.setdefault("failures", {})[name] = f"{type(exc).__name__}: {exc}"
                backend.flushdb()
                continue
            report[name]["section_seconds"] = round(time.monotonic() - section_started, 1)
    finally:
        release_pending_results(app)
        cleanup: dict[str, Any] = {}
        if worker is not None:
            cleanup["worker_killed"] = stop_process(worker)
            log = (work_dir / "worker.log").read_text(errors="replace")
            cleanup["worker_log_tail"] = log[-800:] if log.strip() else ""
        cleanup["redis_killed"] = stop_process(server.process)
        try:
            cleanup.update(delete_broker_objects(config.broker_url, config.queue))
        except Exception as exc:  # report it; the queue is small and named for the run
            cleanup["broker_cleanup_error"] = f"{type(exc).__name__}: {exc}"
        shutil.rmtree(work_dir, ignore_errors=True)
        report["cleanup"] = cleanup
    report["total_seconds"] = round(time.monotonic() - started, 1)
    return report


def print_report(report: dict[str, Any]) -> None:
    cfg = report["config"]
    worker = cfg["worker"]
    print(
        f"\nCelery {cfg['celery']} peer: RabbitMQ {cfg['rabbitmq_version']} (durable queue, "
        f"persistent messages, publisher confirms, acks_late, prefetch "
        f"{cfg['broker']['prefetch_count']}); Redis {cfg['redis_server']} result backend "
        f"(appendonly, appendfsync everysec); 1 worker, {worker['pool']} concurrency "
        f"{worker['concurrency']}"
    )
    w1, w3 = report.get("w1"), report.get("w3")
    if w1:
        lat = w1["send_to_result_stored"]
        print_table(
            f"W1 no-op burst: {w1['tasks']:,} tasks, {w1['send_concurrency']} sending threads",
            ["measure", "value"],
            [
                ("completed", f"{w1['completed']:,}/{w1['tasks']:,}"),
                ("send errors", w1["send_errors"]),
                ("throughput, tasks/s (first send -> last result stored)", w1["tasks_per_s"]),
                ("sends/s", w1["sends_per_s"]),
                (
                    "send_task call p50 / p99, ms",
                    f"{w1['send_call']['p50_ms']} / {w1['send_call']['p99_ms']}",
                ),
                ("send -> result stored p50, ms", lat["p50_ms"]),
                ("  p90", lat["p90_ms"]),
                ("  p99", lat["p99_ms"]),
                ("  max", lat["max_ms"]),
                ("machine CPU busy", f"{w1['box_cpu_busy']:.0%}"),
                ("CPU-s used by processes not ours", w1["others_cpu_s"]),
            ],
        )
    if w3:
        print_table(
            f"W3 fan-in: chord of {w3['header_tasks']:,} header tasks + 1 callback",
            ["measure", "value"],
            [
                ("header results stored", f"{w3['header_results_stored']:,}"),
                ("send chord, s", w3["send_s"]),
                ("header tasks/s", w3["header_tasks_per_s"]),
                ("first send -> callback started, s", w3["first_send_to_callback_started_s"]),
                (
                    "last header stored -> callback started, ms",
                    w3["last_header_stored_to_callback_started_ms"],
                ),
                (
                    "last header body end -> callback started, ms",
                    w3["last_header_end_to_callback_started_ms"],
                ),
                ("machine CPU busy", f"{w3['box_cpu_busy']:.0%}"),
                ("CPU-s used by processes not ours", w3["others_cpu_s"]),
            ],
        )
    rows = []
    for name, part in (("W1", w1), ("W3", w3)):
        if not part:
            continue
        for label, stats in part["processes"].items():
            rows.append(
                (
                    f"{name} {label}",
                    stats["cpu_s"],
                    stats["cpu_s_per_1000_tasks"],
                    stats["peak_rss_mb"],
                    stats["peak_pss_mb"],
                    stats["processes_seen"],
                )
            )
        rows.append((f"{name} all of the above", "", part["cpu_s_per_1000_tasks_all"], "", "", ""))
    if rows:
        print_table(
            "CPU and memory (rabbitmq is shared: other users' traffic counts too)",
            ["process", "cpu-s", "cpu-s/1000 tasks", "peak RSS MB", "peak PSS MB", "procs"],
            rows,
        )
    for name, failure in report.get("failures", {}).items():
        print(f"\n{name} FAILED: {failure}")
    cleanup = report.get("cleanup", {})
    print(
        f"\ncleanup: worker killed {cleanup.get('worker_killed')}, redis killed "
        f"{cleanup.get('redis_killed')}, {', '.join(cleanup.get('deleted', [])) or 'nothing'} "
        f"deleted ({cleanup.get('queue_messages_left')} messages left)"
        + (f"; {cleanup['broker_cleanup_error']}" if "broker_cleanup_error" in cleanup else "")
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    print_report(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ntotal {report['total_seconds']} s; wrote {RESULTS}")


if __name__ == "__main__":
    main()
