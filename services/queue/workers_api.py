"""Provisioners, worker types, task queues, queue counts and workers (reference §3.2).

All of it comes from worker activity (services.queue.worker_records): a task queue
exists once a worker has asked it for work; provisioners are the task queues grouped by
their first half. Expired records are hidden.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING

from services.queue.context import QueueContext
from services.queue.worker_records import (
    QUEUE_LIFETIME_WITHOUT_WORKER,
    TASK_QUEUES,
    WORKERS,
    worker_key,
)
from shared import claims, errors, paging
from shared.api import Call, declare
from shared.models import (
    PROVISIONER_ID_PATTERN,
    TASK_QUEUE_ID_PATTERN,
    URL_WORKER_TYPE_PATTERN,
    TaskQueueId,
    Timestamp,
)
from shared.taskstore import TASKS, from_document
from shared.timeutil import format_ts, utcnow

WORKER_ID_PATTERN = r"^([a-zA-Z0-9-_]{1,38})$"
QUEUE_PARAMS = {"provisionerId": PROVISIONER_ID_PATTERN, "workerType": URL_WORKER_TYPE_PATTERN}
WORKER_PARAMS = {**QUEUE_PARAMS, "workerGroup": WORKER_ID_PATTERN, "workerId": WORKER_ID_PATTERN}
TQ_PARAM = {"taskQueueId": TASK_QUEUE_ID_PATTERN}
DECLARE_SCOPE = (
    "queue:declare-worker:<provisionerId>/<workerType>/<workerGroup>/<workerId>#<property>"
)
NEVER_QUARANTINED = timedelta(days=3652)
WORKER_PATH = (
    "/provisioners/<provisionerId>/worker-types/<workerType>/workers/<workerGroup>/<workerId>"
)


class CountsBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    taskQueueIds: Annotated[list[TaskQueueId], Field(max_length=1000)]


class QuarantineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quarantineUntil: Timestamp
    quarantineInfo: Annotated[str, Field(max_length=4000)] = "[unspecified]"


class DeclareWorkerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires: Timestamp  # required, as upstream


def _queue_out(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "taskQueueId": document["_id"],
        "description": document.get("description", ""),
        "stability": document.get("stability", "experimental"),
        "expires": format_ts(document["expires"]),
        "lastDateActive": format_ts(document["lastDateActive"]),
    }


def _worker_type_out(document: dict[str, Any]) -> dict[str, Any]:
    provisioner_id, worker_type = document["_id"].split("/", 1)
    return {"provisionerId": provisioner_id, "workerType": worker_type, **_queue_out(document)}


def provisioners_of(queues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Provisioners as upstream derives them from task queues: latest expiry and activity."""
    merged: dict[str, dict[str, Any]] = {}
    for queue in queues:
        provisioner_id = queue["_id"].split("/", 1)[0]
        seen = merged.setdefault(
            provisioner_id,
            {"expires": queue["expires"], "lastDateActive": queue["lastDateActive"]},
        )
        seen["expires"] = max(seen["expires"], queue["expires"])
        seen["lastDateActive"] = max(seen["lastDateActive"], queue["lastDateActive"])
    return [
        {
            "provisionerId": provisioner_id,
            "description": "",
            "stability": "experimental",
            "expires": format_ts(values["expires"]),
            "lastDateActive": format_ts(values["lastDateActive"]),
        }
        for provisioner_id, values in sorted(merged.items())
    ]


