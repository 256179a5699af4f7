"""With FLOTILLA_COMMAND_STATS_DIR set, a process writes exact counts of the MongoDB commands
and AMQP operations it sent (what `make bench` divides by tasks); unset, it counts nothing.

Each case runs in a child process, as a service would: the recorder is per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pymongo

from shared.config import Settings

REPO = Path(__file__).resolve().parents[2]

# 3 inserts, 2 finds, 1 conditional update, 1 find_one_and_update, 1 delete on a fresh
# database; 2 confirmed publishes to a private queue, then 2 basic.get (one empty) and 1 ack.
WORKLOAD = """
import asyncio, json, sys
import aio_pika, aiormq
from shared import db as dbmod
from shared.broker import Broker
from shared.config import load_settings

async def main(database_name):
    settings = load_settings()
    client = dbmod.connect(settings.mongo_url)
    installed = {
        "listeners": len(client.options.event_listeners),
        "amqp_counted": hasattr(aiormq.Channel.basic_publish, "__wrapped__"),
    }
    tasks = client[database_name]["tasks"]
    for n in range(3):
        await tasks.insert_one({"_id": f"t{n}", "version": 0})
    await tasks.find_one({"_id": "t0"})
    await tasks.find_one({"_id": "t1"})
    await tasks.update_one({"_id": "t0", "version": 0}, {"$set": {"version": 1}})
    await tasks.find_one_and_update({"_id": "t1"}, {"$inc": {"version": 1}})
    await tasks.delete_one({"_id": "t2"})
    await client.close()

    broker = await Broker.connect(settings.amqp_url, prefix=settings.exchange_prefix)
    queue = await broker.channel.declare_queue(exclusive=True)
    for n in range(2):
        await broker.channel.default_exchange.publish(
            aio_pika.Message(b"x"), routing_key=queue.name
        )
    first = await queue.get(no_ack=False)
    await first.ack()
    await queue.get(no_ack=True)
    await queue.get(no_ack=True, fail=False)
    await broker.close()
    print(json.dumps(installed))

asyncio.run(main(sys.argv[1]))
"""


def run_workload(directory: Path | None, database: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FLOTILLA_COMMAND_STATS_DIR"}
    if directory is not None:
        env["FLOTILLA_COMMAND_STATS_DIR"] = str(directory)
    return subprocess.run(
        [sys.executable, "-c", WORKLOAD, database],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def drop(settings: Settings, database: str) -> None:
    with pymongo.MongoClient(settings.mongo_url, serverSelectionTimeoutMS=5000) as client:
        client.drop_database(database)


def test_counts_every_command_and_amqp_operation(settings: Settings, tmp_path: Path) -> None:
    database = f"test_{uuid.uuid4().hex[:12]}"
    try:
        done = run_workload(tmp_path, database)
    finally:
        drop(settings, database)
    assert done.returncode == 0, done.stderr
    (stats_file,) = tmp_path.glob("*.json")
    stats = json.loads(stats_file.read_text())
    assert stats["process"] == "python"  # `python -c`: no script to name it after
    commands = stats["commands"]
    assert commands["insert"] == 3
    assert commands["find"] == 2
    assert commands["update"] == 1
    assert commands["findAndModify"] == 1
    assert commands["delete"] == 1
    # The client ends its sessions at close; FerretDB 1.24 refuses that command.
    assert set(stats["failed"]) <= {"endSessions"}
    assert stats["amqp"] == {"publish": 2, "get": 2, "get_empty": 1, "ack": 1}
    assert json.loads(done.stdout) == {"listeners": 1, "amqp_counted": True}


def test_unset_installs_nothing(settings: Settings) -> None:
    database = f"test_{uuid.uuid4().hex[:12]}"
    try:
        done = run_workload(None, database)
    finally:
        drop(settings, database)
    assert done.returncode == 0, done.stderr
    # Zero cost: no listener on the client, AMQP channels untouched.
    assert json.loads(done.stdout) == {"listeners": 0, "amqp_counted": False}
