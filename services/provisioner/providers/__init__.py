"""What every provider does for the loop and the API. A provider instance is named after
its type (`docker`, `aws`, `static`); a pool's `providerId` picks one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from services.provisioner.pools import PoolConfig


@dataclass(frozen=True)
class Pool:
    pool_id: str
    provider_id: str
    config: PoolConfig


@dataclass(frozen=True)
class Launched:
    """What the provider says about a worker it started: its providerData and whether the
    worker is up already (`running`) or still has to register (`requested`)."""

    provider_data: dict[str, Any]
    state: str


class ProviderError(Exception):
    """The provider could not do what was asked; the message is for the pool's log."""


class Provider(Protocol):
    provider_id: str
    boot_s: float  # how long a new worker takes to arrive (the estimator's guard)
    # False for `static`: the loop neither launches, nor retires, nor estimates; workers
    # come from createWorker and leave through removeWorker.
    launches_workers: bool
    registers_from: tuple[str, ...]  # worker states in which registerWorker is accepted

    def validate(self, config: PoolConfig) -> None:
        """Raise ValueError if this provider cannot launch workers for `config`."""

    def worker_extra(self, pool: Pool) -> dict[str, Any]:
        """Fields stored with a new worker before it is launched (e.g. a token hash)."""

    async def launch(self, pool: Pool, worker: dict[str, Any]) -> Launched: ...

    async def gone(self, pool: Pool, workers: list[dict[str, Any]]) -> dict[str, str]:
        """Of these live workers, the ones that no longer exist: {worker _id: reason}."""

    async def terminate(self, worker: dict[str, Any]) -> None: ...

    def verify_registration(self, worker: dict[str, Any], proof: dict[str, Any]) -> bool: ...

    def worker_from_api(self, provider_info: dict[str, Any]) -> dict[str, Any]:
        """Fields stored for a worker made by createWorker/updateWorker; ProviderError if
        this provider makes its own workers."""

    async def close(self) -> None: ...
