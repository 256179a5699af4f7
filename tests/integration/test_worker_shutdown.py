"""`workerShutdown` (Flotilla's own endpoint, called by the provisioner when it knows a
worker is gone): it needs its scope, resolves the runs the worker still holds as
exception/worker-shutdown, and leaves alone those resolved meanwhile."""

from __future__ import annotations

import datetime
import uuid

import pymongo
import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from services.provisioner.queue_client import FlotillaQueue
from shared.claims import COLLECTION as claims_collection
from shared.config import load_settings
from tests.conftest import RunningService
from tests.integration.queue_support import (
    new_task_queue_id,
    root_queue,
    task_definition,
    worker_queue,
)


def shutdown_client(service: RunningService, scopes: list[str]) -> FlotillaQueue:
    client_id = f"test/shutdown/{uuid.uuid4().hex[:10]}"
    created = taskcluster.Auth(service.client_options()).createClient(
        client_id,
        {"expires": taskcluster.fromNowJSON("1 day"), "description": "t", "scopes": scopes},
    )
    return FlotillaQueue(
        service.client_options(clientId=client_id, accessToken=created["accessToken"])
    )


async def test_worker_shutdown_checks_its_scope_and_skips_resolved_runs(
    queue_service: RunningService,
) -> None:
    queue, tq = root_queue(queue_service), new_task_queue_id()
    prov, wt = tq.split("/")
    done, held = taskcluster.slugId(), taskcluster.slugId()
    for task_id in (done, held):
        queue.createTask(task_id, task_definition(tq, retries=1))
    claims = queue.claimWork(tq, {"workerGroup": "wg", "workerId": "w1", "tasks": 2})["tasks"]
    assert sorted(c["status"]["taskId"] for c in claims) == sorted([done, held])
    finished = next(c for c in claims if c["status"]["taskId"] == done)
    worker_queue(queue_service, finished).reportCompleted(done, "0")
    # the race the skip is for: the worker resolved its run, but the claim's bookkeeping
    # entry (cleared in the background) is still there when the provisioner calls
    with pymongo.MongoClient(load_settings().mongo_url) as client:
        client[queue_service.mongo_db][claims_collection].replace_one(
            {"_id": f"{done}/0"},
            {
                "_id": f"{done}/0",
                "taskId": done,
                "runId": 0,
                "taskQueueId": tq,
                "workerGroup": "wg",
                "workerId": "w1",
                "started": datetime.datetime.now(datetime.UTC),
                "takenUntil": datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
            },
            upsert=True,
        )

    wrong = shutdown_client(queue_service, [f"queue:worker-shutdown:{tq}/wg/other"])
    with pytest.raises(TaskclusterRestFailure) as refused:
        await wrong.workerShutdown(prov, wt, "wg", "w1")
    assert (refused.value.status_code, refused.value.body["code"]) == (403, "InsufficientScopes")
    assert queue.status(held)["status"]["state"] == "running"  # nothing changed

    allowed = shutdown_client(queue_service, [f"queue:worker-shutdown:{tq}/wg/w1"])
    answer = await allowed.workerShutdown(prov, wt, "wg", "w1")
    assert answer == {"resolved": [{"taskId": held, "runId": 0}]}  # not the completed one
    runs = queue.status(held)["status"]["runs"]
    assert [(r["state"], r.get("reasonResolved")) for r in runs] == [
        ("exception", "worker-shutdown"),
        ("pending", None),
    ]
    assert queue.status(done)["status"]["state"] == "completed"
    assert await allowed.workerShutdown(prov, wt, "wg", "w1") == {"resolved": []}  # repeatable
