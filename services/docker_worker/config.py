"""The worker's settings: one typed model, read once in `__main__` from (highest first)
command-line flags, `FLOTILLA_WORKER_*` variables, a YAML file, then defaults.

Credentials and the root URL also fall back to the official client's `TASKCLUSTER_*`
variables, and the root URL to `FLOTILLA_ROOT_URL`, so `.flotilla/env` is enough.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.models import IDENTIFIER_PATTERN, TASK_QUEUE_ID_PATTERN

ENV_PREFIX = "FLOTILLA_WORKER_"
SUPPORTED_FEATURES = ("localLiveLog", "artifacts")

# Variables read when the FLOTILLA_WORKER_* one is not set (the official client's names).
_ENV_FALLBACKS: dict[str, tuple[str, ...]] = {
    "root_url": ("TASKCLUSTER_ROOT_URL", "FLOTILLA_ROOT_URL"),
    "client_id": ("TASKCLUSTER_CLIENT_ID",),
    "access_token": ("TASKCLUSTER_ACCESS_TOKEN",),
    "certificate": ("TASKCLUSTER_CERTIFICATE",),
}
# Upstream's config.yml spellings accepted in the YAML file.
_YAML_ALIASES = {
    "rootUrl": "root_url",
    "provisionerId": "provisioner_id",
    "workerType": "worker_type",
    "taskQueueId": "task_queue_id",
    "workerGroup": "worker_group",
    "workerId": "worker_id",
    "workerNodeType": "worker_node_type",
    "afterIdleSeconds": "after_idle_s",
    "allowPrivileged": "allow_privileged",
}


# What `--help` says about each setting (with its default and FLOTILLA_WORKER_* variable).
HELP = {
    "root_url": "the Taskcluster root URL (also TASKCLUSTER_ROOT_URL, FLOTILLA_ROOT_URL)",
    "client_id": "the worker's client id (also TASKCLUSTER_CLIENT_ID)",
    "access_token": "its access token (also TASKCLUSTER_ACCESS_TOKEN)",
    "certificate": "its certificate, for temporary credentials (also TASKCLUSTER_CERTIFICATE)",
    "task_queue_id": "the task queue to claim from: <provisionerId>/<workerType>",
    "provisioner_id": "with --worker-type, instead of --task-queue-id",
    "worker_type": "with --provisioner-id, instead of --task-queue-id",
    "worker_group": "this worker's group",
    "worker_id": "this worker's id",
    "worker_node_type": "instance type, shown in task logs and TASKCLUSTER_INSTANCE_TYPE",
    "worker_location": "TASKCLUSTER_WORKER_LOCATION given to tasks (JSON)",
    "capacity": "how many tasks (containers) to run at once",
    "after_idle_s": "shut down after this many seconds without tasks (unset: never)",
    "claim_error_backoff_s": "pause after a failed claimWork call, in seconds",
    "reclaim_divisor": "reclaim at (takenUntil - now) / this",
    "status_probe_interval_s": "how often a running task's status is read (cancellation)",
    "live_log_bind_host": "address the live-log HTTP server listens on",
    "live_log_port": "port of the live-log HTTP server (0: any free port)",
    "live_log_public_hostname": "host name in live-log URLs (reachable by log readers)",
    "cache_root": "directory of the task caches (bind-mounted into containers)",
    "work_root": "directory for per-run files (unset: the system temp dir)",
    "docker_url": "the Docker engine's API URL",
    "purge_cache_url": "purge-cache's root URL when not behind the root URL (unset: root URL)",
    "allow_privileged": "allow privileged containers (tasks also need the scope)",
    "features": "comma-separated features this worker offers",
    "pull_attempts": "attempts per image pull",
    "pull_backoff_s": "first pause between image pull attempts, in seconds",
    "upload_attempts": "attempts per artifact upload",
    "upload_backoff_s": "first pause between upload attempts, in seconds",
    "shutdown_grace_s": "on SIGTERM, how long tasks get to report worker-shutdown",
    "log_level": "the worker's own log level",
}


class ConfigError(Exception):
    """The configuration is unusable; the message says which setting and where to set it."""


class WorkerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    root_url: str
    client_id: str
    access_token: str = Field(repr=False)
    certificate: str | None = Field(None, repr=False)
    # Either task_queue_id, or provisioner_id and worker_type (combined into it).
    task_queue_id: str = Field(pattern=TASK_QUEUE_ID_PATTERN)
    worker_group: str = Field(pattern=IDENTIFIER_PATTERN)
    worker_id: str = Field(pattern=IDENTIFIER_PATTERN)
    worker_node_type: str = "local"
    worker_location: str = '{"cloud":"static"}'
    capacity: int = Field(1, ge=1, le=64)
    # Shut down after this long without running tasks (checked between claimWork calls).
    after_idle_s: float | None = Field(None, gt=0)
    # Pause after a failed claimWork call (the call itself long-polls on the queue).
    claim_error_backoff_s: float = Field(5.0, ge=0)
    reclaim_divisor: float = Field(2.0, ge=1)
    # How often each running task's status is read to notice cancellation.
    status_probe_interval_s: float = Field(1.0, gt=0)
    # The live-log HTTP server: where it listens and the host name in its URLs.
    live_log_bind_host: str = "127.0.0.1"
    live_log_port: int = Field(0, ge=0, le=65535)
    live_log_public_hostname: str = "127.0.0.1"
    cache_root: Path = Path("/var/cache/flotilla-worker")
    work_root: Path | None = None  # temp files (logs, artifacts); None: the system temp dir
    docker_url: str = "unix:///var/run/docker.sock"
    # The purge-cache service's root URL when it is not behind root_url (tests, or a
    # deployment without the ingress); None: root_url.
    purge_cache_url: str | None = None
    allow_privileged: bool = False
    features: tuple[str, ...] = SUPPORTED_FEATURES
    pull_attempts: int = Field(3, ge=1)
    pull_backoff_s: float = Field(2.0, ge=0)
    upload_attempts: int = Field(5, ge=1)
    upload_backoff_s: float = Field(1.0, ge=0)
    shutdown_grace_s: float = Field(30.0, ge=0)
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _combine_task_queue(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        provisioner, worker_type = data.pop("provisioner_id", None), data.pop("worker_type", None)
        if provisioner is not None or worker_type is not None:
            if provisioner is None or worker_type is None:
                raise ValueError("provisioner_id and worker_type must be given together")
            combined = f"{provisioner}/{worker_type}"
            if data.get("task_queue_id") not in (None, combined):
                raise ValueError(
                    f"task_queue_id {data['task_queue_id']!r} contradicts "
                    f"provisioner_id/worker_type {combined!r}"
                )
            data["task_queue_id"] = combined
        return data

    @field_validator("features", mode="before")
    @classmethod
    def _split_features(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(SUPPORTED_FEATURES))
        if unknown:
            raise ValueError(
                f"unsupported features {unknown}; this worker has {SUPPORTED_FEATURES}"
            )
        return value

    @property
    def provisioner_id(self) -> str:
        return self.task_queue_id.split("/", 1)[0]

    @property
    def worker_type(self) -> str:
        return self.task_queue_id.split("/", 1)[1]

    @property
    def worker_key(self) -> str:
        """The label value that marks this worker's containers."""
        return f"{self.worker_group}/{self.worker_id}"

    def credentials(self) -> dict[str, str]:
        creds = {"clientId": self.client_id, "accessToken": self.access_token}
        if self.certificate:
            creds["certificate"] = self.certificate
        return creds


