"""Indexes completed tasks' `index.<namespace>` routes from the queue's task-completed
events (reference §3 "Pulse → index").

One durable queue per deployment (`shared.routing.index_queue`), bound to task-completed
with `route.index.#`, shared by every index replica. At-least-once: a message is acked
only once its entries are stored, and storing is safe to repeat (equal rank replaces,
namespace expiry only moves later). The task is read from the tasks collection (one get
by `_id`, cheaper than a signed HTTP call to the queue and as fresh: a task is completed
before its event leaves the outbox).

A message that names no task is dropped at once. A message whose handling keeps failing
for any reason but an unreachable database is retried a few times, then dropped, so it
cannot stall the queue; database outages are retried for as long as they last.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError

from services.index import entries
from services.index.store import IndexStore
from shared import routing
from shared.broker import Binding, Broker
from shared.db import Database
from shared.taskstore import TASKS, from_document
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

PREFETCH = 32
MAX_ATTEMPTS = 5
RETRY_DELAY_S = 0.5
_TRANSIENT = (ConnectionFailure, ServerSelectionTimeoutError)


async def declare(broker: Broker, database: str, expires_s: float | None) -> AbstractQueue:
    return await broker.bind_queue(
        routing.index_queue(database),
        [Binding("task-completed", routing.INDEX_BINDING)],
        durable=True,
        prefetch=PREFETCH,
        expires_s=expires_s,
    )


class Indexer:
    def __init__(self, db: Database, store: IndexStore) -> None:
        self.tasks = db[TASKS]
        self.store = store
        # Failed attempts per message body, bounded: a poison message is dropped after
        # MAX_ATTEMPTS. Kept in memory, so a restart gives it a few more tries; that is
        # bounded too, by the supervisor's patience.
        self._failures: OrderedDict[bytes, int] = OrderedDict()

    async def index_task(self, task_id: str) -> int:
        """Store the entries a completed task's routes ask for; how many were stored."""
        document = await self.tasks.find_one({"_id": task_id})
        if document is None:
            # Another deployment's task (the exchanges are shared), or long expired.
            return 0
        definition = from_document(document).definition
        found, problems = entries.from_task(
            task_id,
            list(definition.routes),
            dict(definition.extra),
            definition.expires,
            definition.created,
            routing.INDEX_ROUTE_PREFIX,
        )
        for problem in problems:
            log.warning("not indexing task: %s", problem, extra={"taskId": task_id})
        now = utcnow()
        for entry in found:
            await self.store.insert(entry, now)
        if found:
            log.info(
                "indexed task",
                extra={"taskId": task_id, "namespaces": [e.namespace for e in found]},
            )
        return len(found)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        task_id = _task_id(message.body)
        if task_id is None:
            log.error("dropping a message that names no task: %r", message.body[:200])
            await message.reject(requeue=False)
            return
        try:
            await self.index_task(task_id)
        except _TRANSIENT:
            log.warning("database unreachable; will retry", extra={"taskId": task_id})
            await asyncio.sleep(RETRY_DELAY_S)
            await message.nack(requeue=True)
            return
        except Exception:
            attempts = self._failed(message.body)
            if attempts >= MAX_ATTEMPTS:
                log.exception(
                    "dropping task after %d failures", attempts, extra={"taskId": task_id}
                )
                self._failures.pop(message.body, None)
                await message.reject(requeue=False)
            else:
                log.exception("indexing failed; will retry", extra={"taskId": task_id})
                await asyncio.sleep(RETRY_DELAY_S)
                await message.nack(requeue=True)
            return
        self._failures.pop(message.body, None)
        await message.ack()

    def _failed(self, body: bytes) -> int:
        attempts = self._failures.pop(body, 0) + 1
        self._failures[body] = attempts
        while len(self._failures) > 1000:
            self._failures.popitem(last=False)
        return attempts


def _task_id(body: bytes) -> str | None:
    try:
        value: Any = json.loads(body)["status"]["taskId"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None
