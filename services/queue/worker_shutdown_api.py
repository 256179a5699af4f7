"""`workerShutdown` (Flotilla's own, beyond upstream): a provisioner that knows a worker
is gone (its process exited, its instance was terminated) resolves every run that worker
still holds as `exception/worker-shutdown`, so each is retried at once instead of after
the claim expires (upstream issues 7472, 7477).

The runs come from the short `claimed_runs` collection (shared.claims); each is resolved
with the ordinary transition, so a run the worker resolved itself meanwhile is left as it
is (the transition answers 409, which is skipped here).
"""

from __future__ import annotations

import logging
from typing import Any

from services.queue.context import QueueContext
from services.queue.workers_api import WORKER_PARAMS, WORKER_PATH
from shared import claims, errors, logs, transitions
from shared.api import Call, declare
from shared.timeutil import utcnow
from shared.transitions import Outcome, TaskRecord

log = logging.getLogger(__name__)

SHUTDOWN_SCOPE = "queue:worker-shutdown:<provisionerId>/<workerType>/<workerGroup>/<workerId>"


def resolve_if_held(
    record: TaskRecord, run_id: int, worker_group: str, worker_id: str, *, now: Any
) -> Outcome:
    """`exception/worker-shutdown` for a run this worker holds; 409 otherwise."""
    run = record.run(run_id)
    if run is None or (run.workerGroup, run.workerId) != (worker_group, worker_id):
        raise errors.RequestConflict(f"Run {run_id} of task {record.task_id} is not this worker's")
    return transitions.resolve(record, run_id, "worker-shutdown", now=now)


class WorkerShutdownApi:
    def __init__(self, context: QueueContext) -> None:
        self.ctx = context

    @declare(
        "workerShutdown",
        "POST",
        WORKER_PATH + "/shutdown",
        title="Report a worker shutting down",
        scopes=SHUTDOWN_SCOPE,
        params=WORKER_PARAMS,
    )
    async def worker_shutdown(self, call: Call) -> dict[str, Any]:
        p = call.params
        task_queue_id = f"{p['provisionerId']}/{p['workerType']}"
        group, worker_id = p["workerGroup"], p["workerId"]
        held = (
            await self.ctx.db[claims.COLLECTION]
            .find({"taskQueueId": task_queue_id, "workerGroup": group, "workerId": worker_id})
            .to_list(None)
        )
        resolved: list[dict[str, Any]] = []
        for claim in held:
            task_id, run_id = claim["taskId"], int(claim["runId"])
            try:
                await self.ctx.store.mutate(
                    task_id,
                    lambda r, run_id=run_id: resolve_if_held(
                        r, run_id, group, worker_id, now=utcnow()
                    ),
                )
            except (errors.RequestConflict, errors.ResourceNotFound):
                continue  # resolved meanwhile (by the worker itself, or claim-expiry)
            resolved.append({"taskId": task_id, "runId": run_id})
            log.info(
                logs.TASK_RESOLVED,
                extra=logs.task_fields(
                    task_id, run_id, reason="worker-shutdown", workerId=worker_id
                ),
            )
        return {"resolved": resolved}
