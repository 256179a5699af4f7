"""Artifact endpoints (reference §6): create, finish, get (303 + JSON, following links),
the content descriptors, listings and info.

Artifact records live in the `artifacts` collection (`_id` = taskId/runId/name) with a
per-run name index (`artifact_runs`), so every read is a lookup by `_id`. The bytes of
`s3` artifacts live in the configured byte store (shared.artifact_bytes): MongoDB behind
URLs the queue signs and serves itself, or S3 through presigned URLs. Those of `object`
artifacts live in the object service (see object_artifacts).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pydantic
from aiohttp import web
from pymongo.errors import DuplicateKeyError

from services.queue import object_artifacts
from services.queue.context import QueueContext
from services.queue.object_artifacts import ObjectServiceClient
from services.queue.tasks_api import RUN_PARAMS
from shared import artifacts, errors, events, paging
from shared.api import Call, declare, json_response
from shared.artifact_bytes.base import ByteStore
from shared.artifacts import (
    Artifact,
    CreateArtifactRequest,
    FinishArtifactRequest,
    ObjectRequest,
)
from shared.ids import SLUGID_PATTERN
from shared.models import Run
from shared.models.errors import describe_validation_error
from shared.timeutil import format_ts, utcnow
from shared.transitions import TaskRecord

log = logging.getLogger(__name__)

NAME = {"name": artifacts.NAME_PATTERN}
TASK = {"taskId": SLUGID_PATTERN}
GET_SCOPE = "queue:get-artifact:<name>"
MAX_LINK_HOPS = 50


class _RawBody(pydantic.BaseModel):
    """createArtifact's body is validated by the handler (a oneOf by storageType)."""

    model_config = pydantic.ConfigDict(extra="allow")


CREATE_SCOPE = "queue:create-artifact:<taskId>/<runId>"
RUN_LIST_SCOPE = "queue:list-artifacts:<taskId>:<runId>"
LATEST_LIST_SCOPE = "queue:list-artifacts:<taskId>"
RUN_NAME = {**RUN_PARAMS, **NAME}
TASK_NAME = {**TASK, **NAME}


