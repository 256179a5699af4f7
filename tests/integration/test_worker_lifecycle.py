"""What Taskcluster's worker-runner and generic-worker ask of worker-manager, and what an
anonymous caller may read, through the one root URL (the ingress) as they would."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from tests.ingress_support import IngressPlatform, ingress_fixture  # noqa: F401
from tests.integration.queue_support import new_task_queue_id, task_definition
from tests.integration.test_cli import flotilla

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root_options(ingress: IngressPlatform) -> dict[str, Any]:
    return {
        "rootUrl": ingress.root_url,
        "credentials": {
            "clientId": ingress.root_client_id,
            "accessToken": ingress.root_access_token,
        },
        "maxRetries": 0,
    }


def failure(call: Any, *args: Any) -> TaskclusterRestFailure:
    with pytest.raises(TaskclusterRestFailure) as raised:
        call(*args)
    return raised.value


def static_worker(root: dict[str, Any]) -> tuple[str, str, str, str]:
    """A static pool with one worker created with a secret: (pool, group, id, secret)."""
    manager = taskcluster.WorkerManager(root)
    pool = new_task_queue_id()
    manager.createWorkerPool(
        pool,
        {
            "providerId": "static",
            "description": "machines we run ourselves",
            "config": {"workerConfig": {"shutdown": False}},
            "owner": "tests@example.com",
            "emailOnError": False,
        },
    )
    group, worker_id = "rack-1", f"box-{uuid.uuid4().hex[:6]}"
    secret = taskcluster.slugId() + taskcluster.slugId()
    expires = taskcluster.stringDate(taskcluster.fromNow("1 day"))
    manager.createWorker(
        pool, group, worker_id, {"providerInfo": {"staticSecret": secret}, "expires": expires}
    )
    return pool, group, worker_id, secret


def test_a_worker_runner_style_lifecycle(
    ingress: IngressPlatform, root_options: dict[str, Any]
) -> None:
    pool, group, worker_id, static_secret = static_worker(root_options)
    anonymous = {"rootUrl": ingress.root_url, "maxRetries": 0}
    # worker-runner registers without credentials
    registered = taskcluster.WorkerManager(anonymous).registerWorker(
        {
            "workerPoolId": pool,
            "providerId": "static",
            "workerGroup": group,
            "workerId": worker_id,
            "workerIdentityProof": {"staticSecret": static_secret},
        }
    )
    assert registered["workerConfig"] == {"shutdown": False}
    # Flotilla's CLI finds the Worker-Manager API at the root URL too
    env = {k: v for k, v in os.environ.items() if k != "FLOTILLA_PROVISIONER_URL"}
    env |= {**ingress.environment(), "FLOTILLA_ENV_FILE": "", "COLUMNS": "200"}
    env["PYTHONPATH"] = str(REPO)  # this checkout's CLI, whichever one .venv was made from
    listed = flotilla(env, "pools")
    assert listed.returncode == 0 and pool in listed.stdout, listed.stderr
    as_worker = {**anonymous, "credentials": registered["credentials"]}
    manager = taskcluster.WorkerManager(as_worker)
    assert manager.shouldWorkerTerminate(pool, group, worker_id)["terminate"] is False

    # the worker claims a task with those credentials, and is told to keep going
    task_id = taskcluster.slugId()
    taskcluster.Queue(root_options).createTask(task_id, task_definition(pool))
    claimed = taskcluster.Queue(as_worker).claimWork(
        pool, {"workerGroup": group, "workerId": worker_id, "tasks": 1}
    )["tasks"]
    assert [c["status"]["taskId"] for c in claimed] == [task_id]
    busy = manager.shouldWorkerTerminate(pool, group, worker_id)
    assert busy["terminate"] is False

    # generic-worker says it is shutting down; worker-runner removes the worker itself
    assert manager.removeWorker(pool, group, worker_id) == {}
    removed = manager.shouldWorkerTerminate(pool, group, worker_id)
    assert removed == {"terminate": True, "reason": "worker removed"}


def test_reregistration_rotates_the_secret_and_gives_fresh_credentials(
    ingress: IngressPlatform, root_options: dict[str, Any]
) -> None:
    pool, group, worker_id, static_secret = static_worker(root_options)
    anonymous = {"rootUrl": ingress.root_url, "maxRetries": 0}
    registered = taskcluster.WorkerManager(anonymous).registerWorker(
        {
            "workerPoolId": pool,
            "providerId": "static",
            "workerGroup": group,
            "workerId": worker_id,
            "workerIdentityProof": {"staticSecret": static_secret},
        }
    )
    manager = taskcluster.WorkerManager({**anonymous, "credentials": registered["credentials"]})
    body = {
        "workerPoolId": pool,
        "workerGroup": group,
        "workerId": worker_id,
        "secret": registered["secret"],
    }
    renewed = manager.reregisterWorker(body)
    assert set(renewed) == {"expires", "credentials", "secret"}
    assert renewed["secret"] != registered["secret"] and len(renewed["secret"]) == 44
    assert renewed["credentials"]["clientId"] == f"worker/static/{pool}/{group}/{worker_id}"
    assert renewed["credentials"]["certificate"] != registered["credentials"]["certificate"]
    fresh = taskcluster.WorkerManager({**anonymous, "credentials": renewed["credentials"]})
    assert fresh.shouldWorkerTerminate(pool, group, worker_id)["terminate"] is False

    # the secret is single use; a wrong one, or bad input, is a 400 that changes nothing
    reused = failure(fresh.reregisterWorker, body)
    assert (reused.status_code, reused.body["code"]) == (400, "InputError")
    assert "Could not generate credentials" in reused.body["message"]
    malformed = failure(fresh.reregisterWorker, {**body, "secret": "short"})
    assert malformed.status_code == 400 and "requestInfo" in malformed.body
    missing = failure(fresh.reregisterWorker, {k: v for k, v in body.items() if k != "secret"})
    assert missing.status_code == 400
    again = fresh.reregisterWorker({**body, "secret": renewed["secret"]})
    assert again["secret"] != renewed["secret"]
    # another worker's credentials may not reregister it
    other = failure(
        taskcluster.WorkerManager(anonymous).reregisterWorker, {**body, "secret": again["secret"]}
    )
    assert other.status_code == 403
    unknown = failure(fresh.shouldWorkerTerminate, pool, group, "nobody")
    assert unknown.status_code in (403, 404)


def test_anonymous_callers_read_but_never_write(
    ingress: IngressPlatform, root_options: dict[str, Any]
) -> None:
    queue = taskcluster.Queue(root_options)
    tq, task_id = new_task_queue_id(), taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq))
    nobody = taskcluster.Queue({"rootUrl": ingress.root_url, "maxRetries": 0})
    assert nobody.status(task_id)["status"]["state"] == "pending"
    assert nobody.task(task_id)["taskQueueId"] == tq
    assert nobody.listArtifacts(task_id, "0")["artifacts"] == []
    assert nobody.listDependentTasks(task_id)["tasks"] == []
    write = failure(nobody.cancelTask, task_id)
    assert (write.status_code, write.body["code"]) == (403, "InsufficientScopes")
    create = failure(nobody.createTask, taskcluster.slugId(), task_definition(tq))
    assert create.status_code == 403
    assert queue.status(task_id)["status"]["state"] == "pending"  # nothing changed
    # the role Flotilla made grants reads only
    role = requests.get(f"{ingress.root_url}/api/auth/v1/roles/anonymous").json()
    assert "queue:status:*" in role["scopes"]
    assert not [s for s in role["scopes"] if "create" in s or "cancel" in s or s == "*"]
