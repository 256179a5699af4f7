"""Reading and acting through the public APIs with the visitor's own credentials, so the
queue's scopes decide exactly as for the CLI (anonymous visitors get the anonymous role)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
import taskcluster.aio
from taskcluster.exceptions import (
    TaskclusterAuthFailure,
    TaskclusterFailure,
    TaskclusterRestFailure,
)

from services.web.session import Session

T = TypeVar("T")
PAGE_LIMIT = 1000


class UpstreamError(Exception):
    """An API said no (or could not be reached): shown to the visitor as a page."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _options(root_url: str, session: Session | None) -> dict[str, Any]:
    options: dict[str, Any] = {"rootUrl": root_url, "maxRetries": 2}
    if session is not None and session.signed_in:
        options["credentials"] = session.credentials()
    return options


class Apis:
    """Client factories bound to the console's HTTP session and the deployment's root URL."""

    def __init__(self, root_url: str, http: aiohttp.ClientSession) -> None:
        self.root_url = root_url.rstrip("/")
        self.http = http

    def queue(self, session: Session | None) -> taskcluster.aio.Queue:
        return taskcluster.aio.Queue(_options(self.root_url, session), session=self.http)

    def auth(self, session: Session | None) -> taskcluster.aio.Auth:
        return taskcluster.aio.Auth(_options(self.root_url, session), session=self.http)

    def worker_manager(self, session: Session | None) -> taskcluster.aio.WorkerManager:
        return taskcluster.aio.WorkerManager(_options(self.root_url, session), session=self.http)

    def artifact_url(self, session: Session | None, task_id: str, run_id: int, name: str) -> str:
        """getArtifact's URL: signed (60 s bewit) for a signed-in visitor, plain for others."""
        queue = self.queue(session)
        if session is not None and session.signed_in:
            return str(
                queue.buildSignedUrl("getArtifact", task_id, str(run_id), name, expiration=60)
            )
        return str(queue.buildUrl("getArtifact", task_id, str(run_id), name))


async def call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except TaskclusterRestFailure as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        raise UpstreamError(
            exc.status_code or 502, str(body.get("code", "Error")), str(body.get("message", exc))
        ) from None
    except TaskclusterAuthFailure as exc:
        raise UpstreamError(401, "AuthenticationFailed", str(exc)) from None
    except TaskclusterFailure as exc:
        raise UpstreamError(502, "Unavailable", f"the API could not be reached: {exc}") from None


async def list_task_group(queue: taskcluster.aio.Queue, task_group_id: str) -> list[dict[str, Any]]:
    """Every `{status, task}` of the group, following continuation tokens."""
    tasks: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": PAGE_LIMIT}
    while True:
        page = await call(queue.listTaskGroup(task_group_id, query=query))
        tasks.extend(page.get("tasks", []))
        token = page.get("continuationToken")
        if not token:
            return tasks
        query = {"limit": PAGE_LIMIT, "continuationToken": token}


async def list_all(method: Any, *args: Any, key: str) -> list[dict[str, Any]]:
    """All pages of a listing (listProvisioners, listWorkers, ...)."""
    items: list[dict[str, Any]] = []
    query: dict[str, Any] = {}
    while True:
        page = await call(method(*args, query=query))
        items.extend(page.get(key, []))
        token = page.get("continuationToken")
        if not token:
            return items
        query = {"continuationToken": token}
