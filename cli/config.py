"""The CLI's settings, read once in `main` from the merged environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cli.errors import EXIT_USAGE, CliError

DEFAULT_ROOT_URL = "http://127.0.0.1:8080"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_EXCHANGE_PREFIX = "exchange/taskcluster-queue/v1/"
DEFAULT_PROVISIONER_URL = DEFAULT_ROOT_URL  # the ingress serves /api/worker-manager/ too
DEFAULT_MONGO_URL = "mongodb://127.0.0.1:27017/"
DEFAULT_MONGO_DB = "flotilla"


@dataclass(frozen=True)
class CliConfig:
    root_url: str
    client_id: str | None
    access_token: str | None
    amqp_url: str
    exchange_prefix: str
    # Where the Worker-Manager API is: the root URL (the ingress) unless
    # FLOTILLA_PROVISIONER_URL points straight at a provisioner.
    provisioner_url: str = DEFAULT_PROVISIONER_URL
    max_retries: int = 5
    # Operators' commands (`flotilla pending`) work on the database and the broker
    # directly, as the services do, and must declare pending queues with their arguments.
    mongo_url: str = DEFAULT_MONGO_URL
    mongo_db: str = DEFAULT_MONGO_DB
    pending_queue_expires_s: float | None = None

    def queue_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"rootUrl": self.root_url, "maxRetries": self.max_retries}
        if self.client_id and self.access_token:
            options["credentials"] = {"clientId": self.client_id, "accessToken": self.access_token}
        return options

    def worker_manager_options(self) -> dict[str, Any]:
        return {**self.queue_options(), "rootUrl": self.provisioner_url}

    @property
    def owner(self) -> str:
        """Who a task's metadata names when the file does not say."""
        return self.client_id or "anonymous"


def config_from(environ: Mapping[str, str]) -> CliConfig:
    def pick(*names: str, default: str | None = None) -> str | None:
        for name in names:
            if environ.get(name):
                return environ[name]
        return default

    root_url = (pick("TASKCLUSTER_ROOT_URL", "FLOTILLA_ROOT_URL") or DEFAULT_ROOT_URL).rstrip("/")
    return CliConfig(
        root_url=root_url,
        client_id=pick("TASKCLUSTER_CLIENT_ID"),
        access_token=pick("TASKCLUSTER_ACCESS_TOKEN"),
        amqp_url=pick("FLOTILLA_AMQP_URL", default=DEFAULT_AMQP_URL) or DEFAULT_AMQP_URL,
        exchange_prefix=pick("FLOTILLA_EXCHANGE_PREFIX", default=DEFAULT_EXCHANGE_PREFIX)
        or DEFAULT_EXCHANGE_PREFIX,
        provisioner_url=(pick("FLOTILLA_PROVISIONER_URL") or root_url).rstrip("/"),
        mongo_url=pick("FLOTILLA_MONGO_URL") or DEFAULT_MONGO_URL,
        mongo_db=pick("FLOTILLA_MONGO_DB") or DEFAULT_MONGO_DB,
        pending_queue_expires_s=_seconds_or_none(
            "FLOTILLA_PENDING_QUEUE_EXPIRES", pick("FLOTILLA_PENDING_QUEUE_EXPIRES")
        ),
    )


def _seconds_or_none(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise CliError(f"{name} must be a number of seconds above 0, not {text!r}", EXIT_USAGE)
    return value
