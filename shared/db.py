"""MongoDB connection and the indexes every collection needs, created idempotently at start-up.

Stays inside what both MongoDB and FerretDB support: no transactions, no change streams,
no `$lookup`. Every state change elsewhere is one conditional single-document update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from shared import commandstats

Document = dict[str, object]
DUPLICATE_KEY = 11000  # the server's error code for a unique-index violation
Database = AsyncDatabase[Document]

# Index declarations live in one place so every service creates the same set. Only the
# shape matters for idempotency: create_indexes with an identical spec is a no-op.
INDEXES: Mapping[str, Sequence[IndexModel]] = {
    "tasks": (
        IndexModel([("taskGroupId", ASCENDING), ("_id", ASCENDING)], name="by_group"),
        IndexModel([("takenUntil", ASCENDING)], name="by_taken_until", sparse=True),
        IndexModel([("deadlineDue", ASCENDING)], name="by_deadline_due", sparse=True),
        IndexModel([("expires", ASCENDING)], name="by_expires"),
        IndexModel([("outboxDue", ASCENDING)], name="by_outbox_due", sparse=True),
        # task-group-resolved: is a task of the group still open (never resolved)?
        IndexModel([("openInGroup", ASCENDING)], name="by_open_in_group", sparse=True),
        # listPendingTasks (an operator's tool; claimers take runs from RabbitMQ).
        IndexModel(
            [("taskQueueId", ASCENDING), ("pendingSince", ASCENDING)],
            name="by_queue_pending",
            sparse=True,
        ),
    ),
    "claimed_runs": (IndexModel([("taskQueueId", ASCENDING)], name="by_queue"),),
    "task_groups": (IndexModel([("expires", ASCENDING)], name="by_expires"),),
    "artifacts": (
        IndexModel(
            [("taskId", ASCENDING), ("runId", ASCENDING), ("name", ASCENDING)],
            name="artifact",
            unique=True,
        ),
        IndexModel([("expires", ASCENDING)], name="by_expires"),
    ),
    "workers": (
        IndexModel(
            [("taskQueueId", ASCENDING), ("workerGroup", ASCENDING), ("workerId", ASCENDING)],
            name="worker",
            unique=True,
        ),
    ),
    "task_queues": (IndexModel([("expires", ASCENDING)], name="by_expires"),),
    # The provisioner's workers, scanned per pool and state.
    "provisioned_workers": (
        IndexModel([("workerPoolId", ASCENDING), ("state", ASCENDING)], name="by_pool_state"),
    ),
}


def connect(mongo_url: str, **options: object) -> AsyncMongoClient[Document]:
    """A client that hands dates back as aware UTC datetimes (we never deal in naive ones).
    When FLOTILLA_COMMAND_STATS_DIR is set, it also counts its commands (shared.commandstats)."""
    listeners = commandstats.listeners()
    if listeners:
        options = {**options, "event_listeners": listeners}
    return AsyncMongoClient(mongo_url, tz_aware=True, **options)  # type: ignore[arg-type]


async def ensure_indexes(db: Database) -> None:
    """Create every declared index; safe to run from every replica at every start."""
    for collection, models in INDEXES.items():
        for model in models:
            # One index per command: FerretDB 1.24 drops the connection (a server-side panic)
            # when a createIndexes naming several indexes that already exist is repeated.
            await db[collection].create_indexes([model])
