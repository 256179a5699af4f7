"""The worker interface: claimWork (long poll), claimTask, reclaimTask and the reports.

claimWork takes messages from the task queue's pending queue in RabbitMQ (shared.pending:
priority, then first in, first out), turns each into a claim with the one conditional
update of the task, acks the message once that update is stored, and otherwise waits to
be woken by a task-pending event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from services.queue import credentials
from services.queue.context import QueueContext
from services.queue.tasks_api import RUN_PARAMS, status_body
from shared import errors, logs, pending, transitions
from shared.api import Call, declare
from shared.models import TASK_QUEUE_ID_PATTERN, ExceptionReason, Identifier, TaskStatusResponse
from shared.timeutil import format_ts, utcnow
from shared.transitions import TaskRecord

log = logging.getLogger(__name__)

MAX_TASKS_PER_CLAIM = 32


class ClaimWorkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workerGroup: Identifier
    workerId: Identifier
    tasks: Annotated[int, Field(strict=True, ge=1, le=MAX_TASKS_PER_CLAIM)] = 1


class ClaimTaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workerGroup: Identifier
    workerId: Identifier


class ReportExceptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: ExceptionReason


WORKER_SCOPE = "queue:worker-id:<workerGroup>/<workerId>"


RESOLVE_SCOPE = "queue:resolve-task:<taskId>/<runId>"


class ClaimsApi:
    def __init__(self, context: QueueContext) -> None:
        self.ctx = context
        self.store = context.store

    # --- claiming -------------------------------------------------------------------------

    def _claim_body(self, record: TaskRecord, run_id: int, *, with_task: bool) -> dict[str, Any]:
        run = record.runs[run_id]
        assert run.takenUntil is not None and run.workerGroup and run.workerId
        body: dict[str, Any] = {
            **status_body(record),
            "runId": run_id,
            "workerGroup": run.workerGroup,
            "workerId": run.workerId,
            "takenUntil": format_ts(run.takenUntil),
        }
        if with_task:
            body["task"] = record.definition.to_output()
        body["credentials"] = credentials.for_claim(
            issuer_id=self.ctx.issuer.client_id,
            issuer_token=self.ctx.issuer.access_token,
            task_id=record.task_id,
            run_id=run_id,
            worker_group=run.workerGroup,
            worker_id=run.workerId,
            taken_until=run.takenUntil,
            task_scopes=list(record.definition.scopes),
            now=utcnow(),
        )
        return body

    async def _claim_run(
        self,
        task_id: str,
        run_id: int,
        worker_group: str,
        worker_id: str,
        *,
        fast: bool,
        from_queue: bool = False,
    ) -> transitions.Outcome:
        # With `fast`, the worker gets its claim as soon as the run is stored as running;
        # the events and the queue bookkeeping follow right after (they are in the outbox,
        # so counts and the claimed list catch up within milliseconds).
        outcome = await self.store.mutate(
            task_id,
            lambda r: transitions.claim(
                r,
                run_id,
                worker_group=worker_group,
                worker_id=worker_id,
                now=utcnow(),
                claim_timeout_s=self.ctx.claim_timeout_s,
                from_queue=from_queue,
            ),
            deliver_later=fast,
        )
        return outcome

    async def _claim_next(
        self, task_queue_id: str, worker_group: str, worker_id: str
    ) -> TaskRecord | None | bool:
        """Claim the best pending run: the claimed record, None if the queue is empty, or
        False if its message was stale (claimed through claimTask, cancelled, past its
        deadline, a duplicate). The message is acked only once the claim is stored."""
        queues = self.ctx.store.outbox.pending
        delivery = await queues.take(task_queue_id)
        if delivery is None:
            return None
        run = delivery.run
        if pending.is_past_deadline(run):
            await self._skip(delivery)
            return False
        try:
            outcome = await self._claim_run(
                run.taskId, run.runId, worker_group, worker_id, fast=True, from_queue=True
            )
        except (errors.RequestConflict, errors.ResourceNotFound):
            await self._skip(delivery)
            return False
        except BaseException:
            await asyncio.shield(delivery.give_back())
            raise
        if not outcome.changed:
            # This worker already holds the run (claimTask, or a claim whose ack was lost):
            # the message is stale; never hand one run out twice.
            await self._skip(delivery)
            return False
        await delivery.ack()
        log.info(
            logs.TASK_CLAIMED,
            extra=logs.task_fields(
                run.taskId, run.runId, workerGroup=worker_group, workerId=worker_id
            ),
        )
        return outcome.record

    async def _skip(self, delivery: pending.Delivery) -> None:
        await delivery.ack()
        self.store.in_background(self.ctx.store.outbox.pending.skipped(delivery.run.taskQueueId))

    async def _claim_batch(
        self, call: Call, task_queue_id: str, worker_group: str, worker_id: str, count: int
    ) -> list[TaskRecord]:
        claimed: list[TaskRecord] = []
        while len(claimed) < count and not _client_gone(call):
            result = await self._claim_next(task_queue_id, worker_group, worker_id)
            if result is None:
                break
            if result is not False:
                assert isinstance(result, TaskRecord)
                claimed.append(result)
        return claimed

    @declare(
        "claimWork",
        "POST",
        "/claim-work/<taskQueueId>",
        title="Claim Work",
        scopes={"AllOf": ["queue:claim-work:<taskQueueId>", WORKER_SCOPE]},
        input=ClaimWorkRequest,
        params={"taskQueueId": TASK_QUEUE_ID_PATTERN},
        scopes_from_params=False,
    )
    async def claim_work(self, call: Call) -> dict[str, Any]:
        task_queue_id = call.params["taskQueueId"]
        body: ClaimWorkRequest = call.body
        call.authorize(workerGroup=body.workerGroup, workerId=body.workerId)
        workers = self.ctx.workers
        worker = await workers.get_worker(
            task_queue_id, body.workerGroup, body.workerId, cached=True
        )
        now = utcnow()
        await workers.touch_worker(
            task_queue_id, body.workerGroup, body.workerId, now, existing=worker
        )
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.ctx.claim_work_wait_s
        quarantine = (worker or {}).get("quarantineUntil")
        wanted = lambda: not _client_gone(call)  # noqa: E731
        if quarantine is not None and quarantine > now:
            # A quarantined worker is kept waiting the whole poll and gets nothing.
            await self.ctx.waiters.idle(self.ctx.claim_work_wait_s, still_wanted=wanted)
            return {"tasks": []}
        claimed: list[TaskRecord] = []
        waiters = self.ctx.waiters
        while not claimed and wanted():
            seen = waiters.wakeups(task_queue_id)
            claimed = await self._claim_batch(
                call, task_queue_id, body.workerGroup, body.workerId, body.tasks
            )
            if claimed or not await waiters.wait(
                task_queue_id, give_up_at - loop.time(), still_wanted=wanted, seen=seen
            ):
                break
        if claimed:
            recent = [{"taskId": r.task_id, "runId": len(r.runs) - 1} for r in claimed]
            # Bookkeeping a person reads later, not the worker now: after the answer.
            self.store.in_background(
                workers.touch_worker(
                    task_queue_id,
                    body.workerGroup,
                    body.workerId,
                    utcnow(),
                    existing=worker,
                    claimed=recent,
                )
            )
        if claimed and _client_gone(call):
            # The worker hung up as its tasks arrived: they would sit `running` until the
            # claim expired. They go back to pending now.
            await asyncio.shield(self._give_back(claimed, body.workerGroup, body.workerId))
            return {"tasks": []}
        claimed = await self.store.complete(claimed)
        return {"tasks": [self._claim_body(r, len(r.runs) - 1, with_task=True) for r in claimed]}

    async def _give_back(
        self, claimed: list[TaskRecord], worker_group: str, worker_id: str
    ) -> None:
        for record in claimed:
            run_id = len(record.runs) - 1
            await self.store.mutate(
                record.task_id,
                lambda r, run_id=run_id: transitions.unclaim(  # type: ignore[misc]
                    r, run_id, worker_group=worker_group, worker_id=worker_id, now=utcnow()
                ),
            )
            log.warning(
                "claimWork's client hung up: run back to pending",
                extra={"taskId": record.task_id, "runId": run_id},
            )

    @declare(
        "claimTask",
        "POST",
        "/task/<taskId>/runs/<runId>/claim",
        title="Claim Task",
        scopes={"AllOf": ["queue:claim-task:<provisionerId>/<workerType>", WORKER_SCOPE]},
        input=ClaimTaskRequest,
        params=RUN_PARAMS,
    )
    async def claim_task(self, call: Call) -> dict[str, Any]:
        task_id, run_id = call.params["taskId"], int(call.params["runId"])
        body: ClaimTaskRequest = call.body
        loaded = await self.store.require(task_id)
        if loaded.record.run(run_id) is None:
            raise errors.ResourceNotFound(f"Run {run_id} of task `{task_id}` not found")
        task = loaded.record.definition
        call.authorize(
            provisionerId=task.provisionerId,
            workerType=task.workerType,
            workerGroup=body.workerGroup,
            workerId=body.workerId,
        )
        outcome = await self._claim_run(
            task_id, run_id, body.workerGroup, body.workerId, fast=False
        )
        record = outcome.record
        await self.ctx.workers.touch_worker(
            task.taskQueueId,
            body.workerGroup,
            body.workerId,
            utcnow(),
            existing=await self.ctx.workers.get_worker(
                task.taskQueueId, body.workerGroup, body.workerId
            ),
            claimed=[{"taskId": task_id, "runId": run_id}],
        )
        (record,) = await self.store.complete([record])
        return self._claim_body(record, run_id, with_task=True)

    @declare(
        "reclaimTask",
        "POST",
        "/task/<taskId>/runs/<runId>/reclaim",
        title="Reclaim task",
        scopes="queue:reclaim-task:<taskId>/<runId>",
        params=RUN_PARAMS,
    )
    async def reclaim_task(self, call: Call) -> dict[str, Any]:
        task_id, run_id = call.params["taskId"], int(call.params["runId"])
        loaded = await self.store.require(task_id, whole=False)
        if loaded.record.run(run_id) is None:
            raise errors.ResourceNotFound(f"Run {run_id} of task `{task_id}` not found")
        outcome = await self.store.mutate(
            task_id,
            lambda r: transitions.reclaim(
                r, run_id, now=utcnow(), claim_timeout_s=self.ctx.claim_timeout_s
            ),
            loaded=loaded,
        )
        record = outcome.record
        run = record.runs[run_id]
        assert run.workerGroup is not None and run.workerId is not None
        await self.ctx.workers.touch_worker(
            record.definition.taskQueueId, run.workerGroup, run.workerId, utcnow(), existing={}
        )
        return self._claim_body(record, run_id, with_task=False)

    # --- resolving ------------------------------------------------------------------------

    async def _resolve(self, call: Call, resolution: str) -> dict[str, Any]:
        task_id, run_id = call.params["taskId"], int(call.params["runId"])
        outcome = await self.store.mutate(
            task_id, lambda r: transitions.resolve(r, run_id, resolution, now=utcnow())
        )
        return status_body(outcome.record)

    @declare(
        "reportCompleted",
        "POST",
        "/task/<taskId>/runs/<runId>/completed",
        title="Report Run Completed",
        scopes=RESOLVE_SCOPE,
        params=RUN_PARAMS,
        output=TaskStatusResponse,
    )
    async def report_completed(self, call: Call) -> dict[str, Any]:
        return await self._resolve(call, "completed")

    @declare(
        "reportFailed",
        "POST",
        "/task/<taskId>/runs/<runId>/failed",
        title="Report Run Failed",
        scopes=RESOLVE_SCOPE,
        params=RUN_PARAMS,
        output=TaskStatusResponse,
    )
    async def report_failed(self, call: Call) -> dict[str, Any]:
        return await self._resolve(call, "failed")

    @declare(
        "reportException",
        "POST",
        "/task/<taskId>/runs/<runId>/exception",
        title="Report Task Exception",
        scopes=RESOLVE_SCOPE,
        input=ReportExceptionRequest,
        params=RUN_PARAMS,
        output=TaskStatusResponse,
    )
    async def report_exception(self, call: Call) -> dict[str, Any]:
        return await self._resolve(call, str(call.body.reason))


def _client_gone(call: Call) -> bool:
    """A worker that hung up must not be handed tasks it will never hear about."""
    transport = call.request.transport
    return transport is None or transport.is_closing()
