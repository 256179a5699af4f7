"""`make bench`: the workloads that matter in one run, next to the machine's own ceiling
and a peer (Celery), written to bench/results/latest.json with a PNG chart per workload.

    W1 no-op throughput: a burst (created at 50-way concurrency, drained by bench
       workers that claim and report without containers) and an open-loop arrival ramp
    W2 claim latency with 1, 10 and 100 workers waiting, exactly-once checked
    W3 dependencies: fan-out and fan-in (one graph), chain
    W4 claim-expiry and deadline precision while 1,000 claims are held
    W5 provisioner reaction on the docker provider
    W6 createTask / claimWork cost against queue depth (one queue; spread over 1,000)

Each workload runs on its own fresh database with its own service processes; the CPU
seconds and peak memory of every process serving it (queue, dependency-resolver,
claim-expiry, FerretDB, RabbitMQ) are sampled from /proc while it runs.

    python -m bench [--profile standard|full|quick] [--only w1,w3,...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import (
    bench_graphs,
    bench_provisioner,
    bench_queue,
    commandcounts,
    fanout_floor,
    w1_throughput,
    w4_precision,
    w6_depth,
)
from bench.bench_queue import QueueService, progress, session_for
from bench.procstats import ProcessSampler, cpu_s_per_1000, pid_by_name
from shared import commandstats

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Profile:
    w1_tasks: int = 10_000
    w1_concurrency: int = 50
    w1_drainers: int = 8
    ramp_rates: tuple[float, ...] = (5, 10, 20, 30, 40, 60, 80)
    ramp_step_s: float = 8.0
    ramp_workers: int = 8
    ramp_p99_limit_ms: float = 100.0
    w2_workers: tuple[int, ...] = (1, 10, 100)
    w2_samples: int = 50
    fan_width: int = 10_000  # root → this many → sink: the fan-out and the fan-in
    chain: int = 100
    w4_claims: int = 1000
    w4_deadlines: int = 200
    w5_tasks: int = 20
    w5_max_capacity: int = 4
    w6_levels: tuple[int, ...] = (1_000, 100_000)
    w6_samples: int = 20
    w6_spread_queues: int = 1000
    ceiling_seconds: float = 3.0
    peer_tasks: int = 10_000


PROFILES: dict[str, Profile] = {
    # `make bench`: fits 20 minutes on a 2-core box (about 13 warm). At ~30 no-op tasks/s
    # end to end, 10,000-task workloads take minutes each, so W1, W3 and the peer run
    # 5,000 and W6 stops at 100,000 pending.
    "standard": Profile(w1_tasks=5_000, fan_width=5_000, peer_tasks=5_000),
    # `make bench BENCH_PROFILE=full`: every size as specified (about 50 minutes; W6
    # alone took 26, 20 of them seeding 2,000,000 pending tasks).
    "full": Profile(w6_levels=(1_000, 100_000, 1_000_000)),
    # A smoke run of every workload in a few minutes.
    "quick": Profile(
        w1_tasks=500,
        ramp_rates=(10, 40),
        ramp_step_s=3.0,
        w2_workers=(1, 10),
        w2_samples=10,
        fan_width=300,
        chain=10,
        w4_claims=100,
        w4_deadlines=20,
        w5_tasks=6,
        w5_max_capacity=2,
        w6_levels=(1_000, 5_000),
        w6_samples=5,
        w6_spread_queues=50,
        ceiling_seconds=1.0,
        peer_tasks=500,
    ),
}


@dataclass
class Context:
    profile: Profile
    log_dir: Path
    results: dict[str, Any] = field(default_factory=dict)
    # Where every process (services and this one) writes its command counts.
    stats_dir: Path | None = None


# --- measuring the processes --------------------------------------------------------------


def server_pids() -> dict[str, int]:
    """The shared servers every workload uses (comm names are cut at 15 characters)."""
    found = {"ferretdb": pid_by_name("flotilla-ferret"), "rabbitmq": pid_by_name("beam.smp")}
    return {name: pid for name, pid in found.items() if pid is not None}


@asynccontextmanager
async def metered(
    service: QueueService, into: dict[str, Any], stats_dir: Path | None = None
) -> AsyncIterator[None]:
    """Sample the workload's processes while the block runs; `into["processes"]` gets each
    one's CPU seconds and peak RSS, and (with `stats_dir`) `into["command_counts"]` the
    MongoDB commands and AMQP operations each Flotilla process sent meanwhile, and
    `into["bench_client_commands"]` this benchmark's own (call `per_task(into, tasks)`)."""
    before = await asyncio.to_thread(commandcounts.settled, stats_dir) if stats_dir else None
    sampler = ProcessSampler({**service.pids(), **server_pids()}, include_children=["rabbitmq"])
    await asyncio.to_thread(sampler.start)
    try:
        yield
    finally:
        usage = await asyncio.to_thread(sampler.stop)
        into["processes"] = {label: u.as_dict() for label, u in usage.items()}
        if stats_dir is not None and before is not None:
            after = await asyncio.to_thread(commandcounts.settled, stats_dir)
            pids = service.pids().values()
            into["command_counts"] = commandcounts.difference(before, after, pids)
            into["bench_client_commands"] = commandcounts.difference(before, after, [os.getpid()])


