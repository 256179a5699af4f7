"""Task-group pages (`/tasks/groups/<taskGroupId>[/profiler]`), their live event stream
and the cancel-group action."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from services.web import graph, profiler, rows
from services.web.context import APIS, LIVE, render, see_other, session_of
from services.web.live import CLOSED
from services.web.upstream import UpstreamError, call, list_task_group
from shared.timeutil import utcnow

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

# Beyond this many tasks the graph would be unreadable and slow; the list still works.
GRAPH_LIMIT = 600
KEEPALIVE_S = 15.0


@routes.get("/tasks/groups/{taskGroupId}")
async def group_page(request: web.Request) -> web.StreamResponse:
    group_id = request.match_info["taskGroupId"]
    queue = request.app[APIS].queue(session_of(request))
    live = request.app[LIVE]
    token = await live.park(group_id)  # before listing: no event falls in between
    try:
        items = await list_task_group(queue, group_id)
    except BaseException:
        await live.release(token)
        raise
    task_rows = sorted((rows.task_row(i) for i in items), key=lambda r: (r.name, r.task_id))
    layout = None
    if len(task_rows) <= GRAPH_LIMIT:
        layout = graph.layout(
            {r.task_id: r.dependencies for r in task_rows}, [r.task_id for r in task_rows]
        )
    by_id = {r.task_id: r for r in task_rows}
    return render(
        request,
        "group.html",
        group_id=group_id,
        live_token=token,
        rows=task_rows,
        by_id=by_id,
        counts=rows.counts(task_rows),
        states=rows.STATES,
        layout=layout,
        graph_limit=GRAPH_LIMIT,
        node=graph,
    )


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@routes.get("/tasks/groups/{taskGroupId}/events")
async def group_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: each change as the queue's events arrive. The page's own
    listing began after its inbox started watching, so the stream adopts that inbox (no
    gap, no second listing); a reconnecting page gets a fresh snapshot instead (watching
    starts before it is read, so again nothing is missed)."""
    group_id = request.match_info["taskGroupId"]
    queue = request.app[APIS].queue(session_of(request))
    await call(queue.getTaskGroup(group_id))  # the visitor may list this group
    live = request.app[LIVE]
    token = request.query.get("token", "")
    inbox = await live.adopt(token, group_id) if token else None
    adopted = inbox is not None
    if inbox is None:
        inbox = await live.watch(group_id)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    try:
        await response.prepare(request)
        if adopted:
            await response.write(_event("ready", None))
        else:
            await response.write(_event("snapshot", await _snapshot(queue, group_id)))
        while True:
            try:
                update = await asyncio.wait_for(inbox.get(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if update is CLOSED:
                break
            if update.get("resync"):
                await response.write(_event("snapshot", await _snapshot(queue, group_id)))
            else:
                await response.write(_event("task", update))
    except UpstreamError as exc:  # the stream is open: say so in it, not as a page
        log.warning("group stream ended", extra={"taskGroupId": group_id, "code": exc.code})
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        await live.unwatch(group_id, inbox)
    return response


async def _snapshot(queue: Any, group_id: str) -> list[dict[str, Any]]:
    return [
        {
            "taskId": r.task_id,
            "name": r.name,
            "state": r.state,
            "runs": r.runs,
            "taskQueueId": r.task_queue_id,
            "duration": r.duration_s,
        }
        for r in map(rows.task_row, await list_task_group(queue, group_id))
    ]


@routes.get("/tasks/groups/{taskGroupId}/profiler")
async def profiler_page(request: web.Request) -> web.StreamResponse:
    group_id = request.match_info["taskGroupId"]
    queue = request.app[APIS].queue(session_of(request))
    items = await list_task_group(queue, group_id)
    timings = sorted(
        (rows.timing(i) for i in items),
        key=lambda t: (t.scheduled or t.created, t.name, t.task_id),
    )
    path = profiler.critical_path({t.task_id: t for t in timings})
    start, span, bars = profiler.timeline(timings, utcnow())
    return render(
        request,
        "profiler.html",
        group_id=group_id,
        timings=timings,
        bars=bars,
        span=span,
        start=start,
        critical=path,
        on_path=set(path.task_ids),
        names={t.task_id: t.name for t in timings},
        states={i["status"]["taskId"]: i["status"]["state"] for i in items},
    )


@routes.post("/tasks/groups/{taskGroupId}/cancel")
async def cancel_group(request: web.Request) -> web.StreamResponse:
    group_id = request.match_info["taskGroupId"]
    session = session_of(request)
    queue = request.app[APIS].queue(session)
    # The queue cancels only sealed groups (as upstream): seal first, so no task can join
    # after the cancellation. Both calls are idempotent.
    await call(queue.sealTaskGroup(group_id))
    await call(queue.cancelTaskGroup(group_id))
    log.info("task group cancelled", extra={"taskGroupId": group_id, "clientId": session.client_id})
    return see_other(f"/tasks/groups/{group_id}")
