"""The Worker-Manager-compatible subset under `/api/worker-manager/v1/` (reference 5.3),
with upstream's method names, routes and scopes, so `taskcluster.WorkerManager` works.

Pools are keyed `provisionerId/workerType` (their task queue). deleteWorkerPool, as
upstream, switches the pool to `null-provider`: no new workers; the loop removes it
once its workers are gone. removeWorker marks the worker stopping and asks its provider
to terminate it; the loop marks it stopped when the provider sees it gone. Workers of a
provider that does not launch its own (`static`) are made by createWorker/updateWorker
and removeWorker marks them stopped at once, as upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

import pydantic

from services.provisioner import credentials, termination
from services.provisioner.pools import (
    WORKER_ID_PATTERN,
    WORKER_POOL_ID_PATTERN,
    CreateWorkerRequest,
    PoolConfig,
    RegisterWorkerRequest,
    ReregisterWorkerRequest,
    WorkerPoolRequest,
    pool_out,
    stored_worker,
    worker_out,
)
from services.provisioner.providers import Provider, ProviderError
from services.provisioner.providers.docker import Issuer
from services.provisioner.store import (
    LIVE_STATES,
    NULL_PROVIDER,
    REQUESTED,
    RUNNING,
    STATES,
    STOPPED,
    STOPPED_KEPT,
    STOPPING,
    PoolStats,
    PoolStore,
)
from shared import errors, paging
from shared.api import Call, declare
from shared.models.errors import describe_validation_error
from shared.timeutil import format_ts, utcnow

log = logging.getLogger(__name__)

POOL_PARAM = {"workerPoolId": WORKER_POOL_ID_PATTERN}
WORKER_PARAMS = {**POOL_PARAM, "workerGroup": WORKER_ID_PATTERN, "workerId": WORKER_ID_PATTERN}
MANAGE = "worker-manager:manage-worker-pool:<workerPoolId>"
# One answer for every way a reregistration can fail to prove itself (upstream's).
BAD_SECRET = "Could not generate credentials for this secret"
WORKER_SCOPE_PATH = "<workerPoolId>/<workerGroup>/<workerId>"


def _pool_id(call: Call) -> str:
    return call.params["workerPoolId"].replace("%2F", "/").replace("%2f", "/")


CREATE_SCOPES = {"AllOf": [MANAGE, "worker-manager:provider:<providerId>"]}


class WorkerManagerApi:
    def __init__(
        self,
        store: PoolStore,
        providers: Mapping[str, Provider],
        issuer: Issuer,
        wake: Callable[[], None],
        claim_holders: Callable[[str], Awaitable[set[tuple[str, str]]]],
    ) -> None:
        self.store = store
        self.providers = providers
        self.issuer = issuer
        self.wake = wake
        # (workerGroup, workerId) of the pool's workers holding a claimed run (the queue's).
        self.claim_holders = claim_holders

    # --- pools ----------------------------------------------------------------------------

    def _checked(self, call: Call, pool_id: str) -> tuple[WorkerPoolRequest, PoolConfig]:
        body: WorkerPoolRequest = call.body
        if body.workerPoolId is not None and body.workerPoolId != pool_id:
            raise errors.InputError("workerPoolId in the payload does not match the URL")
        call.authorize(workerPoolId=pool_id, providerId=body.providerId)
        provider = self.providers.get(body.providerId)
        if provider is None:
            raise errors.InputError(f"Provider {body.providerId} does not exist")
        try:
            config = PoolConfig.model_validate(body.config)
            provider.validate(config)
        except pydantic.ValidationError as exc:
            raise errors.InputError(
                f"Invalid config for provider {body.providerId}:\n{describe_validation_error(exc)}"
            ) from exc
        except ValueError as exc:
            raise errors.InputError(
                f"Invalid config for provider {body.providerId}: {exc}"
            ) from exc
        return body, config

    async def _out(self, document: dict[str, Any]) -> dict[str, Any]:
        return pool_out(document, PoolStats.of(await self.store.workers_of(document["_id"])))

    @declare(
        "createWorkerPool",
        "PUT",
        "/worker-pool/<workerPoolId>",
        title="Create Worker Pool",
        scopes=CREATE_SCOPES,
        input=WorkerPoolRequest,
        params=POOL_PARAM,
        scopes_from_params=False,
    )
    async def create_worker_pool(self, call: Call) -> dict[str, Any]:
        pool_id = _pool_id(call)
        body, _config = self._checked(call, pool_id)
        now = utcnow()
        definition = {
            "providerId": body.providerId,
            "description": body.description,
            "config": body.config,
            "owner": body.owner,
            "emailOnError": body.emailOnError,
        }
        if not await self.store.insert_pool(
            {"_id": pool_id, **definition, "created": now, "lastModified": now}
        ):
            existing = await self.store.get_pool(pool_id)
            if existing is None or {k: existing.get(k) for k in definition} != definition:
                raise errors.RequestConflict(f"Worker pool {pool_id} already exists")
            return await self._out(existing)  # the same definition again: adopted
        log.info("worker pool created", extra={"workerPoolId": pool_id})
        self.wake()
        return await self._out(await self._require(pool_id))

    @declare(
        "updateWorkerPool",
        "POST",
        "/worker-pool/<workerPoolId>",
        title="Update Worker Pool",
        scopes=CREATE_SCOPES,
        input=WorkerPoolRequest,
        params=POOL_PARAM,
        scopes_from_params=False,
    )
    async def update_worker_pool(self, call: Call) -> dict[str, Any]:
        pool_id = _pool_id(call)
        body, _config = self._checked(call, pool_id)
        updated = await self.store.update_pool(
            pool_id,
            {
                "providerId": body.providerId,
                "description": body.description,
                "config": body.config,
                "owner": body.owner,
                "emailOnError": body.emailOnError,
                "lastModified": utcnow(),
            },
        )
        if updated is None:
            raise errors.ResourceNotFound(f"Worker pool {pool_id} does not exist")
        self.wake()
        return await self._out(updated)

    @declare(
        "deleteWorkerPool",
        "DELETE",
        "/worker-pool/<workerPoolId>",
        title="Delete Worker Pool",
        scopes=MANAGE,
        params=POOL_PARAM,
    )
    async def delete_worker_pool(self, call: Call) -> dict[str, Any]:
        pool_id = _pool_id(call)
        updated = await self.store.update_pool(
            pool_id, {"providerId": NULL_PROVIDER, "lastModified": utcnow()}
        )
        if updated is None:
            raise errors.ResourceNotFound(f"Worker pool {pool_id} does not exist")
        self.wake()
        return await self._out(updated)

    async def _require(self, pool_id: str) -> dict[str, Any]:
        document = await self.store.get_pool(pool_id)
        if document is None:
            raise errors.ResourceNotFound(f"Worker pool {pool_id} does not exist")
        return document

    @declare(
        "workerPool",
        "GET",
        "/worker-pool/<workerPoolId>",
        title="Get Worker Pool",
        scopes="worker-manager:get-worker-pool:<workerPoolId>",
        params=POOL_PARAM,
    )
    async def worker_pool(self, call: Call) -> dict[str, Any]:
        return await self._out(await self._require(_pool_id(call)))

    @declare(
        "listWorkerPools",
        "GET",
        "/worker-pools",
        title="List All Worker Pools",
        scopes="worker-manager:list-worker-pools",
        query=paging.PAGE_QUERY,
    )
    async def list_worker_pools(self, call: Call) -> dict[str, Any]:
        pools = [await self._out(p) for p in await self.store.list_pools()]
        return paging.offset_page(pools, call.query, "workerPools")

    # --- workers --------------------------------------------------------------------------

    @declare(
        "listWorkersForWorkerPool",
        "GET",
        "/workers/<workerPoolId>",
        title="Workers in a Worker Pool",
        scopes="worker-manager:list-workers:<workerPoolId>",
        params=POOL_PARAM,
        query=(*paging.PAGE_QUERY, "state", "launchConfigId"),
    )
    async def list_workers(self, call: Call) -> dict[str, Any]:
        pool_id = _pool_id(call)
        state = call.query.get("state")
        if state is not None and state not in STATES:
            raise errors.InvalidRequestArguments(f"state must be one of {', '.join(STATES)}")
        workers = await self.store.workers_of(pool_id, [state] if state else STATES)
        launch_config = call.query.get("launchConfigId")
        if launch_config is not None:
            workers = [w for w in workers if w.get("launchConfigId") == launch_config]
        return paging.offset_page([worker_out(w) for w in workers], call.query, "workers")

    async def _require_worker(self, call: Call) -> dict[str, Any]:
        pool_id = _pool_id(call)
        group, worker_id = call.params["workerGroup"], call.params["workerId"]
        worker = await self.store.get_worker(pool_id, group, worker_id)
        if worker is None:
            raise errors.ResourceNotFound(
                f"Worker {group}/{worker_id} in worker pool {pool_id} does not exist"
            )
        return worker

    @declare(
        "worker",
        "GET",
        "/workers/<workerPoolId>/<workerGroup>/<workerId>",
        title="Get a Worker",
        scopes=f"worker-manager:get-worker:{WORKER_SCOPE_PATH}",
        params=WORKER_PARAMS,
    )
    async def worker(self, call: Call) -> dict[str, Any]:
        return worker_out(await self._require_worker(call))

    def _made_by_api(self, pool: dict[str, Any], body: CreateWorkerRequest) -> dict[str, Any]:
        """What createWorker/updateWorker store, from the pool's provider (400 if it
        launches its own workers, or the providerInfo is not what it needs)."""
        provider = self.providers.get(pool["providerId"])
        if provider is None:
            raise errors.InputError(f"Worker pool {pool['_id']} has no provider (deleted?)")
        if body.expires <= utcnow():
            raise errors.InputError("expires must be in the future")
        try:
            return provider.worker_from_api(body.providerInfo)
        except ProviderError as exc:
            raise errors.InputError(f"{provider.provider_id}: {exc}") from exc

    @declare(
        "createWorker",
        "PUT",
        "/workers/<workerPoolId>/<workerGroup>/<workerId>",
        title="Create a Worker",
        scopes=f"worker-manager:create-worker:{WORKER_SCOPE_PATH}",
        input=CreateWorkerRequest,
        params=WORKER_PARAMS,
    )
    async def create_worker(self, call: Call) -> dict[str, Any]:
        pool_id = _pool_id(call)
        group, worker_id = call.params["workerGroup"], call.params["workerId"]
        pool = await self._require(pool_id)
        body: CreateWorkerRequest = call.body
        fields = self._made_by_api(pool, body)
        now = utcnow()
        document = stored_worker(
            pool_id=pool_id,
            provider_id=pool["providerId"],
            group=group,
            worker_id=worker_id,
            capacity=body.capacity,
            now=now,
            expires=body.expires,
            launched_by="createWorker",
            extra=fields,
        )
        document["state"] = RUNNING  # a static worker is up as soon as it exists
        if not await self.store.insert_worker_once(document):
            existing = await self.store.get_worker(pool_id, group, worker_id)
            same = existing is not None and all(
                existing.get(k) == document[k] for k in ("providerId", *fields)
            )
            if not same or existing is None or existing["state"] not in LIVE_STATES:
                raise errors.RequestConflict(
                    f"Worker {group}/{worker_id} in worker pool {pool_id} already exists"
                )
            return worker_out(existing)  # the same worker again: adopted
        log.info("worker created", extra={"worker": document["_id"]})
        return worker_out(document)

    @declare(
        "updateWorker",
        "POST",
        "/workers/<workerPoolId>/<workerGroup>/<workerId>",
        title="Update an existing Worker",
        scopes=f"worker-manager:update-worker:{WORKER_SCOPE_PATH}",
        input=CreateWorkerRequest,
        params=WORKER_PARAMS,
    )
    async def update_worker(self, call: Call) -> dict[str, Any]:
        worker = await self._require_worker(call)
        pool = await self._require(worker["workerPoolId"])
        if worker["providerId"] != pool["providerId"]:
            raise errors.InputError("the worker's provider is no longer its pool's")
        body: CreateWorkerRequest = call.body
        fields = self._made_by_api(pool, body)
        updated = await self.store.set_worker(
            worker["_id"],
            {
                **fields,
                "expires": body.expires,
                "capacity": body.capacity,
                "lastModified": utcnow(),
            },
            from_states=LIVE_STATES,
        )
        if updated is None:
            raise errors.InputError(f"Worker {worker['workerId']} is stopped; it cannot change")
        return worker_out(updated)

    @declare(
        "removeWorker",
        "DELETE",
        "/workers/<workerPoolId>/<workerGroup>/<workerId>",
        title="Remove a Worker",
        scopes=f"worker-manager:remove-worker:{WORKER_SCOPE_PATH}",
        params=WORKER_PARAMS,
    )
    async def remove_worker(self, call: Call) -> dict[str, Any]:
        worker = await self._require_worker(call)
        provider = self.providers.get(worker["providerId"])
        if worker["state"] not in LIVE_STATES or provider is None:
            return {}
        now = utcnow()
        if not provider.launches_workers:
            # Nothing to terminate: the worker just loses its registration (upstream).
            await self.store.set_worker(
                worker["_id"],
                {
                    "state": STOPPED,
                    "stopReason": "removeWorker",
                    "lastModified": now,
                    "expires": now + STOPPED_KEPT,
                },
                from_states=LIVE_STATES,
            )
            log.info("worker removed", extra={"worker": worker["_id"]})
            return {}
        await self.store.set_worker(
            worker["_id"],
            {"state": STOPPING, "lastModified": now},
            from_states=(REQUESTED, RUNNING),
        )
        await provider.terminate(worker)
        self.wake()
        return {}

    @declare(
        "registerWorker",
        "POST",
        "/worker/register",
        title="Register a running worker",
        scopes=None,
        input=RegisterWorkerRequest,
    )
    async def register_worker(self, call: Call) -> dict[str, Any]:
        body: RegisterWorkerRequest = call.body
        pool = await self.store.get_pool(body.workerPoolId)
        if pool is None:
            raise errors.ResourceNotFound(f"Worker pool {body.workerPoolId} does not exist")
        provider = self.providers.get(body.providerId)
        if provider is None:
            raise errors.ResourceNotFound(f"Provider {body.providerId} does not exist")
        worker = await self.store.get_worker(body.workerPoolId, body.workerGroup, body.workerId)
        described = f"Worker {body.workerGroup}/{body.workerId}"
        if worker is None:
            raise errors.ResourceNotFound(
                f"{described} in worker pool {body.workerPoolId} does not exist"
            )
        if worker["providerId"] != body.providerId:
            raise errors.InputError(f"{described} does not have provider {body.providerId}")
        if worker["state"] not in provider.registers_from:
            raise errors.InputError(f"{described} is {worker['state']}; it cannot register")
        now = utcnow()
        if worker["expires"] <= now:
            raise errors.InputError(f"{described} has expired")
        if not provider.verify_registration(worker, body.workerIdentityProof):
            raise errors.InputError("Signature validation error")
        # A launched worker registers once (its token is one-time): only the caller whose
        # update moves it from `requested` wins. A static one registers whenever it starts.
        first = worker["state"] == REQUESTED
        secret = credentials.new_secret()
        registered = await self.store.set_worker(
            worker["_id"],
            {
                "state": RUNNING,
                "registeredAt": now,
                "lastModified": now,
                "reregistrationSecretHash": credentials.token_hash(secret),
            },
            from_states=[REQUESTED] if first else [RUNNING],
            unset=["registrationTokenHash"] if first else [],
        )
        if registered is None:
            raise errors.InputError(f"{described} has already registered")
        config = PoolConfig.model_validate(pool["config"])
        expires = now + _credential_lifetime(config)
        log.info("worker registered", extra={"worker": worker["_id"]})
        launch_index = worker.get("launchConfigIndex")
        worker_config = dict(config.workerConfig)
        if launch_index is not None and launch_index < len(config.launchConfigs):
            worker_config.update(config.launchConfigs[launch_index].workerConfig)
        return {
            "expires": format_ts(expires),
            "credentials": credentials.for_worker(
                issuer_id=self.issuer.client_id,
                issuer_token=self.issuer.access_token,
                provider_id=body.providerId,
                pool_id=body.workerPoolId,
                group=body.workerGroup,
                worker_id=body.workerId,
                now=now,
                expires=expires,
            ),
            "workerConfig": worker_config,
            "secret": secret,
        }

    @declare(
        "reregisterWorker",
        "POST",
        "/worker/reregister",
        title="Reregister a Worker",
        scopes=f"worker-manager:reregister-worker:{WORKER_SCOPE_PATH}",
        input=ReregisterWorkerRequest,
        scopes_from_params=False,
    )
    async def reregister_worker(self, call: Call) -> dict[str, Any]:
        """Fresh credentials for a registered, running worker that shows the secret of
        its last (re)registration; the secret rotates (single use), in the same
        conditional update that checks it, so two callers cannot both use it."""
        body: ReregisterWorkerRequest = call.body
        call.authorize(
            workerPoolId=body.workerPoolId, workerGroup=body.workerGroup, workerId=body.workerId
        )
        worker = await self.store.get_worker(body.workerPoolId, body.workerGroup, body.workerId)
        if worker is None or not credentials.token_matches(
            body.secret, worker.get("reregistrationSecretHash")
        ):
            raise errors.InputError(BAD_SECRET)
        described = f"Worker {body.workerGroup}/{body.workerId}"
        if worker["state"] != RUNNING:
            raise errors.InputError(f"{described} is {worker['state']}; it cannot reregister")
        now = utcnow()
        if worker["expires"] <= now:
            raise errors.InputError(f"{described} has expired")
        pool = await self.store.get_pool(body.workerPoolId)
        config = PoolConfig.model_validate(pool["config"]) if pool else PoolConfig()
        secret = credentials.new_secret()
        rotated = await self.store.rotate_secret(
            worker["_id"],
            old_hash=worker["reregistrationSecretHash"],
            new_hash=credentials.token_hash(secret),
            now=now,
        )
        if rotated is None:
            raise errors.InputError(BAD_SECRET)  # used meanwhile, or the worker stopped
        expires = now + _credential_lifetime(config)
        log.info("worker reregistered", extra={"worker": worker["_id"]})
        return {
            "expires": format_ts(expires),
            "credentials": credentials.for_worker(
                issuer_id=self.issuer.client_id,
                issuer_token=self.issuer.access_token,
                provider_id=worker["providerId"],
                pool_id=worker["workerPoolId"],
                group=worker["workerGroup"],
                worker_id=worker["workerId"],
                now=now,
                expires=expires,
            ),
            "secret": secret,
        }

    @declare(
        "shouldWorkerTerminate",
        "GET",
        "/workers/<workerPoolId>/<workerGroup>/<workerId>/should-terminate",
        title="Should worker terminate",
        scopes=f"worker-manager:should-worker-terminate:{WORKER_SCOPE_PATH}",
        params=WORKER_PARAMS,
    )
    async def should_worker_terminate(self, call: Call) -> dict[str, Any]:
        worker = await self._require_worker(call)
        pool = await self.store.get_pool(worker["workerPoolId"])
        hard = termination.hard_reason(worker, pool, utcnow())
        excess = busy = False
        if hard is None and pool is not None:
            live = await self.store.workers_of(worker["workerPoolId"], (REQUESTED, RUNNING))
            excess = termination.over_capacity(worker, pool, live)
            if excess:  # only then ask the queue: the common answer costs no queue call
                holders = await self.claim_holders(worker["workerPoolId"])
                busy = (worker["workerGroup"], worker["workerId"]) in holders
        return termination.decision(hard, excess, busy)


def _credential_lifetime(config: PoolConfig) -> timedelta:
    """How long (re)registration credentials last: reregistrationTimeout, never past the
    pool's maxLifetime."""
    return timedelta(
        seconds=min(config.lifecycle.reregistrationTimeout, config.lifecycle.maxLifetime)
    )
