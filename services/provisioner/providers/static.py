"""The `static` provider (reference 5.5): workers on machines Flotilla does not manage.

Each worker is pre-registered with `createWorker` carrying `providerInfo.staticSecret`; it
is `running` from then on. The machine's worker calls `registerWorker` with
`workerIdentityProof: {staticSecret}` (upstream's key; `secret` is accepted too), as often
as it restarts, and gets the worker credentials of reference 5.3. Only a hash of the
secret is stored, so a database read does not hand out worker identities.

The provisioner never launches, terminates or times out a static worker, and the
estimator does not apply: capacity is what the machines bring. `removeWorker` marks the
worker stopped, after which it can no longer register.
"""

from __future__ import annotations

from typing import Any

from services.provisioner import credentials
from services.provisioner.pools import PoolConfig
from services.provisioner.providers import Launched, Pool, ProviderError
from services.provisioner.store import RUNNING

MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 1024
PROOF_KEYS = ("staticSecret", "secret")


def secret_hash(provider_info: dict[str, Any]) -> str:
    """The stored form of a createWorker/updateWorker `providerInfo.staticSecret`. Pure."""
    secret = provider_info.get("staticSecret")
    if not isinstance(secret, str) or not secret:
        raise ProviderError("no worker staticSecret provided (providerInfo.staticSecret)")
    if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        raise ProviderError(
            f"staticSecret must have {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters"
        )
    unknown = sorted(set(provider_info) - {"staticSecret"})
    if unknown:
        raise ProviderError(f"unknown providerInfo fields for static workers: {unknown}")
    return credentials.token_hash(secret)


def proof_matches(proof: dict[str, Any], expected_hash: str | None) -> bool:
    """Whether a registerWorker proof carries the worker's secret. Pure."""
    secret = next((proof[k] for k in PROOF_KEYS if k in proof), None)
    return credentials.token_matches(secret, expected_hash)


class StaticProvider:
    provider_id = "static"
    boot_s = 0.0
    launches_workers = False
    registers_from = (RUNNING,)  # running from createWorker on; re-registers on restart

    def validate(self, config: PoolConfig) -> None:
        if config.launchConfigs:
            raise ValueError("launchConfigs are for the aws provider")
        if config.launch is not None:
            raise ValueError("launch is for the docker provider")

    def worker_extra(self, pool: Pool) -> dict[str, Any]:
        return {}

    async def launch(self, pool: Pool, worker: dict[str, Any]) -> Launched:
        raise ProviderError("static workers are created with createWorker, not launched")

    async def gone(self, pool: Pool, workers: list[dict[str, Any]]) -> dict[str, str]:
        return {}  # nothing to check: the machines are not ours

    async def terminate(self, worker: dict[str, Any]) -> None:
        return None  # never: removeWorker only marks the worker stopped

    def verify_registration(self, worker: dict[str, Any], proof: dict[str, Any]) -> bool:
        return proof_matches(proof, worker.get("staticSecretHash"))

    def worker_from_api(self, provider_info: dict[str, Any]) -> dict[str, Any]:
        return {"staticSecretHash": secret_hash(provider_info)}

    async def close(self) -> None:
        return None
