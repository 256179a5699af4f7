"""The home page: find a task or group by id, links to the other views."""

from __future__ import annotations

from aiohttp import web

from services.web.context import render, see_other

routes = web.RouteTableDef()


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    query = request.query.get("id", "").strip()
    kind = request.query.get("kind", "task")
    if query and query.replace("-", "").replace("_", "").isalnum():
        target = f"/tasks/groups/{query}" if kind == "group" else f"/tasks/{query}"
        return see_other(target)
    return render(request, "home.html")
