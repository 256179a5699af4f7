"""The container's environment (reference §1.4): the task's `env`, then the variables the
worker sets unconditionally, which a task cannot override. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerIdentity:
    root_url: str
    provisioner_id: str
    worker_type: str
    worker_group: str
    worker_id: str
    instance_type: str
    public_ip: str
    location: str


def worker_variables(identity: WorkerIdentity, task_id: str, run_id: int) -> dict[str, str]:
    return {
        "TASK_ID": task_id,
        "RUN_ID": str(run_id),
        "TASKCLUSTER_ROOT_URL": identity.root_url,
        "TASKCLUSTER_WORKER_TYPE": identity.worker_type,
        "TASKCLUSTER_WORKER_POOL": f"{identity.provisioner_id}/{identity.worker_type}",
        "TASKCLUSTER_INSTANCE_TYPE": identity.instance_type,
        "TASKCLUSTER_WORKER_GROUP": identity.worker_group,
        "TASKCLUSTER_PUBLIC_IP": identity.public_ip,
        "TASKCLUSTER_WORKER_LOCATION": identity.location,
    }


def container_env(task_env: Mapping[str, str], worker_vars: Mapping[str, str]) -> dict[str, str]:
    """Task variables first; the worker's win on a clash."""
    return {**task_env, **worker_vars}


def as_docker_list(env: Mapping[str, str]) -> list[str]:
    return [f"{name}={value}" for name, value in env.items()]
