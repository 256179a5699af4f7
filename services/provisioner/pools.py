"""Worker-pool definitions: the request bodies, the pool `config` every provider shares,
and the output shapes of worker-manager's `worker-pool-full` and `worker-full`. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.provisioner.store import REQUESTED, PoolStats, worker_key
from shared.models import TASK_QUEUE_ID_PATTERN, Timestamp
from shared.timeutil import format_ts

WORKER_POOL_ID_PATTERN = TASK_QUEUE_ID_PATTERN  # provisionerId/workerType
PROVIDER_ID_PATTERN = r"^([a-zA-Z0-9-_]{1,38})$"
WORKER_ID_PATTERN = r"^([a-zA-Z0-9-_]{1,38})$"


class Lifecycle(BaseModel):
    """Seconds. registrationTimeout: a worker not registered by then is terminated;
    queueInactivityTimeout: a registered worker that has not called the queue that long
    is terminated; maxLifetime: no worker lives longer."""

    model_config = ConfigDict(extra="forbid")
    registrationTimeout: Annotated[int, Field(ge=1)] = 1800
    reregistrationTimeout: Annotated[int, Field(ge=60, le=30 * 86400)] = 345600
    queueInactivityTimeout: Annotated[int, Field(ge=1)] = 7200
    maxLifetime: Annotated[int, Field(ge=1)] = 96 * 3600


class LaunchConfig(BaseModel):
    """One way to launch an `aws` worker: a region and RunInstances arguments."""

    model_config = ConfigDict(extra="forbid")
    region: str
    launchConfig: dict[str, Any]
    additionalUserData: dict[str, Any] = Field(default_factory=dict)
    workerConfig: dict[str, Any] = Field(default_factory=dict)
    launchConfigId: str | None = None


class PoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    minCapacity: Annotated[int, Field(ge=0)] = 0
    # Required by the providers that launch workers (docker, aws); a static pool has none.
    maxCapacity: Annotated[int, Field(ge=0)] | None = None
    scalingRatio: Annotated[float, Field(ge=0, le=1)] = 1.0
    capacityPerWorker: Annotated[int, Field(ge=1, le=64)] = 1
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    workerConfig: dict[str, Any] = Field(default_factory=dict)
    launchConfigs: list[LaunchConfig] = Field(default_factory=list)  # the aws provider's
    # The docker provider's: workers as containers of the docker-worker image or as local
    # processes; None = container when the image is present, else process.
    launch: Literal["container", "process"] | None = None

    @model_validator(mode="after")
    def _min_within_max(self) -> PoolConfig:
        if self.maxCapacity is not None and self.minCapacity > self.maxCapacity:
            raise ValueError("minCapacity must not exceed maxCapacity")
        return self


class WorkerPoolRequest(BaseModel):
    """createWorkerPool / updateWorkerPool (`workerPoolId` may repeat the URL's)."""

    model_config = ConfigDict(extra="forbid")
    workerPoolId: str | None = None
    providerId: Annotated[str, Field(pattern=PROVIDER_ID_PATTERN)]
    description: Annotated[str, Field(max_length=10240)] = ""
    config: dict[str, Any]
    owner: Annotated[str, Field(min_length=1)]
    emailOnError: bool = False


class RegisterWorkerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workerPoolId: Annotated[str, Field(pattern=WORKER_POOL_ID_PATTERN)]
    providerId: Annotated[str, Field(pattern=PROVIDER_ID_PATTERN)]
    workerGroup: Annotated[str, Field(pattern=WORKER_ID_PATTERN)]
    workerId: Annotated[str, Field(pattern=WORKER_ID_PATTERN)]
    workerIdentityProof: dict[str, Any]
    systemBootTime: str | None = None


class ReregisterWorkerRequest(BaseModel):
    """reregisterWorker: the worker proves itself with the secret of its last
    (re)registration."""

    model_config = ConfigDict(extra="forbid")
    workerPoolId: Annotated[str, Field(pattern=WORKER_POOL_ID_PATTERN)]
    workerGroup: Annotated[str, Field(pattern=WORKER_ID_PATTERN)]
    workerId: Annotated[str, Field(pattern=WORKER_ID_PATTERN)]
    secret: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{44}$")]


class CreateWorkerRequest(BaseModel):
    """createWorker / updateWorker (providers that do not launch workers: `static`)."""

    model_config = ConfigDict(extra="forbid")
    providerInfo: dict[str, Any] = Field(default_factory=dict)
    expires: Timestamp
    capacity: Annotated[int, Field(ge=1, le=64)] = 1


def pool_out(document: dict[str, Any], stats: PoolStats) -> dict[str, Any]:
    cap, count = stats.capacity, stats.count
    return {
        "workerPoolId": document["_id"],
        "providerId": document["providerId"],
        "description": document.get("description", ""),
        "config": document["config"],
        "owner": document["owner"],
        "emailOnError": document.get("emailOnError", False),
        "created": format_ts(document["created"]),
        "lastModified": format_ts(document["lastModified"]),
        "currentCapacity": cap["requested"] + cap["running"],
        "requestedCount": count["requested"],
        "runningCount": count["running"],
        "stoppingCount": count["stopping"],
        "stoppedCount": count["stopped"],
        "requestedCapacity": cap["requested"],
        "runningCapacity": cap["running"],
        "stoppingCapacity": cap["stopping"],
        "stoppedCapacity": cap["stopped"],
    }


def worker_out(document: dict[str, Any]) -> dict[str, Any]:
    out = {
        "workerPoolId": document["workerPoolId"],
        "workerGroup": document["workerGroup"],
        "workerId": document["workerId"],
        "providerId": document["providerId"],
        "created": format_ts(document["created"]),
        "expires": format_ts(document["expires"]),
        "state": document["state"],
        "capacity": document.get("capacity", 1),
        "lastModified": format_ts(document["lastModified"]),
        "lastChecked": format_ts(document.get("lastChecked") or document["lastModified"]),
    }
    if document.get("launchConfigId"):
        out["launchConfigId"] = document["launchConfigId"]
    return out


def stored_worker(
    *,
    pool_id: str,
    provider_id: str,
    group: str,
    worker_id: str,
    capacity: int,
    now: datetime,
    expires: datetime,
    launched_by: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A worker's document as written *before* the provider is asked to launch it."""
    return {
        "_id": worker_key(pool_id, group, worker_id),
        "workerPoolId": pool_id,
        "workerGroup": group,
        "workerId": worker_id,
        "providerId": provider_id,
        "capacity": capacity,
        "state": REQUESTED,
        "created": now,
        "lastModified": now,
        "lastChecked": now,
        "expires": expires,
        "launchedBy": launched_by,
        "providerData": {},
        **(extra or {}),
    }
