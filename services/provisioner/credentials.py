"""What a worker gets when it registers (reference 5.3): temporary credentials named
`worker/<providerId>/<workerPoolId>/<workerGroup>/<workerId>` with the worker scopes,
signed by the provisioner's issuing client. Pure."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from shared.auth.certificates import create_temporary_credentials

CLOCK_SKEW = timedelta(minutes=15)  # upstream starts worker credentials 15 min early


def worker_client_id(provider_id: str, pool_id: str, group: str, worker_id: str) -> str:
    return f"worker/{provider_id}/{pool_id}/{group}/{worker_id}"


def worker_scopes(pool_id: str, group: str, worker_id: str) -> list[str]:
    worker = f"{pool_id}/{group}/{worker_id}"
    return [
        f"assume:worker-type:{pool_id}",
        f"assume:worker-pool:{pool_id}",
        f"assume:worker-id:{group}/{worker_id}",
        f"queue:worker-id:{group}/{worker_id}",
        f"secrets:get:worker-type:{pool_id}",
        f"secrets:get:worker-pool:{pool_id}",
        f"queue:claim-work:{pool_id}",
        f"worker-manager:remove-worker:{worker}",
        f"worker-manager:reregister-worker:{worker}",
        f"worker-manager:should-worker-terminate:{worker}",
        # Flotilla's addition: the docker-worker reads the status of the tasks it runs
        # with its own credentials, to stop a cancelled task within seconds.
        "queue:status:*",
    ]


def for_worker(
    *,
    issuer_id: str,
    issuer_token: str,
    provider_id: str,
    pool_id: str,
    group: str,
    worker_id: str,
    now: datetime,
    expires: datetime,
) -> dict[str, str]:
    return create_temporary_credentials(
        issuer_id,
        issuer_token,
        now - CLOCK_SKEW,
        expires,
        worker_scopes(pool_id, group, worker_id),
        name=worker_client_id(provider_id, pool_id, group, worker_id),
    )


def new_token() -> str:
    """A one-time registration token for a worker's user data."""
    return secrets.token_urlsafe(32)


def new_secret() -> str:
    """The secret registerWorker/reregisterWorker hand out for the next reregistration:
    44 URL-safe characters, as upstream's two slugids."""
    return secrets.token_urlsafe(33)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: object, expected_hash: str | None) -> bool:
    if not isinstance(token, str) or not expected_hash:
        return False
    return hmac.compare_digest(token_hash(token), expected_hash)
