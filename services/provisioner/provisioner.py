"""The provisioning loop. One replica at a time acts (a lease document in MongoDB, renewed
every tick; the others wait on standby and take over when it lapses).

Each tick, per pool: find workers that are gone (provider check) or must go (never
registered within registrationTimeout, older than maxLifetime, silent at the queue past
queueInactivityTimeout: see inactivity) and retire them, asking the queue to resolve
their runs as worker-shutdown at once → read the queue's counts →
estimate → launch, recording each worker in MongoDB *before* the provider is asked, so
a slow or lost provider answer never leads to a second launch for the same need.

Pools of a provider that does not launch workers (`static`) are left alone: no estimate,
no launches, no retirement; their workers come and go through the API.

Ticks run every `interval_s`, and at once when a task-pending event arrives for any
queue (a private auto-deleted RabbitMQ queue) or a worker process exits. Resolution
events feed the per-pool drain rate the estimator's closed-loop guard uses.

Every pass (a standby's lease check too) logs one summary line, "provisioner pass": the
role, and for the active replica how many pools it went through, workers it launched and
retired, and running workers whose queue activity it checked. The loop runs under a
failure budget (shared.loops): a pass that keeps failing ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter, defaultdict, deque
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from services.provisioner.estimator import PoolLoad, estimate
from services.provisioner.inactivity import inactivity_reason
from services.provisioner.pools import Lifecycle, PoolConfig, stored_worker
from services.provisioner.providers import Pool, Provider
from services.provisioner.store import (
    LIVE_STATES,
    NULL_PROVIDER,
    REQUESTED,
    RUNNING,
    STOPPED,
    STOPPED_KEPT,
    PoolStats,
    PoolStore,
)
from shared.loops import FailureBudget
from shared.timeutil import parse_ts, utcnow

log = logging.getLogger(__name__)

DRAIN_WINDOW_S = 60.0
WORKER_RECORD_LIFETIME = timedelta(days=7)
RESOLUTION_EVENTS = ("task-completed", "task-failed", "task-exception")
RECHECK_AFTER_S = (0.5, 2.0)  # see stopped()


def lifecycle_reason(worker: Mapping[str, Any], lifecycle: Lifecycle, now: datetime) -> str | None:
    """Why a live worker must be terminated now, or None. Pure."""
    age = (now - worker["created"]).total_seconds()
    if worker["state"] == REQUESTED and age > lifecycle.registrationTimeout:
        return f"not registered within registrationTimeout ({lifecycle.registrationTimeout}s)"
    if age > lifecycle.maxLifetime:
        return f"older than maxLifetime ({lifecycle.maxLifetime}s)"
    return None


def new_worker_id() -> str:
    return f"w-{secrets.token_hex(9)}"


class Provisioner:
    def __init__(
        self,
        *,
        store: PoolStore,
        providers: Mapping[str, Provider],
        queue: Any,
        instance_id: str,
        interval_s: float,
        lease_s: float,
        activity_slack_s: float = 80.0,
    ) -> None:
        self.store = store
        self.providers = dict(providers)
        self.queue = queue
        self.instance_id = instance_id
        self.interval_s = interval_s
        self.lease_s = lease_s
        self.activity_slack_s = activity_slack_s  # see inactivity
        self.leader = False
        self._activity_checked: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._resolved: dict[str, deque[float]] = defaultdict(deque)
        self._background: set[asyncio.Task[None]] = set()
        # Passes are few (one per interval) and say what was decided: every one is logged.
        self.budget = FailureBudget("provisioner", quiet_when_idle=False)

    # --- inputs ---------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def on_event(self, event: str, task_queue_id: str | None) -> None:
        if task_queue_id is not None and event in RESOLUTION_EVENTS:
            self._resolved[task_queue_id].append(time.monotonic())
        if event == "task-pending":
            self._wake.set()

    def drain_rate(self, pool_id: str) -> float:
        """Tasks of the pool resolved per second over the last DRAIN_WINDOW_S."""
        times = self._resolved[pool_id]
        horizon = time.monotonic() - DRAIN_WINDOW_S
        while times and times[0] < horizon:
            times.popleft()
        return len(times) / DRAIN_WINDOW_S

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()  # an event during this tick makes the next one at once
                async with self.budget.attempt() as summary:
                    summary.update(await self.one_pass())
                # Renew well before the lease lapses; a standby checks as often.
                wait = min(self.interval_s, self.lease_s / 3)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            if self.leader:
                await asyncio.shield(self.store.release_lease(self.instance_id))

    async def one_pass(self) -> dict[str, Any]:
        """Hold (or try to take) the lease; the holder ticks. Returns the pass summary."""
        was_leader = self.leader
        self.leader = await self.store.hold_lease(self.instance_id, utcnow(), self.lease_s)
        if self.leader != was_leader:
            log.info(
                "provisioner active" if self.leader else "provisioner on standby",
                extra={"instance": self.instance_id},
            )
        if not self.leader:
            return {"leader": False}
        return {"leader": True, **await self.tick()}

    async def tick(self) -> dict[str, int]:
        """Every pool once; what was done, summed over the pools."""
        done: Counter[str] = Counter()
        pools = await self.store.list_pools()
        for document in pools:
            try:
                await self.reconcile(document, done)
            except Exception:
                done["failedPools"] += 1
                log.exception("provisioning a pool failed", extra={"workerPoolId": document["_id"]})
        return {
            "pools": len(pools),
            **{key: done[key] for key in ("launched", "retired", "activityChecked", "failedPools")},
        }

    async def reconcile(self, document: Mapping[str, Any], done: Counter[str]) -> None:
        """One pool: retire, estimate, launch; counts what it did into `done`."""
        pool_id = document["_id"]
        pool = Pool(pool_id, document["providerId"], PoolConfig.model_validate(document["config"]))
        now = utcnow()
        live = await self.store.workers_of(pool_id, LIVE_STATES)
        retired = await self._retire_gone(pool, live, now, done)
        done["retired"] += len(retired)
        await self.store.forget_stopped(pool_id, now)
        live = [w for w in live if w["_id"] not in retired]
        provider = self.providers.get(pool.provider_id)
        if provider is None:
            if pool.provider_id == NULL_PROVIDER and await self.store.delete_pool_if_empty(pool_id):
                log.info("worker pool deleted", extra={"workerPoolId": pool_id})
            return
        if not provider.launches_workers:
            return  # static: capacity is what the machines bring
        counts = await self.queue.taskQueueCounts(pool_id)
        stats = PoolStats.of(live)
        config = pool.config
        load = PoolLoad(
            pending=int(counts["pendingTasks"]),
            claimed=int(counts["claimedTasks"]),
            running=stats.capacity[RUNNING],
            requested=stats.capacity[REQUESTED],
            stopping=stats.capacity["stopping"],
            min_capacity=config.minCapacity,
            max_capacity=config.maxCapacity or 0,
            scaling_ratio=config.scalingRatio,
            capacity_per_worker=config.capacityPerWorker,
            drain_rate_per_s=self.drain_rate(pool_id),
            boot_s=provider.boot_s,
        )
        result = estimate(load)
        if result.workers:
            log.info(
                "launching workers",
                extra={"workerPoolId": pool_id, "workers": result.workers, **vars(load)},
            )
        for _ in range(result.workers):
            if await self.launch(pool, provider):
                done["launched"] += 1

    async def _retire_gone(
        self, pool: Pool, live: list[dict[str, Any]], now: datetime, done: Counter[str]
    ) -> set[str]:
        by_provider: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for worker in live:
            by_provider[worker["providerId"]].append(worker)
        retired: set[str] = set()
        for provider_id, workers in by_provider.items():
            provider = self.providers.get(provider_id)
            if provider is None or not provider.launches_workers:
                continue  # static workers are never retired by the loop
            gone = await provider.gone(pool, workers)
            doomed: dict[str, tuple[str, bool]] = {}  # _id -> (reason, terminate?)
            for worker in workers:
                if worker["_id"] in gone:
                    doomed[worker["_id"]] = (gone[worker["_id"]], False)
                elif reason := lifecycle_reason(worker, pool.config.lifecycle, now):
                    doomed[worker["_id"]] = (reason, True)
            running = [w for w in workers if w["_id"] not in doomed and w["state"] == RUNNING]
            for key, reason in (await self._inactive(pool, running, now, done)).items():
                doomed[key] = (reason, True)
            for worker in workers:
                if worker["_id"] in doomed:
                    reason, terminate = doomed[worker["_id"]]
                    await self.retire(provider, worker, reason, terminate=terminate)
                    retired.add(worker["_id"])
        return retired

    async def _inactive(
        self, pool: Pool, running: list[dict[str, Any]], now: datetime, done: Counter[str]
    ) -> dict[str, str]:
        """Running workers past queueInactivityTimeout: {_id: reason}. At most one check
        per pool per interval (it reads the queue's worker list); on any doubt, none.
        Counts the workers it judged into done["activityChecked"]."""
        last = self._activity_checked.get(pool.pool_id, float("-inf"))
        if not running or time.monotonic() - last < self.interval_s:
            return {}
        self._activity_checked[pool.pool_id] = time.monotonic()
        lifecycle = pool.config.lifecycle
        try:
            stamps = await self._queue_activity(pool.pool_id)
            busy: set[tuple[str, str]] | None = None

            def decide() -> dict[str, str]:
                out: dict[str, str] = {}
                for worker in running:
                    ident = (worker["workerGroup"], worker["workerId"])
                    reason = inactivity_reason(
                        worker,
                        lifecycle,
                        stamps.get(ident),
                        holds_claims=busy is not None and ident in busy,
                        slack_s=self.activity_slack_s,
                        now=now,
                    )
                    if reason is not None:
                        out[worker["_id"]] = reason
                return out

            inactive = decide()
            if inactive:
                busy = await self.claim_holders(pool.pool_id)  # only read when it matters
                inactive = decide()
            done["activityChecked"] += len(running)
            return inactive
        except Exception as exc:
            log.warning(
                "reading worker activity failed",
                extra={"workerPoolId": pool.pool_id, "error": repr(exc)},
            )
            return {}

    async def _queue_activity(self, pool_id: str) -> dict[tuple[str, str], datetime]:
        """The queue's lastDateActive of each worker of the pool (listWorkers, all pages)."""
        provisioner_id, worker_type = pool_id.split("/", 1)
        stamps: dict[tuple[str, str], datetime] = {}
        query: dict[str, Any] = {"limit": 1000}
        while True:
            page = await self.queue.listWorkers(provisioner_id, worker_type, query=query)
            for entry in page.get("workers", []):
                if entry.get("lastDateActive"):
                    ident = (entry["workerGroup"], entry["workerId"])
                    stamps[ident] = parse_ts(entry["lastDateActive"])
            if not page.get("continuationToken"):
                return stamps
            query = {**query, "continuationToken": page["continuationToken"]}

    async def claim_holders(self, pool_id: str) -> set[tuple[str, str]]:
        """Workers holding a claimed run of the pool (listClaimedTasks, all pages)."""
        holders: set[tuple[str, str]] = set()
        query: dict[str, Any] = {"limit": 1000}
        while True:
            page = await self.queue.listClaimedTasks(pool_id, query=query)
            holders.update((t["workerGroup"], t["workerId"]) for t in page.get("tasks", []))
            if not page.get("continuationToken"):
                return holders
            query = {**query, "continuationToken": page["continuationToken"]}

    async def launch(self, pool: Pool, provider: Provider) -> bool:
        """Record a new worker, then ask the provider for it; False if that failed."""
        now = utcnow()
        extra = provider.worker_extra(pool)
        document = stored_worker(
            pool_id=pool.pool_id,
            provider_id=provider.provider_id,
            group=extra.get("workerGroup", provider.provider_id),
            worker_id=new_worker_id(),
            capacity=pool.config.capacityPerWorker,
            now=now,
            expires=now + WORKER_RECORD_LIFETIME,
            launched_by=self.instance_id,
            extra={k: v for k, v in extra.items() if not k.startswith("_")},
        )
        await self.store.insert_worker(document)  # recorded before the provider is asked
        key = document["_id"]
        try:
            launched = await provider.launch(pool, {**document, **extra})
        except Exception as exc:
            log.warning("launch failed", extra={"worker": key, "error": repr(exc)})
            await self.store.set_worker(
                key,
                {
                    "state": STOPPED,
                    "stopReason": f"launch failed: {exc}",
                    "lastModified": utcnow(),
                    "expires": utcnow() + STOPPED_KEPT,
                },
                from_states=LIVE_STATES,
            )
            return False
        await self.store.set_worker(
            key,
            {"providerData": launched.provider_data, "state": launched.state, "lastModified": now},
            from_states=[REQUESTED],
        )
        log.info("worker launched", extra={"worker": key, **launched.provider_data})
        return True

    async def retire(
        self, provider: Provider, worker: Mapping[str, Any], reason: str, *, terminate: bool
    ) -> None:
        if terminate:
            try:
                await provider.terminate(dict(worker))
            except Exception as exc:
                log.warning("terminate failed", extra={"worker": worker["_id"], "error": repr(exc)})
                return  # tried again next tick
        await self.stopped(worker["_id"], reason)

    async def stopped(self, key: str, reason: str) -> None:
        """Mark a worker stopped (once) and have the queue resolve the runs it held."""
        now = utcnow()
        before = await self.store.set_worker(
            key,
            {
                "state": STOPPED,
                "stopReason": reason,
                "lastModified": now,
                "lastChecked": now,
                "expires": now + STOPPED_KEPT,
            },
            from_states=LIVE_STATES,
            return_before=True,
        )
        if before is None:
            return  # already stopped by someone else
        log.info("worker stopped", extra={"worker": key, "reason": reason})
        await self._resolve_runs(before)
        # A claim answered just before the worker died reaches the queue's list of
        # claimed runs a moment later: ask again then (the call is idempotent).
        for delay_s in RECHECK_AFTER_S:
            task = asyncio.create_task(self._resolve_runs(before, delay_s=delay_s))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _resolve_runs(self, worker: Mapping[str, Any], delay_s: float = 0.0) -> None:
        await asyncio.sleep(delay_s)
        provisioner_id, worker_type = worker["workerPoolId"].split("/", 1)
        try:
            answer = await self.queue.workerShutdown(
                provisioner_id, worker_type, worker["workerGroup"], worker["workerId"]
            )
        except Exception as exc:  # claim expiry remains the safety net
            log.warning(
                "workerShutdown failed", extra={"worker": worker["_id"], "error": repr(exc)}
            )
            return
        for run in (answer or {}).get("resolved", []):
            log.info("run of a gone worker resolved", extra={**run, "worker": worker["_id"]})
            self.wake()  # its retry is pending now

    async def worker_exited(self, key: str, code: int) -> None:
        """A docker worker (process or container) ended: idle shutdown, crash, kill."""
        await self.stopped(key, f"worker exited with {code}")
        self.wake()