_SETTABLE = [*WorkerConfig.model_fields, "provisioner_id", "worker_type"]


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.docker_worker",
        description="Run claimed tasks in Docker containers.",
    )
    parser.add_argument(
        "--config", type=Path, help=f"a YAML file of settings (env {ENV_PREFIX}CONFIG)"
    )
    for field in _SETTABLE:
        parser.add_argument(
            _flag(field), dest=field, default=None, metavar=field.upper(), help=_help(field)
        )
    return parser


def _help(field: str) -> str:
    spec = WorkerConfig.model_fields.get(field)
    if spec is None or spec.is_required():
        default = "required" if spec is not None else "no default"
    else:
        value = spec.default
        if isinstance(value, tuple):
            value = ",".join(value)
        default = "unset" if value is None else f"default: {value}"
    text = f"{HELP.get(field, '')} ({default}; env {ENV_PREFIX}{field.upper()})"
    return text.replace("%", "%%")


def _from_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read worker config file {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"worker config file {path} must hold a mapping of settings")
    values = {_YAML_ALIASES.get(key, key): value for key, value in loaded.items()}
    if isinstance(values.get("taskcluster"), dict):  # upstream's {taskcluster: {clientId, ...}}
        tc = values.pop("taskcluster")
        values.setdefault("client_id", tc.get("clientId"))
        values.setdefault("access_token", tc.get("accessToken"))
        values.setdefault("certificate", tc.get("certificate"))
    unknown = sorted(set(values) - set(_SETTABLE))
    if unknown:
        raise ConfigError(f"unknown settings in {path}: {', '.join(unknown)}")
    return values


def _from_env(environ: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for field in _SETTABLE:
        names = (ENV_PREFIX + field.upper(), *_ENV_FALLBACKS.get(field, ()))
        for name in names:
            if environ.get(name):
                values[field] = environ[name]
                break
    return values


def _describe(exc: ValidationError) -> str:
    lines = ["invalid worker configuration:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(settings)"
        message = error["msg"]
        if error["type"] == "missing":
            message += (
                f" (set {_flag(field)}, {ENV_PREFIX}{field.upper()} or `{field}` in --config)"
            )
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def load_config(argv: Sequence[str], environ: Mapping[str, str]) -> WorkerConfig:
    """The worker's settings from flags over environment over YAML file over defaults."""
    args = vars(_parser().parse_args(list(argv)))
    path = args.pop("config") or (
        Path(environ[ENV_PREFIX + "CONFIG"]) if environ.get(ENV_PREFIX + "CONFIG") else None
    )
    values: dict[str, Any] = _from_yaml(path) if path else {}
    values.update(_from_env(environ))
    values.update({key: value for key, value in args.items() if value is not None})
    return build_config(values)


def build_config(values: Mapping[str, Any]) -> WorkerConfig:
    try:
        return WorkerConfig.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
