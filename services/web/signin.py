"""Sign in with a clientId and accessToken (upstream's "sign in with credentials").

The credentials are checked with auth.currentScopes, then kept only in the encrypted
session cookie; they never appear in a URL, a page or a log line.
"""

from __future__ import annotations

import logging

from aiohttp import web

from services.web.context import APIS, render, see_other, session_of
from services.web.session import Session, new_session
from services.web.upstream import UpstreamError, call

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def safe_next(target: str | None) -> str:
    """Only a path on this site (no `//host` or scheme): no open redirect after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@routes.get("/login")
async def login_form(request: web.Request) -> web.StreamResponse:
    return render(request, "login.html", next=safe_next(request.query.get("next")), error=None)


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    client_id = str(form.get("clientId", "")).strip()
    access_token = str(form.get("accessToken", "")).strip()
    target = safe_next(str(form.get("next", "/")))
    candidate = Session(new_session().csrf, client_id, access_token)
    if not client_id or not access_token:
        return render(
            request, "login.html", status=400, next=target, error="Both fields are needed."
        )
    try:
        await call(request.app[APIS].auth(candidate).currentScopes())
    except UpstreamError as exc:
        log.info("sign-in refused", extra={"clientId": client_id, "code": exc.code})
        return render(request, "login.html", status=401, next=target, error=exc.message)
    log.info("signed in", extra={"clientId": client_id})
    request["set_session"] = candidate  # a fresh CSRF token with the new identity
    return see_other(target)


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    log.info("signed out", extra={"clientId": session_of(request).client_id})
    request["set_session"] = new_session()
    return see_other("/")
