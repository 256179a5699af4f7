"""Container environment precedence (reference §1.4) and the run-ownership check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flotilla_worker.claim import reclaim_delay_s, run_is_ours
from services.docker_worker.env import (
    WorkerIdentity,
    as_docker_list,
    container_env,
    worker_variables,
)

IDENTITY = WorkerIdentity(
    root_url="http://queue",
    provisioner_id="prov",
    worker_type="wt",
    worker_group="g",
    worker_id="w",
    instance_type="local",
    public_ip="10.0.0.1",
    location='{"cloud":"static"}',
)


def test_worker_variables_override_the_tasks() -> None:
    task_env = {"TASK_ID": "forged", "RUN_ID": "9", "TASKCLUSTER_ROOT_URL": "x", "MINE": "1"}
    env = container_env(task_env, worker_variables(IDENTITY, "T", 2))
    assert env["TASK_ID"] == "T" and env["RUN_ID"] == "2"
    assert env["TASKCLUSTER_ROOT_URL"] == "http://queue"
    assert env["TASKCLUSTER_WORKER_POOL"] == "prov/wt"
    assert env["TASKCLUSTER_WORKER_TYPE"] == "wt"
    assert env["TASKCLUSTER_WORKER_GROUP"] == "g"
    assert env["TASKCLUSTER_INSTANCE_TYPE"] == "local"
    assert env["TASKCLUSTER_PUBLIC_IP"] == "10.0.0.1"
    assert env["MINE"] == "1"
    assert "MINE=1" in as_docker_list(env)


def test_a_run_is_ours_only_while_running_on_this_worker() -> None:
    def status(state: str, worker: str = "w") -> dict:
        return {
            "runs": [
                {"state": "exception"},
                {"state": state, "workerGroup": "g", "workerId": worker},
            ]
        }

    assert run_is_ours(status("running"), 1, "g", "w")
    assert not run_is_ours(status("exception"), 1, "g", "w")
    assert not run_is_ours(status("completed"), 1, "g", "w")
    assert not run_is_ours(status("running", worker="other"), 1, "g", "w")
    assert not run_is_ours(status("running"), 0, "g", "w")
    assert not run_is_ours(status("running"), 2, "g", "w")


def test_reclaim_comes_at_half_the_remaining_claim_time() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert reclaim_delay_s(now + timedelta(seconds=1200), now, 2) == 600
    assert reclaim_delay_s(now + timedelta(seconds=1), now, 2) == 1.0  # never a busy loop
