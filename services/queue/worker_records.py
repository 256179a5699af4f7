"""Task-queue and worker records, created by worker activity (reference §3.2 "Where task
queues and workers come from"): claimWork, claimTask, reclaimTask and declareWorker.

Touching a record is throttled per key, except what a person reads right away: a claim
updates the worker's recent tasks at once. Upstream throttles to once every 30 min; the
composition root passes FLOTILLA_WORKER_ACTIVITY_RESOLUTION (default 60 s) so that
lastDateActive is fine enough for the provisioner's queueInactivityTimeout.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from pymongo import UpdateOne

from shared import group_commit
from shared.db import Database

TASK_QUEUES = "task_queues"
WORKERS = "workers"
RECENT_TASKS = 20
WORKER_LIFETIME = timedelta(days=1)
QUEUE_LIFETIME_WITHOUT_WORKER = timedelta(days=5)
THROTTLE_S = 30 * 60
WORKER_CACHE_S = 5.0
WORKER_CACHE_SIZE = 10_000


def worker_key(task_queue_id: str, worker_group: str, worker_id: str) -> str:
    return f"{task_queue_id}/{worker_group}/{worker_id}"


class WorkerRecords:
    def __init__(self, db: Database, *, throttle_s: float = THROTTLE_S) -> None:
        self.db = db
        self._throttle_s = throttle_s
        self._touched: dict[str, float] = {}
        # claimWork reads its worker (quarantine, recent tasks) on every call: kept here
        # for a few seconds instead. This replica's own changes update it at once; another
        # replica's quarantine is seen within WORKER_CACHE_S.
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def _due(self, key: str) -> bool:
        last = self._touched.get(key)
        now = time.monotonic()
        if last is not None and now - last < self._throttle_s:
            return False
        self._touched[key] = now
        return True

    async def touch_queue(
        self, task_queue_id: str, now: datetime, *, with_worker: bool = True, force: bool = False
    ) -> None:
        if not force and not self._due(f"queue:{task_queue_id}:{with_worker}"):
            return
        lifetime = WORKER_LIFETIME if with_worker else QUEUE_LIFETIME_WITHOUT_WORKER
        provisioner_id, worker_type = task_queue_id.split("/", 1)
        await self.db[TASK_QUEUES].update_one(
            {"_id": task_queue_id},
            {
                "$set": {"lastDateActive": now},
                "$max": {"expires": now + lifetime},
                "$setOnInsert": {
                    "provisionerId": provisioner_id,
                    "workerType": worker_type,
                    "description": "",
                    "stability": "experimental",
                },
            },
            upsert=True,
        )

    async def get_worker(
        self, task_queue_id: str, worker_group: str, worker_id: str, *, cached: bool = False
    ) -> dict[str, Any] | None:
        key = worker_key(task_queue_id, worker_group, worker_id)
        now = time.monotonic()
        if cached and (hit := self._cache.get(key)) is not None and now - hit[0] < WORKER_CACHE_S:
            return hit[1]
        document = await self.db[WORKERS].find_one({"_id": key})
        self._cache[key] = (now, document)
        if len(self._cache) > WORKER_CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        return document

    def forget(self, task_queue_id: str, worker_group: str, worker_id: str) -> None:
        """This replica changed the worker's record: read it afresh next time."""
        self._cache.pop(worker_key(task_queue_id, worker_group, worker_id), None)

    async def touch_worker(
        self,
        task_queue_id: str,
        worker_group: str,
        worker_id: str,
        now: datetime,
        *,
        existing: dict[str, Any] | None = None,
        claimed: list[dict[str, Any]] | None = None,
        expires: datetime | None = None,
    ) -> None:
        """Create or refresh the worker; `claimed` runs join its recent tasks."""
        key = worker_key(task_queue_id, worker_group, worker_id)
        if not claimed and expires is None and existing is not None and not self._due(key):
            return
        provisioner_id, worker_type = task_queue_id.split("/", 1)
        to_set: dict[str, Any] = {"lastDateActive": now}
        if claimed:
            recent = [*(existing or {}).get("recentTasks", []), *claimed][-RECENT_TASKS:]
            to_set["recentTasks"] = recent
        update: dict[str, Any] = {
            "$set": to_set,
            "$setOnInsert": {
                "taskQueueId": task_queue_id,
                "provisionerId": provisioner_id,
                "workerType": worker_type,
                "workerGroup": worker_group,
                "workerId": worker_id,
                "firstClaim": now,
            },
        }
        if expires is not None:
            to_set["expires"] = expires
        else:
            update["$max"] = {"expires": now + WORKER_LIFETIME}
        await group_commit.of(self.db[WORKERS]).write(UpdateOne({"_id": key}, update, upsert=True))
        if (hit := self._cache.get(key)) is not None and hit[1] is not None:
            self._cache[key] = (hit[0], {**hit[1], **to_set})
        else:
            self._cache.pop(key, None)
        await self.touch_queue(task_queue_id, now)
