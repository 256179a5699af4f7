"""What the queue's handlers share: the stores, the claim machinery and the settings they
need, built once by the composition root and passed to each API module."""

from __future__ import annotations

from dataclasses import dataclass

from services.queue.waiters import ClaimWaiters
from services.queue.worker_records import WorkerRecords
from shared.db import Database
from shared.taskstore import TaskStore


@dataclass(frozen=True)
class Issuer:
    """The client whose token signs the temporary credentials handed out with claims."""

    client_id: str
    access_token: str


@dataclass(frozen=True)
class QueueContext:
    db: Database
    store: TaskStore
    waiters: ClaimWaiters
    workers: WorkerRecords
    issuer: Issuer
    claim_timeout_s: float
    claim_work_wait_s: float = 20.0  # claimWork's long poll, as upstream