class ArtifactsApi:
    def __init__(
        self,
        context: QueueContext,
        byte_store: ByteStore,
        objects: ObjectServiceClient,
        *,
        max_bytes: int | None = None,
    ) -> None:
        self.max_bytes = max_bytes  # per artifact
        self.ctx = context
        self.db = context.db
        self.store = context.store
        self.bytes = byte_store
        self.objects = objects

    # --- creating -------------------------------------------------------------------------

    @declare(
        "createArtifact",
        "POST",
        "/task/<taskId>/runs/<runId>/artifacts/<name>",
        title="Create Artifact",
        scopes=CREATE_SCOPE,
        input=_RawBody,
        params=RUN_NAME,
        scopes_from_params=False,  # upstream checks the task and run first
    )
    async def create_artifact(self, call: Call) -> dict[str, Any]:
        try:
            request = CreateArtifactRequest.wrap(call.raw_payload).request
        except pydantic.ValidationError as exc:
            raise errors.InputValidationError(
                "Schema Validation Failed!\nRejecting Schema: post-artifact-request\n"
                f"Errors:\n{describe_validation_error(exc)}"
            ) from exc
        task_id, run_id, name = (
            call.params["taskId"],
            int(call.params["runId"]),
            call.params["name"],
        )
        now = utcnow()
        record = await self.store.load(task_id)
        run = artifacts.check_create(request.expires, _run(record, run_id), now)
        assert record is not None  # a run was found
        call.authorize()
        artifacts.check_run_open(request.expires, record.definition.expires, run, now)
        artifacts.check_length(request, self.max_bytes)
        if isinstance(request, ObjectRequest):
            return await self._create_object(record, run, name, request, now)
        artifact = artifacts.from_request(task_id, run_id, name, request)
        await self._store_artifact(artifact)
        if artifact.storage_type != "s3":
            # Published on every (identical) create, so a client retrying after a crash
            # between the write and the publish still gets its event out.
            await self.store.publish(
                [
                    events.artifact_created(
                        record.status, run, record.definition, artifact.event_body()
                    )
                ]
            )
            return {"storageType": artifact.storage_type}
        expires = artifacts.upload_expiry(now, artifact.expires)
        return {
            "storageType": "s3",
            "contentType": artifact.content_type,
            "expires": format_ts(expires),
            "putUrl": self.bytes.upload_url(
                artifact.key,
                content_type=artifact.content_type,
                expires=expires,
                length=artifact.details.get("contentLength"),
            ),
        }

    async def _create_object(
        self, record: TaskRecord, run: Run, name: str, request: ObjectRequest, now: datetime
    ) -> dict[str, Any]:
        """Lock the object in (createUpload, no method), record the artifact not present,
        and hand the uploader credentials for that one object (reference §6)."""
        task_id, run_id = record.task_id, run.runId
        object_name = artifacts.byte_key(task_id, run_id, name)
        upload_id = object_artifacts.upload_id_for(object_name)
        artifact = artifacts.from_request(task_id, run_id, name, request, upload_id=upload_id)
        existing = await self._find(task_id, run_id, name)
        if existing is not None:  # refused before the object service is asked anything
            artifacts.check_replace(existing, artifact)
        project_id = record.definition.projectId
        if existing is None or not existing.present:
            try:
                await self.objects.create_upload(
                    object_name,
                    project_id=project_id,
                    upload_id=upload_id,
                    expires=artifact.expires,
                )
            except errors.ResourceNotFound as exc:  # no object service behind that URL
                raise errors.ApiError(f"The object service is not reachable: {exc}") from exc
            await self._store_artifact(artifact)
        assert run.workerGroup is not None and run.workerId is not None  # checked: claimed
        return {
            "storageType": "object",
            "name": object_name,
            "projectId": project_id,
            "uploadId": upload_id,
            "expires": format_ts(artifact.expires),
            "credentials": object_artifacts.upload_credentials(
                self.ctx.issuer,
                task_id=task_id,
                run_id=run_id,
                worker_group=run.workerGroup,
                worker_id=run.workerId,
                project_id=project_id,
                object_name=object_name,
                expires=artifact.expires,
                now=now,
            ),
        }

    async def _store_artifact(self, artifact: Artifact) -> None:
        document = artifacts.to_document(artifact)
        run_key = f"{artifact.task_id}/{artifact.run_id}"
        # The name goes into the run's index first: a crash then leaves a name without an
        # artifact (skipped when listing), never an artifact that cannot be listed.
        await self.db[artifacts.RUN_INDEX].update_one(
            {"_id": run_key}, {"$addToSet": {"names": artifact.name}}, upsert=True
        )
        try:
            await self.db[artifacts.COLLECTION].insert_one(document)
            return
        except DuplicateKeyError:
            pass
        existing_document = await self.db[artifacts.COLLECTION].find_one({"_id": document["_id"]})
        if existing_document is None:  # expired and deleted in between: the caller retries
            raise errors.RequestConflict(f"Artifact {artifact.name} changed; try again")
        existing = artifacts.from_document(existing_document)
        artifacts.check_replace(existing, artifact)
        if existing != artifact:
            await self.db[artifacts.COLLECTION].replace_one({"_id": document["_id"]}, document)

    @declare(
        "finishArtifact",
        "PUT",
        "/task/<taskId>/runs/<runId>/artifacts/<name>",
        title="Finish Artifact",
        scopes=CREATE_SCOPE,
        input=FinishArtifactRequest,
        params=RUN_NAME,
        scopes_from_params=False,
    )
    async def finish_artifact(self, call: Call) -> None:
        task_id, run_id, name = (
            call.params["taskId"],
            int(call.params["runId"]),
            call.params["name"],
        )
        record = await self.store.load(task_id)
        if record is None or _run(record, run_id) is None:
            raise errors.InputError(f"Task {task_id} has no run {run_id}")
        call.authorize()
        artifact = await self._find(task_id, run_id, name)
        if artifact is None:
            raise errors.ResourceNotFound(f"Artifact {name} not found")
        if artifact.storage_type != "object":
            raise errors.InputError(
                f"finishArtifact applies to object artifacts only; {name} is "
                f"{artifact.storage_type}"
            )
        request: FinishArtifactRequest = call.body
        if request.uploadId != artifact.details.get("uploadId"):
            raise errors.InputError(f"uploadId {request.uploadId!r} is not that of artifact {name}")
        if not await self.objects.is_finished(artifacts.object_name(artifact)):
            raise errors.InputError(
                f"The object of artifact {name} is not uploaded yet: call the object service's "
                "finishUpload first"
            )
        if not artifact.present:
            await self.db[artifacts.COLLECTION].update_one(
                {"_id": artifacts.artifact_id(task_id, run_id, name)}, {"$set": {"present": True}}
            )
        # Published on every call, so a retry after a crash before the publish gets it out.
        run = _run(record, run_id)
        assert run is not None
        await self.store.publish(
            [events.artifact_created(record.status, run, record.definition, artifact.event_body())]
        )

    # --- reading --------------------------------------------------------------------------

    async def _find(self, task_id: str, run_id: int, name: str) -> Artifact | None:
        document = await self.db[artifacts.COLLECTION].find_one(
            {"_id": artifacts.artifact_id(task_id, run_id, name)}
        )
        return artifacts.from_document(document) if document is not None else None

    async def _task(self, task_id: str) -> TaskRecord:
        record = await self.store.load(task_id)
        if record is None:
            raise errors.ResourceNotFound(f"Task {task_id} not found")
        return record

    async def _run_id(self, call: Call, *, latest: bool) -> tuple[str, int]:
        task_id = call.params["taskId"]
        record = await self._task(task_id)
        if latest:
            if not record.runs:
                raise errors.ResourceNotFound(f"Task {task_id} has no runs")
            return task_id, len(record.runs) - 1
        run_id = int(call.params["runId"])
        if _run(record, run_id) is None:
            raise errors.ResourceNotFound(f"Task {task_id} has no run {run_id}")
        return task_id, run_id

    async def _resolve(self, call: Call, *, latest: bool) -> Artifact:
        """The artifact to download: links followed (each hop scope-checked), a cycle is
        400, a missing artifact 404 and an expired one 410."""
        task_id, run_id = await self._run_id(call, latest=latest)
        name, seen = call.params["name"], [call.params["name"]]
        now = utcnow()
        for _hop in range(MAX_LINK_HOPS):
            artifact = await self._find(task_id, run_id, name)
            if artifact is None or not artifact.present:
                raise errors.ResourceNotFound(f"Artifact {name} not found")
            if artifacts.is_expired(artifact, now):
                raise errors.ResourceExpired(f"Artifact {name} has expired")
            target = artifacts.next_hop(artifact, seen)
            if target is None:
                return artifact
            call.authorize(GET_SCOPE, name=target)
            name = target
            seen.append(target)
        raise errors.InputError(f"Artifact links deeper than {MAX_LINK_HOPS} hops")

    async def _url(self, artifact: Artifact) -> str:
        if artifact.storage_type == "reference":
            return artifacts.reference_url(artifact)
        if artifact.storage_type == "object":
            return await self.objects.simple_url(artifacts.object_name(artifact))
        return self.bytes.download_url(artifact.key, expires=utcnow() + artifacts.DOWNLOAD_URL_TTL)

    async def _download(self, call: Call, *, latest: bool) -> web.Response:
        artifact = await self._resolve(call, latest=latest)
        headers = {"x-taskcluster-artifact-storage-type": artifact.storage_type}
        if artifact.storage_type == "error":
            return json_response(artifacts.error_body(artifact), 424, headers)
        url = await self._url(artifact)
        body = {"storageType": artifact.storage_type, "url": url}
        return json_response(body, 303, {**headers, "Location": url})

    @declare(
        "getArtifact",
        "GET",
        "/task/<taskId>/runs/<runId>/artifacts/<name>",
        title="Get Artifact Data from Run",
        scopes=GET_SCOPE,
        params=RUN_NAME,
    )
    async def get_artifact(self, call: Call) -> web.Response:
        return await self._download(call, latest=False)

    @declare(
        "getLatestArtifact",
        "GET",
        "/task/<taskId>/artifacts/<name>",
        title="Get Artifact Data from Latest Run",
        scopes=GET_SCOPE,
        params=TASK_NAME,
    )
    async def get_latest_artifact(self, call: Call) -> web.Response:
        return await self._download(call, latest=True)

    async def _content(self, call: Call, *, latest: bool) -> dict[str, Any]:
        artifact = await self._resolve(call, latest=latest)
        if artifact.storage_type == "error":
            return {"storageType": "error", **artifacts.error_body(artifact)}
        if artifact.storage_type == "object":
            object_name = artifacts.object_name(artifact)
            credentials = object_artifacts.download_credentials(
                self.ctx.issuer,
                task_id=artifact.task_id,
                run_id=artifact.run_id,
                name=artifact.name,
                object_name=object_name,
                now=utcnow(),
            )
            return {"storageType": "object", "name": object_name, "credentials": credentials}
        return {"storageType": artifact.storage_type, "url": await self._url(artifact)}

    @declare(
        "artifact",
        "GET",
        "/task/<taskId>/runs/<runId>/artifact-content/<name>",
        title="Get Artifact Content From Run",
        scopes=GET_SCOPE,
        params=RUN_NAME,
    )
    async def artifact_content(self, call: Call) -> dict[str, Any]:
        return await self._content(call, latest=False)

    @declare(
        "latestArtifact",
        "GET",
        "/task/<taskId>/artifact-content/<name>",
        title="Get Artifact Content From Latest Run",
        scopes=GET_SCOPE,
        params=TASK_NAME,
    )
    async def latest_artifact_content(self, call: Call) -> dict[str, Any]:
        return await self._content(call, latest=True)

    # --- listing --------------------------------------------------------------------------

    async def _list(self, call: Call, *, latest: bool) -> dict[str, Any]:
        task_id, run_id = await self._run_id(call, latest=latest)
        limit = paging.limit(call.query)
        after = paging.decode_str(call.query)
        index = await self.db[artifacts.RUN_INDEX].find_one({"_id": f"{task_id}/{run_id}"})
        names = sorted(set(index.get("names", []))) if index else []
        if after is not None:
            names = [n for n in names if n > after]
        found: list[Artifact] = []  # one more than a page tells whether another follows
        for start in range(0, len(names), limit + 1):
            chunk = names[start : start + limit + 1]
            ids = [artifacts.artifact_id(task_id, run_id, n) for n in chunk]
            cursor = self.db[artifacts.COLLECTION].find({"_id": {"$in": ids}})
            by_name = {a.name: a for a in [artifacts.from_document(d) async for d in cursor]}
            # (a crash can leave a name; an unfinished object artifact is not listed yet)
            found += [by_name[n] for n in chunk if n in by_name and by_name[n].present]
            if len(found) > limit:
                break
        page = found[:limit]
        body: dict[str, Any] = {"artifacts": [a.info() for a in page]}
        if len(found) > limit:
            body["continuationToken"] = paging.encode(page[-1].name)
        return body

    @declare(
        "listArtifacts",
        "GET",
        "/task/<taskId>/runs/<runId>/artifacts",
        title="Get Artifacts from Run",
        scopes=RUN_LIST_SCOPE,
        params=RUN_PARAMS,
        query=paging.PAGE_QUERY,
    )
    async def list_artifacts(self, call: Call) -> dict[str, Any]:
        return await self._list(call, latest=False)

    @declare(
        "listLatestArtifacts",
        "GET",
        "/task/<taskId>/artifacts",
        title="Get Artifacts from Latest Run",
        scopes=LATEST_LIST_SCOPE,
        params=TASK,
        query=paging.PAGE_QUERY,
    )
    async def list_latest_artifacts(self, call: Call) -> dict[str, Any]:
        return await self._list(call, latest=True)

    async def _info(self, call: Call, *, latest: bool) -> dict[str, Any]:
        task_id, run_id = await self._run_id(call, latest=latest)
        artifact = await self._find(task_id, run_id, call.params["name"])
        if artifact is None or not artifact.present:
            raise errors.ResourceNotFound(f"Artifact {call.params['name']} not found")
        return artifact.info()

    @declare(
        "artifactInfo",
        "GET",
        "/task/<taskId>/runs/<runId>/artifact-info/<name>",
        title="Get Artifact Information From Run",
        scopes=RUN_LIST_SCOPE,
        params=RUN_NAME,
    )
    async def artifact_info(self, call: Call) -> dict[str, Any]:
        return await self._info(call, latest=False)

    @declare(
        "latestArtifactInfo",
        "GET",
        "/task/<taskId>/artifact-info/<name>",
        title="Get Artifact Information From Latest Run",
        scopes=LATEST_LIST_SCOPE,
        params=TASK_NAME,
    )
    async def latest_artifact_info(self, call: Call) -> dict[str, Any]:
        return await self._info(call, latest=True)


def _run(record: TaskRecord | None, run_id: int) -> Run | None:
    if record is None or not 0 <= run_id < len(record.runs):
        return None
    return record.runs[run_id]
