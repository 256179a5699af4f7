"""The Index API under `/api/index/v1/` (reference §3), with upstream's method names,
routes and scopes, so `taskcluster.Index` works unchanged.

Served: ping (and the dockerflow trio), findTask, insertTask, listNamespaces, listTasks,
findArtifactFromTask. Not served: deleteTask, findTasksAtIndex and the deprecated POST
listings (see the README).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pydantic
from aiohttp import web

from services.index import entries
from services.index.store import NAMESPACES, TASKS, IndexStore, namespace_out, task_out
from shared import errors, paging
from shared.api import Call, declare, json_response
from shared.models.common import Slugid, Timestamp
from shared.timeutil import utcnow

NAMESPACE = {"namespace": entries.NAMESPACE_PATTERN}
# The listings take no namespace for the top level (upstream's `/namespaces/:namespace?`).
PARENT = {"namespace": f"^$|{entries.NAMESPACE_PATTERN}"}
INDEX_PATH = {"indexPath": entries.NAMESPACE_PATTERN}
# findArtifactFromTask redirects to a signed URL for names `anonymous` may not read; it
# lives as long as upstream's (15 minutes).
SIGNED_URL_TTL_S = 15 * 60


class InsertTaskRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    taskId: Slugid
    rank: float | int
    data: dict[str, Any]
    expires: Timestamp

    @pydantic.field_validator("rank", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("rank must be a number")
        return value


# Builds the queue's getLatestArtifact URL for (taskId, name); signed when `signed`.
ArtifactUrl = Callable[[str, str, bool], str]


class IndexApi:
    def __init__(self, store: IndexStore, artifact_url: ArtifactUrl) -> None:
        self.store = store
        self.artifact_url = artifact_url

    async def _live(self, namespace: str, now: datetime) -> dict[str, Any]:
        document = await self.store.find(namespace)
        if document is None or not entries.is_live(document["expires"], now):
            raise errors.ResourceNotFound(f"Indexed task not found: {namespace}")
        return document

    @declare(
        "findTask",
        "GET",
        "/task/<indexPath>",
        title="Find Indexed Task",
        scopes="index:find-task:<indexPath>",
        params=INDEX_PATH,
    )
    async def find_task(self, call: Call) -> dict[str, Any]:
        return task_out(await self._live(call.params["indexPath"], utcnow()))

    @declare(
        "insertTask",
        "PUT",
        "/task/<namespace>",
        title="Insert Task into Index",
        scopes="index:insert-task:<namespace>",
        input=InsertTaskRequest,
        params=NAMESPACE,
    )
    async def insert_task(self, call: Call) -> dict[str, Any]:
        body: InsertTaskRequest = call.body
        entry = entries.Entry(
            call.params["namespace"], body.taskId, body.rank, body.data, body.expires
        )
        return task_out(await self.store.insert(entry, utcnow()))

    async def _list(self, call: Call, collection: str, key: str) -> dict[str, Any]:
        parent = call.params.get("namespace", "")
        limit = paging.limit(call.query)
        after = paging.decode_str(call.query)
        rows = await self.store.children(collection, parent, after, limit)
        now = utcnow()
        out = namespace_out if collection == NAMESPACES else task_out
        answer: dict[str, Any] = {
            key: [out(row) for row in rows if entries.is_live(row["expires"], now)]
        }
        if len(rows) == limit:
            answer["continuationToken"] = paging.encode(rows[-1]["_id"])
        return answer

    @declare(
        "listNamespaces",
        "GET",
        "/namespaces/<namespace>",
        title="List Namespaces",
        scopes="index:list-namespaces:<namespace>",
        params=PARENT,
        optional=("namespace",),
        query=paging.PAGE_QUERY,
    )
    async def list_namespaces(self, call: Call) -> dict[str, Any]:
        return await self._list(call, NAMESPACES, "namespaces")

    @declare(
        "listTasks",
        "GET",
        "/tasks/<namespace>",
        title="List Tasks",
        scopes="index:list-tasks:<namespace>",
        params=PARENT,
        optional=("namespace",),
        query=paging.PAGE_QUERY,
    )
    async def list_tasks(self, call: Call) -> dict[str, Any]:
        return await self._list(call, TASKS, "tasks")

    @declare(
        "findArtifactFromTask",
        "GET",
        "/task/<indexPath>/artifacts/<name>",
        title="Get Artifact From Indexed Task",
        # upstream: no index scope, only what getArtifact itself would ask
        scopes="queue:get-artifact:<name>",
        params=INDEX_PATH,
    )
    async def find_artifact_from_task(self, call: Call) -> web.Response:
        name = call.params["name"]  # aiohttp has decoded it (%2F included)
        document = await self._live(call.params["indexPath"], utcnow())
        # Public names go to the plain URL (the queue serves them to anyone); others to a
        # URL signed with the index's own credentials, as upstream: the caller already
        # proved it holds queue:get-artifact:<name>.
        url = self.artifact_url(document["taskId"], name, not name.startswith("public/"))
        return json_response({"url": url}, 303, {"Location": url})
