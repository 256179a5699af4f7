"""The Celery side of the comparison (bench/bench_celery.py): the app, its three tasks, and
the worker process, `python -m bench.celery_app` with its settings as JSON in
FLOTILLA_BENCH_CELERY (the broker URL carries a password, so it stays off the command line).

It imports nothing but Celery: the worker's memory is measured, and pulling in the
benchmark's own dependencies (aiohttp, pymongo, the taskcluster client) would inflate it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

CONFIG_ENV = "FLOTILLA_BENCH_CELERY"
NOOP = "flotilla_bench.noop"
HEADER = "flotilla_bench.header"
CALLBACK = "flotilla_bench.callback"


@dataclass(frozen=True)
class PeerConfig:
    broker_url: str
    backend_url: str
    queue: str  # a queue (and direct exchange) of its own, deleted afterwards
    concurrency: int = 2
    pool: str = "prefork"
    prefetch_multiplier: int = 4
    publish_connections: int = 50  # the client's producer pool: one per sending thread

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> PeerConfig:
        return cls(**json.loads(text))


def make_app(config: PeerConfig) -> Celery:
    """The same app on both sides: the client sends by task name, the worker runs them."""
    app = Celery("flotilla-bench", broker=config.broker_url, backend=config.backend_url)
    exchange = Exchange(config.queue, type="direct", durable=True)
    app.conf.update(
        # Durability to match Flotilla's: a durable queue, persistent messages, publisher
        # confirms (apply_async returns once RabbitMQ has taken the message, as createTask
        # returns once MongoDB has), and acks only after the task ran and its result is
        # stored, so a worker crash redelivers instead of losing the task.
        task_queues=[Queue(config.queue, exchange, routing_key=config.queue, durable=True)],
        task_default_queue=config.queue,
        task_default_exchange=config.queue,
        task_default_routing_key=config.queue,
        task_default_delivery_mode="persistent",
        broker_transport_options={"confirm_publish": True},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Celery's default prefetch (4 per pool process): short tasks want a few in hand.
        worker_prefetch_multiplier=config.prefetch_multiplier,
        broker_pool_limit=config.publish_connections,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        # No monitoring traffic: no events, no remote control (its pidbox queues would also
        # outlive the run on the shared broker).
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
        worker_hijack_root_logger=False,
    )

    @app.task(name=NOOP)
    def noop(sent: float) -> float:
        # The send time comes back as the result; the backend stamps date_done when storing.
        return sent

    @app.task(name=HEADER)
    def header(number: int) -> float:
        return time.time()  # the end of this header task's body

    @app.task(name=CALLBACK)
    def callback(results: list[float]) -> dict[str, Any]:
        started = time.time()  # first thing: when the chord's callback began to run
        return {"started": started, "n": len(results), "last_header_end": max(results)}

    return app


def worker_argv(config: PeerConfig, node_name: str) -> list[str]:
    return [
        "worker",
        f"--pool={config.pool}",
        f"--concurrency={config.concurrency}",
        "--loglevel=WARNING",  # Celery's default: no log line per task
        # One worker, nothing to synchronise with at start-up or while running.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--queues={config.queue}",
        f"--hostname={node_name}",
    ]


def main() -> None:
    config = PeerConfig.from_env(os.environ[CONFIG_ENV])
    node_name = sys.argv[1] if len(sys.argv) > 1 else "flotilla-bench@%h"
    make_app(config).worker_main(worker_argv(config, node_name))


if __name__ == "__main__":
    main()
