"""Typed app keys and the one page renderer every view uses."""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web

from services.web.live import GroupEvents
from services.web.session import Session, SessionCodec
from services.web.upstream import Apis

APIS = web.AppKey("apis", Apis)
CODEC = web.AppKey("codec", SessionCodec)
LIVE = web.AppKey("live", GroupEvents)
TEMPLATES = web.AppKey("templates", jinja2.Environment)


def session_of(request: web.Request) -> Session:
    session: Session = request["session"]
    return session


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    session = session_of(request)
    page = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            signed_in=session.signed_in,
            client_id=session.client_id,
            csrf=session.csrf,
            path=request.path,
            **context,
        )
    )
    return web.Response(text=page, status=status, content_type="text/html")


def see_other(location: str) -> web.Response:
    """A 303 returned (not raised), so the middleware still sets the session cookie."""
    return web.Response(status=303, headers={"Location": location})
