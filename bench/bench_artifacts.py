"""Artifact throughput (`python -m bench artifacts`): upload and download MB/s through the
URLs createArtifact and artifact() hand out, on both byte stores, against copying the same
bytes locally (the machine's own ceiling for moving them), measured in one run.

- gridfs: the bytes go through the queue into MongoDB (FerretDB here) and back.
- s3: the bytes go to moto's standalone server (an in-memory S3 emulator: an upper bound
  for the S3 path, not a measure of AWS).
Also reports the queue process's peak RSS growth while it moves the bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import taskcluster
from bson import Binary

from bench.bench_queue import (
    QueueService,
    _free_port,
    new_task_queue_id,
    print_table,
    progress,
    queue_service,
    session_for,
    task_definition,
)
from shared import db as dbmod
from shared.config import load_settings

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 1024 * 1024


@contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with (log_dir / "moto.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _watch_rss(pid: int, peak: list[float]) -> None:
    while True:
        peak[0] = max(peak[0], rss_mb(pid))
        await asyncio.sleep(0.05)


@asynccontextmanager
async def store_queue(kind: str, log_dir: Path, env: dict[str, str]) -> AsyncIterator[QueueService]:
    """The queue with this byte store (it reads its settings from the environment)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        async with queue_service(f"artifacts-{kind}", log_dir) as service:
            yield service
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def transfer(service: QueueService, source: Path, size: int) -> dict[str, Any]:
    async with session_for(4) as session:
        queue = service.client(session)
        tq, task_id = new_task_queue_id("artifacts"), taskcluster.slugId()
        await queue.createTask(task_id, task_definition(tq))
        claim = (await queue.claimWork(tq, {"workerGroup": "b", "workerId": "w"}))["tasks"][0]
        worker = service.client(session, claim["credentials"])
        created = await worker.createArtifact(
            task_id,
            "0",
            "public/bench.bin",
            {
                "storageType": "s3",
                "contentType": "application/octet-stream",
                "expires": taskcluster.fromNowJSON("1 hour"),
            },
        )
        assert service.process is not None
        pid = service.process.pid
        before, peak = rss_mb(pid), [0.0]
        watcher = asyncio.create_task(_watch_rss(pid, peak))
        timeout = aiohttp.ClientTimeout(total=3600)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as http:
            started = time.perf_counter()
            with source.open("rb") as body:
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
                async with http.put(created["putUrl"], data=body, headers=headers) as response:
                    assert response.status == 200, await response.text()
            uploaded = time.perf_counter() - started
            url = (await queue.artifact(task_id, "0", "public/bench.bin"))["url"]
            started, received = time.perf_counter(), 0
            async with http.get(url) as response:
                async for chunk in response.content.iter_chunked(BLOCK):
                    received += len(chunk)
            downloaded = time.perf_counter() - started
        watcher.cancel()
        assert received == size, f"downloaded {received} of {size} bytes"
    mb = size / BLOCK
    return {
        "upload_mb_s": round(mb / uploaded, 1),
        "download_mb_s": round(mb / downloaded, 1),
        "queue_rss_growth_mb": round(max(peak[0], rss_mb(pid)) - before, 1),
    }


def local_copy(source: Path, size: int) -> dict[str, Any]:
    """The ceiling: the same bytes copied file to file on this disk."""
    target = source.with_suffix(".copy")
    started = time.perf_counter()
    shutil.copyfile(source, target)
    with target.open("rb") as copied:
        os.fsync(copied.fileno())
    seconds = time.perf_counter() - started
    target.unlink()
    return {"copy_mb_s": round(size / BLOCK / seconds, 1)}


async def database_ceiling(size: int) -> dict[str, Any]:
    """The database's own rate for the embedded store's writes and reads: 255 KB binary
    documents with string ids (as the store's), 8 per insert_many and per `$in` read,
    with no HTTP or queue in between."""
    settings = load_settings()
    client = dbmod.connect(settings.mongo_url)
    name = f"bench_ceiling_{uuid.uuid4().hex[:8]}"
    collection = client[name]["chunks"]
    chunk, per_batch = os.urandom(255 * 1024), 8
    count = size // len(chunk)
    try:
        started = time.perf_counter()
        for first in range(0, count, per_batch):
            await collection.insert_many(
                [
                    {"_id": f"c{n:08d}", "data": Binary(chunk)}
                    for n in range(first, min(first + per_batch, count))
                ]
            )
        written = time.perf_counter() - started
        started = time.perf_counter()
        for first in range(0, count, per_batch):
            ids = [f"c{n:08d}" for n in range(first, min(first + per_batch, count))]
            found = [d async for d in collection.find({"_id": {"$in": ids}})]
            assert len(found) == len(ids), "the ceiling read missed documents"
        read = time.perf_counter() - started
    finally:
        await client.drop_database(name)
        await client.close()
    mb = count * len(chunk) / BLOCK
    return {"write_mb_s": round(mb / written, 1), "read_mb_s": round(mb / read, 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    size = args.size_mb * BLOCK
    report: dict[str, Any] = {"size_mb": args.size_mb}
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-artifacts-") as scratch:
        log_dir = Path(scratch)
        source = log_dir / "source.bin"
        with source.open("wb") as out:
            for _ in range(args.size_mb):
                out.write(os.urandom(BLOCK))
        report["local"] = local_copy(source, size)
        progress(f"local copy: {report['local']}")
        report["database"] = await database_ceiling(size)
        progress(f"database alone: {report['database']}")
        async with store_queue("gridfs", log_dir, {"FLOTILLA_ARTIFACT_STORE": "gridfs"}) as q:
            report["gridfs"] = await transfer(q, source, size)
        progress(f"gridfs: {report['gridfs']}")
        with moto_server(log_dir) as moto:
            env = {
                "FLOTILLA_ARTIFACT_STORE": "s3",
                "FLOTILLA_S3_ENDPOINT_URL": moto,
                "FLOTILLA_S3_ACCESS_KEY_ID": "bench",
                "FLOTILLA_S3_SECRET_ACCESS_KEY": "bench",
            }
            async with store_queue("s3", log_dir, env) as q:
                report["s3"] = await transfer(q, source, size)
        progress(f"s3 (moto): {report['s3']}")
    return report


def print_report(report: dict[str, Any]) -> None:
    copy = report["local"]["copy_mb_s"]
    rows = []
    for kind in ("gridfs", "s3"):
        result = report[kind]
        rows.append(
            [
                f"{kind} ({report['size_mb']} MB)",
                result["upload_mb_s"],
                result["download_mb_s"],
                f"{result['upload_mb_s'] / copy:.1%}",
                f"{result['download_mb_s'] / copy:.1%}",
                result["queue_rss_growth_mb"],
            ]
        )
    database = report["database"]
    rows.append(
        [
            "database alone, 255 KB docs",
            database["write_mb_s"],
            database["read_mb_s"],
            f"{database['write_mb_s'] / copy:.1%}",
            f"{database['read_mb_s'] / copy:.1%}",
            "",
        ]
    )
    rows.append(["local file copy (ceiling)", copy, copy, "100%", "100%", ""])
    print_table(
        "Artifact throughput (MB/s) through the URLs the queue hands out",
        ["store", "upload", "download", "up/copy", "down/copy", "queue RSS +MB"],
        rows,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    print_report(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "artifacts.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'artifacts.json'}")
