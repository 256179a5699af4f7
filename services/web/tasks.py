"""Task pages (`/tasks/<taskId>`), logs at upstream's URLs, artifact downloads, and the
cancel / rerun / create actions (each through the queue with the visitor's credentials)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from typing import Any

import aiohttp
import slugid
import yaml
from aiohttp import web

from services.web import ansi
from services.web.context import APIS, render, see_other, session_of
from services.web.upstream import UpstreamError, call
from shared.timeutil import format_ts, from_now

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

LIVE_LOG = "public/logs/live.log"
BACKING_LOG = "public/logs/live_backing.log"
MAX_LOG_BYTES = 8 * 1024 * 1024
OPEN_STATES = ("pending", "running")


def _run_id(request: web.Request) -> int:
    text = request.match_info["runId"]
    if not text.isdigit() or int(text) > 49:
        raise UpstreamError(400, "InvalidRequestArguments", f"runId {text!r} is not a run number")
    return int(text)


@routes.get("/tasks/create")
async def create_form(request: web.Request) -> web.StreamResponse:
    return render(request, "create.html", text=_example(), errors=None, yaml_error=None)


def _example() -> str:
    return yaml.safe_dump(
        {
            "taskQueueId": "flotilla/local",
            "created": format_ts(from_now()),
            "deadline": format_ts(from_now(3600)),
            "payload": {"image": "busybox", "command": ["echo", "hello"], "maxRunTime": 600},
            "metadata": {
                "name": "hello",
                "description": "created in the web console",
                "owner": "someone@example.com",
                "source": "https://example.com/flotilla",
            },
        },
        sort_keys=False,
    )


@routes.post("/tasks/create")
async def create_task(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    text = str(form.get("definition", ""))
    try:
        definition = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return render(
            request, "create.html", status=400, text=text, errors=None, yaml_error=str(exc)
        )
    if not isinstance(definition, dict):
        return render(
            request,
            "create.html",
            status=400,
            text=text,
            errors=None,
            yaml_error="The definition must be a mapping (key: value lines).",
        )
    task_id = slugid.nice()
    queue = request.app[APIS].queue(session_of(request))
    try:
        await call(queue.createTask(task_id, _jsonable(definition)))
    except UpstreamError as exc:
        return render(
            request,
            "create.html",
            status=exc.status,
            text=text,
            errors={"code": exc.code, "message": exc.message},
            yaml_error=None,
        )
    log.info("task created", extra={"taskId": task_id, "clientId": session_of(request).client_id})
    return see_other(f"/tasks/{task_id}")


def _jsonable(value: Any) -> Any:
    """YAML reads an unquoted `2026-01-01T00:00:00Z` as a datetime: send it back in the
    protocol's form, not Python's `str()`."""
    if isinstance(value, datetime):
        return format_ts(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


@routes.get("/tasks/{taskId}")
async def task_page(request: web.Request) -> web.StreamResponse:
    task_id = request.match_info["taskId"]
    session = session_of(request)
    queue = request.app[APIS].queue(session)
    task = await call(queue.task(task_id))
    status = (await call(queue.status(task_id)))["status"]
    dependents = await _dependents(queue, task_id)
    runs = status.get("runs", [])
    artifacts: list[dict[str, Any]] = []
    artifacts_error = None
    log_html = None
    if runs:
        run_id = runs[-1]["runId"]
        try:
            artifacts = (await call(queue.listArtifacts(task_id, str(run_id)))).get("artifacts", [])
        except UpstreamError as exc:
            artifacts_error = exc.message
        if runs[-1]["state"] not in OPEN_STATES:
            log_html = await _log_html(request, task_id, run_id, _backing_name(artifacts))
    return render(
        request,
        "task.html",
        task_id=task_id,
        task=task,
        task_status=status,
        runs=runs,
        dependents=dependents,
        artifacts=artifacts,
        artifacts_error=artifacts_error,
        definition=yaml.safe_dump(task, sort_keys=False, allow_unicode=True),
        log_html=log_html,
        live_log=LIVE_LOG,
        backing_log=BACKING_LOG,
        open_states=OPEN_STATES,
    )


def _backing_name(artifacts: list[dict[str, Any]]) -> str:
    names = {a.get("name") for a in artifacts}
    return BACKING_LOG if BACKING_LOG in names or LIVE_LOG not in names else LIVE_LOG


async def _dependents(queue: Any, task_id: str) -> list[dict[str, Any]] | str:
    try:
        page = await call(queue.listDependentTasks(task_id, query={"limit": 1000}))
    except UpstreamError as exc:
        return exc.message
    return list(page.get("tasks", []))


@routes.post("/tasks/{taskId}/cancel")
async def cancel(request: web.Request) -> web.StreamResponse:
    return await _act(request, "cancelTask")


@routes.post("/tasks/{taskId}/rerun")
async def rerun(request: web.Request) -> web.StreamResponse:
    return await _act(request, "rerunTask")


async def _act(request: web.Request, method: str) -> web.StreamResponse:
    task_id = request.match_info["taskId"]
    session = session_of(request)
    await call(getattr(request.app[APIS].queue(session), method)(task_id))
    log.info(
        "task action", extra={"taskId": task_id, "action": method, "clientId": session.client_id}
    )
    return see_other(f"/tasks/{task_id}")


# --- logs -------------------------------------------------------------------------------


@routes.get("/tasks/{taskId}/runs/{runId}/logs/live/{name:.+}")
async def live_log_page(request: web.Request) -> web.StreamResponse:
    task_id, run_id = request.match_info["taskId"], _run_id(request)
    return render(
        request,
        "log.html",
        task_id=task_id,
        run_id=run_id,
        name=request.match_info["name"],
        live=True,
        log_html=None,
        backing_log=BACKING_LOG,
    )


@routes.get("/tasks/{taskId}/runs/{runId}/logs/{name:.+}")
async def log_page(request: web.Request) -> web.StreamResponse:
    task_id, run_id, name = (
        request.match_info["taskId"],
        _run_id(request),
        request.match_info["name"],
    )
    return render(
        request,
        "log.html",
        task_id=task_id,
        run_id=run_id,
        name=name,
        live=False,
        log_html=await _log_html(request, task_id, run_id, name),
        backing_log=BACKING_LOG,
    )


async def _open_artifact(
    request: web.Request, task_id: str, run_id: int, name: str
) -> aiohttp.ClientResponse:
    """GET the artifact as the visitor, following the queue's redirect to the bytes."""
    apis = request.app[APIS]
    url = apis.artifact_url(session_of(request), task_id, run_id, name)
    try:
        response = await apis.http.get(url, allow_redirects=True)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(502, "Unavailable", f"the log could not be fetched: {exc}") from None
    if response.status != 200:
        body = await response.text(errors="replace")
        response.release()
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body[:500]
        raise UpstreamError(response.status, "LogUnavailable", str(message))
    return response


