"""The Purge-Cache API under `/api/purge-cache/v1/` (reference §2), with upstream's method
names, routes and scopes, so `taskcluster.PurgeCache` works unchanged."""

from __future__ import annotations

from typing import Any

import pydantic

from services.purge_cache import rules
from shared import errors, paging
from shared.api import Call, declare
from shared.db import Database
from shared.timeutil import utcnow

COLLECTION = "purge_requests"
POOL = {"workerPoolId": rules.WORKER_POOL_ID_PATTERN}


class PurgeCacheRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    cacheName: pydantic.StrictStr


class PurgeCacheApi:
    def __init__(self, db: Database) -> None:
        self.requests = db[COLLECTION]

    @declare(
        "purgeCache",
        "POST",
        "/purge-cache/<workerPoolId>",
        title="Purge Worker Cache",
        scopes="purge-cache:<workerPoolId>:<cacheName>",
        input=PurgeCacheRequest,
        params=POOL,
    )
    async def purge_cache(self, call: Call) -> None:
        pool = rules.pool_id(call.params["workerPoolId"])
        name = call.body.cacheName
        call.authorize(workerPoolId=pool, cacheName=name)
        now = utcnow()
        request = {"cacheName": name, "before": now, "expires": now + rules.REQUEST_LIFETIME}
        await self.requests.update_one(
            {"_id": pool}, {"$set": {f"caches.{rules.cache_key(name)}": request}}, upsert=True
        )

    @declare(
        "purgeRequests",
        "GET",
        "/purge-cache/<workerPoolId>",
        title="Open Purge Requests for a worker pool",
        # the double colon is upstream's (reference §7.5)
        scopes="purge-cache:purge-requests::<workerPoolId>",
        params=POOL,
        query=("since",),
        scopes_from_params=False,  # checked with the decoded workerPoolId
    )
    async def purge_requests(self, call: Call) -> dict[str, Any]:
        pool = rules.pool_id(call.params["workerPoolId"])
        call.authorize(workerPoolId=pool)
        try:
            since = rules.parse_since(call.query.get("since"))
        except ValueError as exc:
            raise errors.InvalidRequestArguments(f"Invalid request arguments: {exc}") from exc
        document = await self.requests.find_one({"_id": pool})
        found = rules.requested_since(document, since, utcnow())
        return {"requests": [rules.entry_out(pool, r) for r in found]}

    @declare(
        "allPurgeRequests",
        "GET",
        "/purge-cache/list",
        title="All Open Purge Requests",
        scopes="purge-cache:all-purge-requests",
        query=paging.PAGE_QUERY,
    )
    async def all_purge_requests(self, call: Call) -> dict[str, Any]:
        # The administrators' listing reads every pool's document (there is one per pool
        # that ever had a purge); workers use purgeRequests.
        now = utcnow()
        everything = [
            rules.entry_out(document["_id"], request)
            async for document in self.requests.find({}).sort("_id", 1)
            for request in rules.open_requests(document, now)
        ]
        return paging.offset_page(everything, call.query, "requests")