def per_task(result: dict[str, Any], tasks: int) -> None:
    """CPU per task of each process and of all of them (CPU-ms per task, the same number
    as CPU-s per 1,000 tasks), and the commands and messages per task if counted."""
    result["tasks_for_cpu"] = tasks
    by_process: dict[str, float] = {}
    for label, usage in result.get("processes", {}).items():
        usage["cpu_s_per_1000_tasks"] = cpu_s_per_1000(usage["cpu_s"], tasks)
        if usage["cpu_s_per_1000_tasks"] is not None:
            by_process[label] = usage["cpu_s_per_1000_tasks"]
    if by_process:
        result["cpu_ms_per_task"] = round(sum(by_process.values()), 2)
        result["cpu_ms_per_task_by_process"] = by_process
    if "command_counts" in result:
        counted = commandcounts.per_task(result["command_counts"], tasks)
        result["commands"] = counted
        result["commands_per_task"] = counted.get("commands_per_task")
        result["rabbitmq_messages_per_task"] = counted.get("rabbitmq_messages_per_task")


# --- the workloads ------------------------------------------------------------------------


async def ceiling(ctx: Context) -> dict[str, Any]:
    args = argparse.Namespace(ceiling_seconds=ctx.profile.ceiling_seconds)
    return await bench_queue.run_ceilings(args)


async def w1(ctx: Context) -> dict[str, Any]:
    p = ctx.profile
    result: dict[str, Any] = {}
    async with bench_graphs.platform("w1", ctx.log_dir) as service:
        async with session_for(20) as session:
            progress("W1: counting database writes per task (50 tasks)")
            result["writes"] = await bench_queue.count_writes_per_task(service, session, 50)
        # The ramp first, on a quiet platform: after the burst the resolver is still
        # working off 10,000 resolutions, and the ramp would measure that.
        result["ramp"] = await w1_throughput.ramp(
            service, list(p.ramp_rates), p.ramp_step_s, p.ramp_workers, p.ramp_p99_limit_ms
        )
        progress(f"W1: burst of {p.w1_tasks:,} no-op tasks")
        async with metered(service, result, ctx.stats_dir):
            result["burst"] = await w1_throughput.burst(
                service, p.w1_tasks, p.w1_concurrency, p.w1_drainers
            )
        per_task(result, result["burst"]["completed"])
        result["errors"] = dict(service.errors)
    return result


async def w2(ctx: Context) -> dict[str, Any]:
    p = ctx.profile
    args = argparse.Namespace(workers=list(p.w2_workers), samples=p.w2_samples)
    result = await bench_queue.run_claim_latency(args, ctx.log_dir)
    for run in result["per_w"].values():
        run.pop("raw_ms", None)
    return result


async def w3(ctx: Context) -> dict[str, Any]:
    p = ctx.profile
    result: dict[str, Any] = {}
    async with bench_graphs.platform("w3", ctx.log_dir) as service:
        async with metered(service, result, ctx.stats_dir):
            result["chain"] = await bench_graphs.chain(service, p.chain)
            progress(f"W3 chain: {result['chain']['hop']}")
            result["fan_out"], result["fan_in"] = await bench_graphs.fan_out_and_in(
                service, p.fan_width
            )
            progress(f"W3 fan-in: {result['fan_in']}")
        result["errors"] = dict(service.errors)
    per_task(result, p.chain + p.fan_width + 2)
    result["fan_out_floor"] = await fanout_floor.measure(p.fan_width)
    return result


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Variables the service processes started inside the block inherit."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def w4(ctx: Context) -> dict[str, Any]:
    p = ctx.profile
    result: dict[str, Any] = {}
    claim_timeout = str(bench_graphs.CLAIM_TIMEOUT_S)  # short claims, so they lapse soon
    with environment(FLOTILLA_CLAIM_TIMEOUT=claim_timeout):
        async with bench_graphs.platform("w4", ctx.log_dir) as service:
            async with metered(service, result, ctx.stats_dir):
                result.update(await w4_precision.run(service, p.w4_claims, p.w4_deadlines))
            result["errors"] = dict(service.errors)
    per_task(result, p.w4_claims + p.w4_deadlines)
    return result


