"""`flotilla workers [TASK_QUEUE]`: task queues with their pending counts, or the workers
of one task queue (listProvisioners / listWorkerTypes / listWorkers); `flotilla pools`:
the provisioner's worker pools (Worker-Manager's listWorkerPools)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from cli.errors import EXIT_USAGE, CliError
from cli.output import Output
from cli.session import Clients
from cli.tasks import short_time


async def pages(
    call: Callable[..., Awaitable[dict[str, Any]]], key: str, *args: str
) -> AsyncIterator[dict[str, Any]]:
    query: dict[str, Any] = {}
    while True:
        page = await call(*args, query=query)
        for item in page[key]:
            yield item
        if not page.get("continuationToken"):
            return
        query = {"continuationToken": page["continuationToken"]}


async def list_task_queues(clients: Clients, out: Output) -> int:
    queue = clients.queue
    rows: list[dict[str, Any]] = []
    async for provisioner in pages(queue.listProvisioners, "provisioners"):
        provisioner_id = provisioner["provisionerId"]
        async for worker_type in pages(queue.listWorkerTypes, "workerTypes", provisioner_id):
            task_queue_id = f"{provisioner_id}/{worker_type['workerType']}"
            pending = await queue.pendingTasks(task_queue_id)
            rows.append(
                {
                    "taskQueueId": task_queue_id,
                    "pendingTasks": pending["pendingTasks"],
                    "stability": worker_type.get("stability", ""),
                    "lastDateActive": worker_type.get("lastDateActive"),
                    "description": worker_type.get("description", ""),
                }
            )
    if out.json_mode:
        out.json({"taskQueues": rows})
        return 0
    out.table(
        ["task queue", "pending", "stability", "last active", "note"],
        [
            [
                r["taskQueueId"],
                r["pendingTasks"],
                r["stability"],
                short_time(r["lastDateActive"]),
                r["description"],
            ]
            for r in rows
        ],
        title=f"{len(rows)} task queues",
    )
    return 0


async def list_workers(clients: Clients, out: Output, task_queue_id: str) -> int:
    provisioner_id, _, worker_type = task_queue_id.partition("/")
    if not worker_type:
        raise CliError(
            f"task queue {task_queue_id!r} is not <provisionerId>/<workerType>", EXIT_USAGE
        )
    workers = [
        worker
        async for worker in pages(clients.queue.listWorkers, "workers", provisioner_id, worker_type)
    ]
    if out.json_mode:
        out.json({"taskQueueId": task_queue_id, "workers": workers})
        return 0
    rows = []
    for worker in workers:
        latest = worker.get("latestTask") or {}
        rows.append(
            [
                worker["workerGroup"],
                worker["workerId"],
                short_time(worker.get("firstClaim")),
                short_time(worker.get("lastDateActive")),
                f"{latest['taskId']}/{latest['runId']}" if latest else "",
                short_time(worker.get("quarantineUntil")),
            ]
        )
    out.table(
        ["group", "worker", "first claim", "last active", "latest task/run", "quarantined until"],
        rows,
        title=f"{task_queue_id}: {len(workers)} workers",
    )
    return 0


async def list_pools(clients: Clients, out: Output) -> int:
    pools = [pool async for pool in pages(clients.worker_manager.listWorkerPools, "workerPools")]
    if out.json_mode:
        out.json({"workerPools": pools})
        return 0
    rows = []
    for pool in pools:
        config = pool.get("config") or {}
        rows.append(
            [
                pool["workerPoolId"],
                pool["providerId"],
                f"{config.get('minCapacity', 0)}-{config.get('maxCapacity', 0)}",
                pool.get("runningCapacity", 0),
                pool.get("requestedCapacity", 0),
                pool.get("stoppingCapacity", 0),
                short_time(pool.get("lastModified")),
            ]
        )
    out.table(
        ["pool", "provider", "min-max", "running", "requested", "stopping", "changed"],
        rows,
        title=f"{len(pools)} worker pools",
    )
    return 0
