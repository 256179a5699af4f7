"""`flotilla pending rebuild TASK_QUEUE...`: an operator's repair for pending runs whose
RabbitMQ messages were lost (a broker's disk, a deleted queue). Works on MongoDB and
RabbitMQ directly, as the services do (shared.pending: `PendingQueues.rebuild`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import aiormq

from cli.config import CliConfig
from cli.errors import EXIT_USAGE, CliError
from cli.output import Output
from shared import db as dbmod
from shared.broker import Broker, BrokerError
from shared.models.common import TASK_QUEUE_ID_PATTERN
from shared.pending import PendingQueues, Rebuilt

MONGO_TIMEOUT_MS = 10_000


async def rebuild(config: CliConfig, out: Output, task_queue_ids: Sequence[str]) -> int:
    for task_queue_id in task_queue_ids:
        if not re.match(TASK_QUEUE_ID_PATTERN, task_queue_id):
            raise CliError(
                f"task queue {task_queue_id!r} is not <provisionerId>/<workerType>", EXIT_USAGE
            )
    client = dbmod.connect(config.mongo_url, serverSelectionTimeoutMS=MONGO_TIMEOUT_MS)
    try:
        await client.admin.command("ping")
        broker = await Broker.connect(config.amqp_url, prefix=config.exchange_prefix)
        try:
            queues = PendingQueues(
                client[config.mongo_db],
                lambda: broker,
                expires_s=config.pending_queue_expires_s,
            )
            done: list[Rebuilt] = []
            for task_queue_id in task_queue_ids:
                out.note(f"rebuilding {task_queue_id} ...")
                done.append(await _rebuild_one(queues, task_queue_id))
        finally:
            await broker.close()
    finally:
        await client.close()
    show(out, config.mongo_db, done)
    return 0


async def _rebuild_one(queues: PendingQueues, task_queue_id: str) -> Rebuilt:
    try:
        return await queues.rebuild(task_queue_id)
    except BrokerError as exc:
        if isinstance(exc.__cause__, aiormq.exceptions.ChannelPreconditionFailed):
            raise CliError(
                f"{exc}; the services declared it with other arguments: set "
                "FLOTILLA_PENDING_QUEUE_EXPIRES as they have it",
                EXIT_USAGE,
            ) from exc
        raise


def show(out: Output, database: str, done: Sequence[Rebuilt]) -> None:
    if out.json_mode:
        out.json(
            {
                "database": database,
                "rebuilt": [
                    {
                        "taskQueueId": r.task_queue_id,
                        "republished": r.republished,
                        "depthBefore": r.depth_before,
                        "depthAfter": r.depth_after,
                        "pendingTasks": r.pending,
                        "exact": r.exact,
                    }
                    for r in done
                ],
            }
        )
        return
    out.table(
        ["task queue", "republished", "depth before", "depth after", "pendingTasks"],
        [
            [
                r.task_queue_id,
                r.republished,
                r.depth_before,
                r.depth_after,
                r.pending if r.exact else f"{r.pending} (unsettled)",
            ]
            for r in done
        ],
        title=f"pending queues rebuilt from database {database}",
    )
    if not all(r.exact for r in done):
        out.note(
            "unsettled: work kept arriving while the count was checked; every pending run "
            "has its message, but pendingTasks may be off by a few. Run the rebuild again."
        )
