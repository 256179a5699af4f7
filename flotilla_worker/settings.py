"""The kit's settings: one frozen dataclass. Build it in your `main` (directly, or from
the environment with `WorkerSettings.from_env`); nothing below reads the environment."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "FLOTILLA_WORKER_"
# Read when the FLOTILLA_WORKER_* variable is not set (the official client's names).
ENV_FALLBACKS: dict[str, tuple[str, ...]] = {
    "root_url": ("TASKCLUSTER_ROOT_URL",),
    "client_id": ("TASKCLUSTER_CLIENT_ID",),
    "access_token": ("TASKCLUSTER_ACCESS_TOKEN",),
    "certificate": ("TASKCLUSTER_CERTIFICATE",),
    "worker_pool_id": ("TASKCLUSTER_WORKER_POOL_ID",),
}


HELP = {
    "root_url": "the Taskcluster root URL",
    "task_queue_id": "the task queue to claim from: <provisionerId>/<workerType>",
    "worker_group": "this worker's group",
    "worker_id": "this worker's id",
    "client_id": "client id (unless registering with a worker pool)",
    "access_token": "access token of client_id",
    "certificate": "certificate, for temporary credentials",
    "capacity": "how many tasks to run at once",
    "after_idle_s": "shut down after this many seconds without tasks (unset: never)",
    "claim_error_backoff_s": "pause after a failed claimWork call",
    "reclaim_divisor": "reclaim at (takenUntil - now) / this",
    "status_probe_interval_s": "how often a running task's status is read (cancellation)",
    "live_log": "serve each task's live log over HTTP and upload the backing log",
    "live_log_bind_host": "address the live-log HTTP server listens on",
    "live_log_port": "port of the live-log HTTP server (0: any free port)",
    "live_log_public_hostname": "host name in the live-log URLs",
    "work_root": "directory for per-run files (unset: the system temp dir)",
    "upload_attempts": "attempts per artifact upload",
    "upload_backoff_s": "first pause between upload attempts",
    "artifact_storage": "s3 or object",
    "shutdown_grace_s": "on SIGTERM, how long tasks get to report worker-shutdown",
    "default_max_run_time_s": "maxRunTime of tasks whose payload has none (unset: none)",
    "worker_node_type": "instance type shown in task logs",
    "worker_version": "version shown in task logs",
    "provider_id": "register with the worker pool through this provider",
    "worker_pool_id": "the worker pool to register with (default: task_queue_id)",
    "static_secret": "the static provider's per-worker secret",
    "registration_token": "the registration token a launching provider gave",
    "worker_manager_url": "root URL of Worker-Manager (default: root_url)",
    "terminate_check_interval_s": "how often a registered worker asks shouldWorkerTerminate",
}


class SettingsError(ValueError):
    """A setting is missing or unusable; the message names it."""


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the kit needs to run a worker.

    Identity: `task_queue_id` (`<provisionerId>/<workerType>`), `worker_group`,
    `worker_id`. Credentials: `client_id`/`access_token` (+ `certificate`), or none of
    them and a worker-pool registration (`provider_id` with `static_secret` or
    `registration_token`), which returns the worker's credentials.
    """

    root_url: str
    task_queue_id: str
    worker_group: str
    worker_id: str
    client_id: str = ""
    access_token: str = field(default="", repr=False)
    certificate: str | None = field(default=None, repr=False)
    capacity: int = 1
    # Shut down after this long without running tasks (checked between claimWork calls).
    after_idle_s: float | None = None
    claim_error_backoff_s: float = 5.0
    reclaim_divisor: float = 2.0
    # How often each running task's status is read, to notice cancellation.
    status_probe_interval_s: float = 1.0
    # The live log: served over HTTP at http://<public hostname>:<port>/log/<token>.
    live_log: bool = True
    live_log_bind_host: str = "127.0.0.1"
    live_log_port: int = 0
    live_log_public_hostname: str = "127.0.0.1"
    work_root: Path | None = None  # per-run directories; None: the system temp dir
    upload_attempts: int = 5
    upload_backoff_s: float = 1.0
    artifact_storage: str = "s3"  # or "object"
    # On SIGTERM: how long running tasks get to report worker-shutdown before cancelling.
    shutdown_grace_s: float = 30.0
    # maxRunTime for tasks whose payload has none (None: no limit).
    default_max_run_time_s: float | None = None
    worker_node_type: str = "local"
    worker_version: str = "flotilla-worker-kit 0.1"
    # Registration with a worker pool (Worker-Manager registerWorker), optional.
    provider_id: str | None = None
    worker_pool_id: str | None = None  # defaults to task_queue_id
    static_secret: str | None = field(default=None, repr=False)
    registration_token: str | None = field(default=None, repr=False)
    worker_manager_url: str | None = None  # root URL of Worker-Manager; default root_url
    # How often a registered worker asks shouldWorkerTerminate (errors: keep running).
    terminate_check_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if self.task_queue_id.count("/") != 1:
            raise SettingsError(
                f"task_queue_id {self.task_queue_id!r} must be <provisionerId>/<workerType>"
            )
        if not 1 <= self.capacity <= 1024:
            raise SettingsError("capacity must be between 1 and 1024")
        if self.artifact_storage not in ("s3", "object"):
            raise SettingsError("artifact_storage must be s3 or object")
        registering = self.provider_id is not None
        if registering and not (self.static_secret or self.registration_token):
            raise SettingsError("provider_id needs static_secret or registration_token")
        if not registering and not (self.client_id and self.access_token):
            raise SettingsError(
                "client_id and access_token are required (or register with provider_id)"
            )

    @property
    def provisioner_id(self) -> str:
        return self.task_queue_id.split("/", 1)[0]

    @property
    def worker_type(self) -> str:
        return self.task_queue_id.split("/", 1)[1]

    @property
    def pool_id(self) -> str:
        return self.worker_pool_id or self.task_queue_id

    def credentials(self) -> dict[str, str]:
        creds = {"clientId": self.client_id, "accessToken": self.access_token}
        if self.certificate:
            creds["certificate"] = self.certificate
        return creds

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> WorkerSettings:
        """Settings from `FLOTILLA_WORKER_<FIELD>` variables (the official client's
        `TASKCLUSTER_*` as fallbacks), then `overrides`."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            for name in (ENV_PREFIX + spec.name.upper(), *ENV_FALLBACKS.get(spec.name, ())):
                if environ.get(name):
                    values[spec.name] = _convert(spec.name, hints[spec.name], environ[name])
                    break
        values.update(overrides)
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in values
        ]
        if missing:
            names = ", ".join(ENV_PREFIX + name.upper() for name in missing)
            raise SettingsError(f"missing settings: {names}")
        return cls(**values)


def _convert(name: str, hint: Any, text: Any) -> Any:
    if not isinstance(text, str):
        return text
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kind = next((t for t in options if t is not type(None)), str)
    try:
        if kind is bool:
            return text.strip().lower() in ("1", "true", "yes", "on")
        return kind(text)
    except ValueError as exc:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}: {exc}") from None
