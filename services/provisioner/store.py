"""The provisioner's MongoDB state: worker pools, the workers it launched, and the lease
that makes one provisioner replica the active one.

Every change is one conditional single-document update, so API handlers, the active
loop and a process watcher can race on a worker and the first to arrive wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from shared.db import Database

POOLS = "worker_pools"
WORKERS = "provisioned_workers"
LEASES = "provisioner_lease"

REQUESTED, RUNNING, STOPPING, STOPPED = "requested", "running", "stopping", "stopped"
LIVE_STATES = (REQUESTED, RUNNING, STOPPING)
STATES = (*LIVE_STATES, STOPPED)
NULL_PROVIDER = "null-provider"  # a deleted pool: no new workers, gone once its workers are
STOPPED_KEPT = timedelta(hours=1)  # stopped workers stay listable this long


def worker_key(pool_id: str, group: str, worker_id: str) -> str:
    return f"{pool_id}/{group}/{worker_id}"


@dataclass(frozen=True)
class PoolStats:
    """Capacity and counts per state of a pool's workers."""

    capacity: Mapping[str, int]
    count: Mapping[str, int]

    @classmethod
    def of(cls, workers: Iterable[Mapping[str, Any]]) -> PoolStats:
        capacity = dict.fromkeys(STATES, 0)
        count = dict.fromkeys(STATES, 0)
        for worker in workers:
            capacity[worker["state"]] += int(worker.get("capacity", 1))
            count[worker["state"]] += 1
        return cls(capacity, count)


class PoolStore:
    def __init__(self, db: Database) -> None:
        self.pools = db[POOLS]
        self.workers = db[WORKERS]
        self.leases = db[LEASES]

    # --- pools ----------------------------------------------------------------------------

    async def get_pool(self, pool_id: str) -> dict[str, Any] | None:
        return await self.pools.find_one({"_id": pool_id})

    async def insert_pool(self, document: dict[str, Any]) -> bool:
        try:
            await self.pools.insert_one(document)
        except DuplicateKeyError:
            return False
        return True

    async def update_pool(self, pool_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self.pools.find_one_and_update(
            {"_id": pool_id}, {"$set": dict(changes)}, return_document=ReturnDocument.AFTER
        )

    async def delete_pool_if_empty(self, pool_id: str) -> bool:
        if await self.workers.count_documents(
            {"workerPoolId": pool_id, "state": {"$in": list(LIVE_STATES)}}
        ):
            return False
        await self.pools.delete_one({"_id": pool_id, "providerId": NULL_PROVIDER})
        return True

    async def list_pools(self) -> list[dict[str, Any]]:
        return [p async for p in self.pools.find({}).sort("_id", ASCENDING)]

    # --- workers --------------------------------------------------------------------------

    async def insert_worker(self, document: dict[str, Any]) -> None:
        await self.workers.insert_one(document)

    async def insert_worker_once(self, document: dict[str, Any]) -> bool:
        """Insert unless the worker exists (createWorker); False if it did."""
        try:
            await self.workers.insert_one(document)
        except DuplicateKeyError:
            return False
        return True

    async def get_worker(self, pool_id: str, group: str, worker_id: str) -> dict[str, Any] | None:
        return await self.workers.find_one({"_id": worker_key(pool_id, group, worker_id)})

    async def workers_of(
        self, pool_id: str, states: Iterable[str] = STATES
    ) -> list[dict[str, Any]]:
        query = {"workerPoolId": pool_id, "state": {"$in": list(states)}}
        return [w async for w in self.workers.find(query).sort("_id", ASCENDING)]

    async def set_worker(
        self,
        key: str,
        changes: Mapping[str, Any],
        *,
        from_states: Iterable[str] = STATES,
        unset: Iterable[str] = (),
        return_before: bool = False,
    ) -> dict[str, Any] | None:
        """Change a worker if it is in one of `from_states`; None if it was not. Returns
        the document after the change (or before it, with `return_before`)."""
        update: dict[str, Any] = {"$set": dict(changes)}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        return await self.workers.find_one_and_update(
            {"_id": key, "state": {"$in": list(from_states)}},
            update,
            return_document=ReturnDocument.BEFORE if return_before else ReturnDocument.AFTER,
        )

    async def rotate_secret(
        self, key: str, *, old_hash: str, new_hash: str, now: datetime
    ) -> dict[str, Any] | None:
        """Swap a running worker's reregistration secret if it is still `old_hash`."""
        return await self.workers.find_one_and_update(
            {"_id": key, "state": RUNNING, "reregistrationSecretHash": old_hash},
            {"$set": {"reregistrationSecretHash": new_hash, "lastModified": now}},
            return_document=ReturnDocument.AFTER,
        )

    async def forget_stopped(self, pool_id: str, now: datetime) -> None:
        await self.workers.delete_many(
            {"workerPoolId": pool_id, "state": STOPPED, "expires": {"$lt": now}}
        )

    # --- the lease ------------------------------------------------------------------------

    async def hold_lease(self, holder: str, now: datetime, ttl_s: float) -> bool:
        """Take or renew the lease: succeeds if it is free, expired, or already ours."""
        try:
            document = await self.leases.find_one_and_update(
                {"_id": "provisioner", "$or": [{"holder": holder}, {"expires": {"$lt": now}}]},
                {"$set": {"holder": holder, "expires": now + timedelta(seconds=ttl_s)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # someone else holds it (the upsert collided with their document)
        return document is not None and document.get("holder") == holder

    async def release_lease(self, holder: str) -> None:
        await self.leases.delete_one({"_id": "provisioner", "holder": holder})
