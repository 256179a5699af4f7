"""Task queues, workers and worker pools, with the pending/claimed counts a small live
chart on each task-queue page plots (the page asks `/console/counts/...` every few s)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from services.web.context import APIS, render, session_of
from services.web.upstream import UpstreamError, call, list_all

routes = web.RouteTableDef()


async def _pending(queue: Any, task_queue_id: str) -> int | None:
    try:
        return int((await call(queue.pendingTasks(task_queue_id)))["pendingTasks"])
    except UpstreamError:
        return None


async def _counts(queue: Any, task_queue_id: str) -> dict[str, int | None]:
    """pending and claimed; claimed needs `queue:claimed-count` (not in anonymous)."""
    try:
        counts = await call(queue.taskQueueCounts(task_queue_id))
        return {"pending": counts.get("pendingTasks"), "claimed": counts.get("claimedTasks")}
    except UpstreamError:
        return {"pending": await _pending(queue, task_queue_id), "claimed": None}


# Counts cost one call per task queue: only this many are counted per page view.
COUNTED_QUEUES = 200
COUNT_CONCURRENCY = 8


async def _task_queue_ids(queue: Any) -> list[str]:
    """listTaskQueues in one listing if the visitor may; else (anonymous) through the
    provisioners and their worker types, which the anonymous role may list."""
    try:
        return [q["taskQueueId"] for q in await list_all(queue.listTaskQueues, key="taskQueues")]
    except UpstreamError as exc:
        if exc.status != 403:
            raise
    provisioner_ids = [
        p["provisionerId"] for p in await list_all(queue.listProvisioners, key="provisioners")
    ]
    worker_types = await asyncio.gather(
        *(list_all(queue.listWorkerTypes, p, key="workerTypes") for p in provisioner_ids)
    )
    return [
        f"{p}/{wt['workerType']}"
        for p, wts in zip(provisioner_ids, worker_types, strict=True)
        for wt in wts
    ]


@routes.get("/provisioners")
async def provisioners(request: web.Request) -> web.StreamResponse:
    queue = request.app[APIS].queue(session_of(request))
    queues = sorted(await _task_queue_ids(queue))
    gate = asyncio.Semaphore(COUNT_CONCURRENCY)

    async def count(task_queue_id: str) -> dict[str, int | None]:
        async with gate:
            return await _counts(queue, task_queue_id)

    counts = await asyncio.gather(*(count(tq) for tq in queues[:COUNTED_QUEUES]))
    counts += [{"pending": None, "claimed": None}] * (len(queues) - len(counts))
    return render(request, "provisioners.html", queues=list(zip(queues, counts, strict=True)))


@routes.get("/provisioners/{provisionerId}/worker-types/{workerType}")
async def worker_type(request: web.Request) -> web.StreamResponse:
    provisioner_id, worker_type_ = (
        request.match_info["provisionerId"],
        request.match_info["workerType"],
    )
    queue = request.app[APIS].queue(session_of(request))
    workers = await list_all(queue.listWorkers, provisioner_id, worker_type_, key="workers")
    task_queue_id = f"{provisioner_id}/{worker_type_}"
    return render(
        request,
        "worker_type.html",
        task_queue_id=task_queue_id,
        workers=workers,
        counts=await _counts(queue, task_queue_id),
    )


@routes.get("/console/counts/{provisionerId}/{workerType}")
async def counts_json(request: web.Request) -> web.StreamResponse:
    task_queue_id = f"{request.match_info['provisionerId']}/{request.match_info['workerType']}"
    queue = request.app[APIS].queue(session_of(request))
    return web.json_response(
        await _counts(queue, task_queue_id), headers={"Cache-Control": "no-store"}
    )


@routes.get("/worker-manager")
async def worker_pools(request: web.Request) -> web.StreamResponse:
    manager = request.app[APIS].worker_manager(session_of(request))
    try:
        pools = await list_all(manager.listWorkerPools, key="workerPools")
        error = None
    except UpstreamError as exc:
        pools, error = [], exc.message
    return render(request, "pools.html", pools=pools, error=error)