async def w5(ctx: Context) -> dict[str, Any]:
    p = ctx.profile
    args = argparse.Namespace(tasks=p.w5_tasks, sleep=3, max_capacity=[p.w5_max_capacity])
    return await bench_provisioner.run(args)


async def w6(ctx: Context) -> dict[str, Any]:
    p = ctx.profile
    result: dict[str, Any] = {}
    async with bench_queue.queue_service("w6", ctx.log_dir) as service:
        result.update(
            await w6_depth.run(service, list(p.w6_levels), p.w6_samples, p.w6_spread_queues)
        )
        result["errors"] = dict(service.errors)
    return result


async def peer(ctx: Context) -> dict[str, Any]:
    from bench import bench_celery  # imports Celery, an optional (bench) dependency

    p = ctx.profile
    tasks = ["--tasks", str(p.peer_tasks), "--concurrency", str(p.w1_concurrency)]
    result = await asyncio.to_thread(bench_celery.run, bench_celery.parse_args(tasks))
    bench_celery.print_report(result)
    return result


WORKLOADS: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "ceiling": ceiling,
    "w1": w1,
    "w2": w2,
    "w3": w3,
    "w4": w4,
    "w5": w5,
    "w6": w6,
    "peer": peer,
}


# --- the run ------------------------------------------------------------------------------


def _version(command: list[str]) -> str | None:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else None


def ferretdb_version() -> str | None:
    """The FerretDB module our build pins (its wrapper binary has no --version)."""
    for line in (REPO / "deploy/ferretdb/go.mod").read_text().splitlines():
        if "github.com/FerretDB/FerretDB " in line:
            return f"FerretDB {line.split()[-1]} (SQLite, patched: deploy/ferretdb)"
    return None


def machine() -> dict[str, Any]:
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ferretdb": ferretdb_version(),
        "rabbitmq": _version(["rabbitmqctl", "version"]),
    }


DURABILITY = {
    "flotilla": "MongoDB protocol (FerretDB 1.x on SQLite, WAL, one transaction per write "
    "command) for all state; RabbitMQ durable topic exchanges, persistent messages, "
    "publisher confirms; the resolver's queue is durable with manual acks",
    "celery": "RabbitMQ durable queues, persistent messages, acks_late; results in Redis "
    "with appendonly yes, appendfsync everysec",
}


async def run(ctx: Context, names: list[str]) -> None:
    started = time.monotonic()
    for name in names:
        section_started = time.monotonic()
        print(f"[{name}]", flush=True)
        try:
            ctx.results[name] = await WORKLOADS[name](ctx)
        except Exception as exc:  # report it and go on: one broken workload is no reason
            traceback.print_exc()  # to lose the others' numbers
            ctx.results[name] = {"failed": f"{type(exc).__name__}: {exc}"}
        ctx.results[name]["seconds"] = round(time.monotonic() - section_started, 1)
        print(f"[{name}] {ctx.results[name]['seconds']} s", flush=True)
    ctx.results["total_seconds"] = round(time.monotonic() - started, 1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=os.environ.get("FLOTILLA_BENCH_PROFILE", "standard"),
    )
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads to run")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    profile = PROFILES[args.profile]
    ctx = Context(profile, Path(tempfile.mkdtemp(prefix="flotilla-bench-")))
    # Every service started from here on counts its MongoDB commands and AMQP operations
    # (shared.commandstats); so does this process, apart, for its own seeding clients.
    ctx.stats_dir = ctx.log_dir / "command-stats"
    os.environ["FLOTILLA_COMMAND_STATS_DIR"] = str(ctx.stats_dir)
    commandstats.configure(str(ctx.stats_dir), "bench", every_client=True)
    ctx.results.update(
        {
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "profile": args.profile,
            "sizes": asdict(profile),
            "machine": machine(),
            "durability": DURABILITY,
            "log_dir": str(ctx.log_dir),
        }
    )
    progress(f"profile {args.profile}; logs in {ctx.log_dir}")
    # SIGTERM (a `kill`, a CI timeout) unwinds like Ctrl-C, so the service processes a
    # workload started are stopped and its database dropped instead of left running.
    signal.signal(signal.SIGTERM, _interrupt)
    asyncio.run(run(ctx, names))
    from bench import report  # matplotlib is imported only once there is something to draw

    # A partial run (--only) must not replace the last full run's table and charts.
    report.finish(ctx.results, RESULTS if set(names) == set(WORKLOADS) else RESULTS / "partial")