def _worker_out(document: dict[str, Any], now: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {
        "provisionerId": document["provisionerId"],
        "workerType": document["workerType"],
        "taskQueueId": document["taskQueueId"],
        "workerGroup": document["workerGroup"],
        "workerId": document["workerId"],
        "recentTasks": list(document.get("recentTasks", [])),
        "expires": format_ts(document["expires"]),
        "firstClaim": format_ts(document["firstClaim"]),
        "lastDateActive": format_ts(document["lastDateActive"]),
    }
    # Always present (reference §3.2): upstream creates workers with quarantineUntil ten
    # years before their first claim, i.e. "not quarantined".
    quarantine = document.get("quarantineUntil") or document["firstClaim"] - NEVER_QUARANTINED
    out["quarantineUntil"] = format_ts(quarantine)
    if document.get("quarantineDetails"):
        out["quarantineDetails"] = [
            {
                **d,
                "updatedAt": format_ts(d["updatedAt"]),
                "quarantineUntil": format_ts(d["quarantineUntil"]),
            }
            for d in document["quarantineDetails"]
        ]
    return out


def _worker_summary(document: dict[str, Any], now: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {
        "workerGroup": document["workerGroup"],
        "workerId": document["workerId"],
        "firstClaim": format_ts(document["firstClaim"]),
    }
    if document.get("lastDateActive") is not None:
        out["lastDateActive"] = format_ts(document["lastDateActive"])
    if document.get("recentTasks"):
        out["latestTask"] = document["recentTasks"][-1]
    quarantine = document.get("quarantineUntil")
    if quarantine is not None and quarantine > now:
        out["quarantineUntil"] = format_ts(quarantine)
    return out


def _waiting_queue(task_queue_id: str, now: datetime) -> dict[str, Any]:
    """The record of a task queue that has pending tasks but no worker yet: active since
    its oldest pending run (`now`), kept as long as a queue whose tasks no worker took
    (upstream: 5 days). Stable from one call to the next, so listings page cleanly."""
    provisioner_id, worker_type = task_queue_id.split("/", 1)
    return {
        "_id": task_queue_id,
        "provisionerId": provisioner_id,
        "workerType": worker_type,
        "description": "no worker has asked for work yet; known from its pending tasks",
        "stability": "experimental",
        "expires": now + QUEUE_LIFETIME_WITHOUT_WORKER,
        "lastDateActive": now,
    }


WT_PATH = "/provisioners/<provisionerId>/worker-types/<workerType>"
COUNTS_SCOPES = ["queue:pending-count:<taskQueueId>", "queue:claimed-count:<taskQueueId>"]


class WorkersApi:
    def __init__(self, context: QueueContext) -> None:
        self.ctx = context
        self.db = context.db

    # --- task queues and provisioners -----------------------------------------------------

    async def _queues(self, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        now, wanted = utcnow(), query or {}
        live = {"expires": {"$gt": now}, **wanted}
        cursor = self.db[TASK_QUEUES].find(live).sort("_id", ASCENDING)
        found = {document["_id"]: document async for document in cursor}
        # Task queues no worker has asked yet, known from their pending tasks (an operator's
        # listing: it reads the open tasks; createTask stays free of queue bookkeeping).
        oldest: dict[str, datetime] = {}
        pending_tasks = {"pendingSince": {"$exists": True}, "deadline": {"$gt": now}}
        fields = {"taskQueueId": 1, "pendingSince": 1}
        async for task in self.db[TASKS].find(pending_tasks, fields):
            since = task["pendingSince"]
            if task["taskQueueId"] not in oldest or since < oldest[task["taskQueueId"]]:
                oldest[task["taskQueueId"]] = since
        for task_queue_id, since in oldest.items():
            waiting = _waiting_queue(task_queue_id, since)
            if task_queue_id not in found and all(waiting[k] == v for k, v in wanted.items()):
                found[task_queue_id] = waiting
        return [found[key] for key in sorted(found)]

    async def _queue(self, task_queue_id: str) -> dict[str, Any]:
        now = utcnow()
        document = await self.db[TASK_QUEUES].find_one({"_id": task_queue_id})
        if document is not None and document["expires"] > now:
            return document
        if await self.ctx.store.outbox.pending.count(task_queue_id) > 0:
            return _waiting_queue(task_queue_id, now)
        raise errors.ResourceNotFound(f"Task queue `{task_queue_id}` not found")

    @declare(
        "listProvisioners",
        "GET",
        "/provisioners",
        title="Get a list of all active provisioners",
        scopes="queue:list-provisioners",
        query=paging.PAGE_QUERY,
    )
    async def list_provisioners(self, call: Call) -> dict[str, Any]:
        return paging.offset_page(provisioners_of(await self._queues()), call.query, "provisioners")

    @declare(
        "getProvisioner",
        "GET",
        "/provisioners/<provisionerId>",
        title="Get an active provisioner",
        scopes="queue:get-provisioner:<provisionerId>",
        params={"provisionerId": PROVISIONER_ID_PATTERN},
    )
    async def get_provisioner(self, call: Call) -> dict[str, Any]:
        provisioner_id = call.params["provisionerId"]
        found = provisioners_of(await self._queues({"provisionerId": provisioner_id}))
        if not found:
            raise errors.ResourceNotFound(f"Provisioner `{provisioner_id}` not found")
        return found[0]

    @declare(
        "listWorkerTypes",
        "GET",
        "/provisioners/<provisionerId>/worker-types",
        title="Get a list of all active worker-types",
        scopes="queue:list-worker-types:<provisionerId>",
        params={"provisionerId": PROVISIONER_ID_PATTERN},
        query=paging.PAGE_QUERY,
    )
    async def list_worker_types(self, call: Call) -> dict[str, Any]:
        queues = await self._queues({"provisionerId": call.params["provisionerId"]})
        return paging.offset_page([_worker_type_out(q) for q in queues], call.query, "workerTypes")

    @declare(
        "getWorkerType",
        "GET",
        WT_PATH,
        title="Get a worker-type",
        scopes="queue:get-worker-type:<provisionerId>/<workerType>",
        params=QUEUE_PARAMS,
    )
    async def get_worker_type(self, call: Call) -> dict[str, Any]:
        task_queue_id = f"{call.params['provisionerId']}/{call.params['workerType']}"
        return _worker_type_out(await self._queue(task_queue_id))

    @declare(
        "listTaskQueues",
        "GET",
        "/task-queues",
        title="Get a list of all active task queues",
        scopes="queue:list-task-queues",
        query=paging.PAGE_QUERY,
    )
    async def list_task_queues(self, call: Call) -> dict[str, Any]:
        return paging.offset_page(
            [_queue_out(q) for q in await self._queues()], call.query, "taskQueues"
        )

    @declare(
        "getTaskQueue",
        "GET",
        "/task-queues/<taskQueueId>",
        title="Get a task queue",
        scopes="queue:get-task-queue:<taskQueueId>",
        params=TQ_PARAM,
    )
    async def get_task_queue(self, call: Call) -> dict[str, Any]:
        return _queue_out(await self._queue(call.params["taskQueueId"]))

    # --- counts and lists -----------------------------------------------------------------

    async def _counts(self, task_queue_id: str) -> dict[str, Any]:
        pending_count = await self.ctx.store.outbox.pending.count(task_queue_id)
        claimed = await claims.count(self.db, task_queue_id)
        return {
            "taskQueueId": task_queue_id,
            "pendingTasks": pending_count,
            "claimedTasks": claimed,
        }

    @declare(
        "pendingTasks",
        "GET",
        "/pending/<taskQueueId>",
        title="Get Number of Pending Tasks",
        scopes="queue:pending-count:<taskQueueId>",
        params=TQ_PARAM,
    )
    async def pending_tasks(self, call: Call) -> dict[str, Any]:
        task_queue_id = call.params["taskQueueId"]
        provisioner_id, worker_type = task_queue_id.split("/", 1)
        count = await self.ctx.store.outbox.pending.count(task_queue_id)
        return {
            "provisionerId": provisioner_id,
            "workerType": worker_type,
            "taskQueueId": task_queue_id,
            "pendingTasks": count,
        }

    @declare(
        "taskQueueCounts",
        "GET",
        "/task-queues/<taskQueueId>/counts",
        title="Get Number of Pending and Claimed Tasks",
        scopes={"AllOf": COUNTS_SCOPES},
        params=TQ_PARAM,
    )
    async def task_queue_counts(self, call: Call) -> dict[str, Any]:
        return await self._counts(call.params["taskQueueId"])

    @declare(
        "taskQueueCountsBatch",
        "POST",
        "/task-queues/counts",
        title="Get Pending and Claimed Task Counts for Multiple Task Queues",
        scopes={
            "AllOf": [
                {
                    "for": "taskQueueId",
                    "in": "taskQueueIds",
                    "each": {"AllOf": COUNTS_SCOPES},
                }
            ]
        },
        input=CountsBatchRequest,
        scopes_from_params=False,
    )
    async def task_queue_counts_batch(self, call: Call) -> dict[str, Any]:
        ids = call.body.taskQueueIds
        call.authorize(taskQueueIds=ids)
        return {"taskQueueCounts": [await self._counts(task_queue_id) for task_queue_id in ids]}

    @declare(
        "listPendingTasks",
        "GET",
        "/task-queues/<taskQueueId>/pending",
        title="List Pending Tasks",
        scopes="queue:pending-list:<taskQueueId>",
        params=TQ_PARAM,
        query=paging.PAGE_QUERY,
    )
    async def list_pending_tasks(self, call: Call) -> dict[str, Any]:
        task_queue_id = call.params["taskQueueId"]
        limit = paging.limit(call.query)
        offset = paging.decode_offset(call.query)
        # From MongoDB, by the time each run became pending (an operator's tool: on
        # FerretDB this reads the queue's tasks; claimers never do).
        cursor = (
            self.db[TASKS]
            .find({"taskQueueId": task_queue_id, "pendingSince": {"$exists": True}})
            .sort([("pendingSince", ASCENDING), ("_id", ASCENDING)])
            .skip(offset)
            .limit(limit + 1)
        )
        entries = await self.ctx.store.complete([from_document(d) async for d in cursor])
        out: dict[str, Any] = {
            "tasks": [
                {
                    "taskId": record.task_id,
                    "runId": len(record.runs) - 1,
                    "task": record.definition.to_output(),
                    "inserted": format_ts(record.runs[-1].scheduled),
                }
                for record in entries[:limit]
            ]
        }
        if len(entries) > limit:
            out["continuationToken"] = paging.encode(offset + limit)
        return out

    @declare(
        "listClaimedTasks",
        "GET",
        "/task-queues/<taskQueueId>/claimed",
        title="List claimed Tasks",
        scopes="queue:claimed-list:<taskQueueId>",
        params=TQ_PARAM,
        query=paging.PAGE_QUERY,
    )
    async def list_claimed_tasks(self, call: Call) -> dict[str, Any]:
        task_queue_id = call.params["taskQueueId"]
        limit = paging.limit(call.query)
        held = await claims.page(self.db, task_queue_id, paging.decode_str(call.query), limit + 1)
        found = await self.ctx.store.load_many([c["taskId"] for c in held[:limit]])
        out: dict[str, Any] = {
            "tasks": [
                {
                    "taskId": c["taskId"],
                    "runId": c["runId"],
                    "workerGroup": c["workerGroup"],
                    "workerId": c["workerId"],
                    "claimed": format_ts(c["started"]),
                    "task": found[c["taskId"]].definition.to_output(),
                }
                for c in held[:limit]
                if c["taskId"] in found
            ]
        }
        if len(held) > limit:
            out["continuationToken"] = paging.encode(held[limit - 1]["_id"])
        return out

    # --- workers --------------------------------------------------------------------------

    @declare(
        "listWorkers",
        "GET",
        f"{WT_PATH}/workers",
        title="Get a list of all active workers of a workerType",
        scopes="queue:list-workers:<provisionerId>/<workerType>",
        params=QUEUE_PARAMS,
        query=(*paging.PAGE_QUERY, "quarantined"),
    )
    async def list_workers(self, call: Call) -> dict[str, Any]:
        task_queue_id = f"{call.params['provisionerId']}/{call.params['workerType']}"
        now = utcnow()
        quarantined = call.query.get("quarantined")
        if quarantined not in (None, "true", "false"):
            raise errors.InvalidRequestArguments("quarantined must be `true` or `false`")
        cursor = self.db[WORKERS].find({"taskQueueId": task_queue_id}).sort("_id", ASCENDING)
        workers = []
        async for document in cursor:
            is_quarantined = (document.get("quarantineUntil") or now) > now
            if quarantined is not None and is_quarantined != (quarantined == "true"):
                continue
            if document["expires"] <= now and not is_quarantined:
                continue
            workers.append(_worker_summary(document, now))
        return paging.offset_page(workers, call.query, "workers")

    async def _worker(self, call: Call) -> dict[str, Any]:
        p = call.params
        document = await self.ctx.workers.get_worker(
            f"{p['provisionerId']}/{p['workerType']}", p["workerGroup"], p["workerId"]
        )
        if document is None:
            raise errors.ResourceNotFound(
                f"Worker {p['workerGroup']}/{p['workerId']} not found in "
                f"{p['provisionerId']}/{p['workerType']}"
            )
        return document

    @declare(
        "getWorker",
        "GET",
        WORKER_PATH,
        title="Get a worker from worker-type",
        scopes="queue:get-worker:<provisionerId>/<workerType>/<workerGroup>/<workerId>",
        params=WORKER_PARAMS,
    )
    async def get_worker(self, call: Call) -> dict[str, Any]:
        return _worker_out(await self._worker(call), utcnow())

    @declare(
        "quarantineWorker",
        "PUT",
        WORKER_PATH,
        title="Quarantine a worker",
        scopes="queue:quarantine-worker:<provisionerId>/<workerType>/<workerGroup>/<workerId>",
        input=QuarantineRequest,
        params=WORKER_PARAMS,
    )
    async def quarantine_worker(self, call: Call) -> dict[str, Any]:
        document = await self._worker(call)
        body: QuarantineRequest = call.body
        history = [
            *document.get("quarantineDetails", []),
            {
                "clientId": call.principal.client_id or "anonymous",
                "updatedAt": utcnow(),
                "quarantineUntil": body.quarantineUntil,
                "quarantineInfo": body.quarantineInfo,
            },
        ]
        await self.db[WORKERS].update_one(
            {"_id": document["_id"]},
            {"$set": {"quarantineUntil": body.quarantineUntil, "quarantineDetails": history}},
        )
        self.ctx.workers.forget(
            document["taskQueueId"], document["workerGroup"], document["workerId"]
        )
        return _worker_out(await self._worker(call), utcnow())

    @declare(
        "declareWorker",
        "PUT",
        f"{WT_PATH}/<workerGroup>/<workerId>",
        title="Declare a worker",
        scopes={
            "AllOf": [
                {
                    "for": "property",
                    "in": "properties",
                    "each": DECLARE_SCOPE,
                }
            ]
        },
        input=DeclareWorkerRequest,
        params=WORKER_PARAMS,
        scopes_from_params=False,
    )
    async def declare_worker(self, call: Call) -> dict[str, Any]:
        p = call.params
        properties = sorted(call.raw_payload) if isinstance(call.raw_payload, dict) else []
        call.authorize(properties=properties)
        task_queue_id = f"{p['provisionerId']}/{p['workerType']}"
        now = utcnow()
        await self.ctx.workers.touch_worker(
            task_queue_id, p["workerGroup"], p["workerId"], now, expires=call.body.expires
        )
        await self.ctx.workers.touch_queue(task_queue_id, now, force=True)
        document = await self.db[WORKERS].find_one(
            {"_id": worker_key(task_queue_id, p["workerGroup"], p["workerId"])}
        )
        assert document is not None
        return _worker_out(document, now)
