"""Registration with a worker pool (reference §5.3) through the Worker-Manager API.

`register` calls `registerWorker` with the provider's proof — `{staticSecret}` for the
static provider, `{registrationToken}` for a launched worker — and returns the worker
credentials and `workerConfig` it answers. `should_terminate` asks the experimental
`shouldWorkerTerminate`; any error means "keep running", as upstream's generic-worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from flotilla_worker.settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    credentials: dict[str, str]
    expires: str
    worker_config: dict[str, Any]


def identity_proof(settings: WorkerSettings) -> dict[str, str]:
    if settings.static_secret:
        return {"staticSecret": settings.static_secret}
    assert settings.registration_token
    return {"registrationToken": settings.registration_token}


async def register(manager: Any, settings: WorkerSettings) -> Registration:
    assert settings.provider_id is not None
    answer = await manager.registerWorker(
        {
            "workerPoolId": settings.pool_id,
            "providerId": settings.provider_id,
            "workerGroup": settings.worker_group,
            "workerId": settings.worker_id,
            "workerIdentityProof": identity_proof(settings),
            "systemBootTime": time.strftime(
                "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - time.monotonic())
            ),
        }
    )
    return Registration(answer["credentials"], answer["expires"], answer.get("workerConfig", {}))


async def should_terminate(manager: Any, settings: WorkerSettings) -> bool:
    try:
        answer = await manager.shouldWorkerTerminate(
            settings.pool_id, settings.worker_group, settings.worker_id
        )
    except Exception as exc:  # not deployed, or failing: keep running
        log.info("shouldWorkerTerminate failed; keep running", extra={"error": str(exc)[:200]})
        return False
    if answer.get("terminate") is True:
        log.info("worker-manager asks this worker to stop", extra={"reason": answer.get("reason")})
        return True
    return False
