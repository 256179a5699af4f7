"""The temporary credentials a claim carries (reference §4): named `task-client/...`,
valid until takenUntil, for the task's own scopes plus reclaiming, resolving and
creating artifacts of that one run. Pure."""

from __future__ import annotations

from datetime import datetime

from shared.auth.certificates import create_temporary_credentials


def task_client_id(
    task_id: str, run_id: int, worker_group: str, worker_id: str, taken_until: datetime
) -> str:
    # Epoch seconds as JavaScript prints `date.getTime() / 1000`: fractional only if needed.
    millis = round(taken_until.timestamp() * 1000)
    seconds = f"{millis // 1000}" if millis % 1000 == 0 else f"{millis / 1000:.3f}".rstrip("0")
    return f"task-client/{task_id}/{run_id}/on/{worker_group}/{worker_id}/until/{seconds}"


def run_scopes(task_id: str, run_id: int, task_scopes: list[str]) -> list[str]:
    return [
        f"queue:reclaim-task:{task_id}/{run_id}",
        f"queue:resolve-task:{task_id}/{run_id}",
        f"queue:create-artifact:{task_id}/{run_id}",
        *task_scopes,
    ]


def for_claim(
    *,
    issuer_id: str,
    issuer_token: str,
    task_id: str,
    run_id: int,
    worker_group: str,
    worker_id: str,
    taken_until: datetime,
    task_scopes: list[str],
    now: datetime,
) -> dict[str, str]:
    return create_temporary_credentials(
        issuer_id,
        issuer_token,
        now,
        taken_until,
        run_scopes(task_id, run_id, task_scopes),
        name=task_client_id(task_id, run_id, worker_group, worker_id, taken_until),
    )
