"""Helpers for driving the running queue through the official client."""

from __future__ import annotations

import uuid
from typing import Any

import taskcluster

from tests.conftest import RunningService


def new_task_queue_id() -> str:
    return f"prov-{uuid.uuid4().hex[:8]}/wt-{uuid.uuid4().hex[:8]}"


def task_definition(task_queue_id: str, **overrides: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "taskQueueId": task_queue_id,
        "created": taskcluster.fromNowJSON("0 seconds"),
        "deadline": taskcluster.fromNowJSON("1 hour"),
        "payload": {"command": ["true"]},
        "metadata": {
            "name": "test task",
            "description": "made by the test suite",
            "owner": "tests@example.com",
            "source": "https://example.com/flotilla",
        },
    }
    task.update(overrides)
    return task


def root_queue(service: RunningService) -> taskcluster.Queue:
    return taskcluster.Queue(service.client_options())


def client_with_scopes(service: RunningService, scopes: list[str]) -> taskcluster.Queue:
    """A fresh client holding exactly `scopes` (plus the anonymous role)."""
    client_id = f"test/{uuid.uuid4().hex[:10]}"
    created = taskcluster.Auth(service.client_options()).createClient(
        client_id,
        {
            "expires": taskcluster.fromNowJSON("1 day"),
            "description": "test client",
            "scopes": scopes,
        },
    )
    return taskcluster.Queue(
        service.client_options(clientId=client_id, accessToken=created["accessToken"])
    )


def claim_one(
    queue: taskcluster.Queue, task_queue_id: str, worker_id: str = "w1"
) -> dict[str, Any]:
    """Claim exactly one task that is known to be pending."""
    claims = queue.claimWork(
        task_queue_id, {"workerGroup": "wg", "workerId": worker_id, "tasks": 1}
    )["tasks"]
    assert len(claims) == 1, claims
    return claims[0]


def worker_queue(service: RunningService, claim: dict[str, Any]) -> taskcluster.Queue:
    """A client using the temporary credentials a claim carries."""
    return taskcluster.Queue({**service.client_options(), "credentials": claim["credentials"]})