async def _log_html(request: web.Request, task_id: str, run_id: int, name: str) -> str | None:
    """The whole log as HTML lines, or None if it cannot be read (shown as a note)."""
    try:
        response = await _open_artifact(request, task_id, run_id, name)
    except UpstreamError:
        return None
    async with response:
        data = await response.content.read(MAX_LOG_BYTES + 1)
    truncated = len(data) > MAX_LOG_BYTES
    html = ansi.render_log(data[:MAX_LOG_BYTES])
    if truncated:
        html += '<span class="line note">… log truncated at 8 MiB: download it for the rest</span>'
    return html


@routes.get("/console/logs/{taskId}/{runId}/html")
async def log_fragment(request: web.Request) -> web.StreamResponse:
    task_id, run_id = request.match_info["taskId"], _run_id(request)
    name = request.query.get("name", BACKING_LOG)
    html = await _log_html(request, task_id, run_id, name)
    if html is None:
        return web.Response(status=404, text="log not available yet")
    return web.Response(text=html, content_type="text/html")


@routes.get("/console/logs/{taskId}/{runId}/stream")
async def log_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events of rendered log lines while the worker's live log grows; `end`
    when it closes (the run finished: the page then shows the backing log)."""
    task_id, run_id = request.match_info["taskId"], _run_id(request)
    name = request.query.get("name", LIVE_LOG)
    stream = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await stream.prepare(request)
    renderer, splitter = ansi.AnsiLines(), ansi.LineSplitter()

    async def send(event: str, data: Any) -> None:
        await stream.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

    try:
        upstream = await _open_artifact(request, task_id, run_id, name)
    except UpstreamError as exc:
        await send("failed", exc.message)
        return stream
    try:
        async with upstream:
            async for chunk in upstream.content.iter_any():
                lines = splitter.feed(chunk)
                if lines:
                    await send("lines", [renderer.line(line) for line in lines])
        rest = splitter.flush()
        if rest:
            await send("lines", [renderer.line(line) for line in rest])
        await send("end", None)
    except (aiohttp.ClientError, TimeoutError):
        await send("end", None)  # the worker went away: the backing log tells the rest
    except ConnectionResetError:
        pass
    return stream


@routes.get("/tasks/{taskId}/runs/{runId}/{name:.+}")
async def artifact(request: web.Request) -> web.StreamResponse:
    """Upstream's artifact URL: a redirect to a freshly signed getArtifact URL."""
    task_id, run_id = request.match_info["taskId"], _run_id(request)
    url = request.app[APIS].artifact_url(
        session_of(request), task_id, run_id, request.match_info["name"]
    )
    return web.Response(status=303, headers={"Location": url, "Cache-Control": "no-store"})
