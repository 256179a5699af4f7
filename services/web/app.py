"""The web console's aiohttp application: session and CSRF middleware, templates, the
HTTP session to the APIs and the live-event subscription in `cleanup_ctx`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import jinja2
from aiohttp import web

from services.web import groups, pages, signin, tasks, workers
from services.web.context import APIS, CODEC, LIVE, TEMPLATES, render
from services.web.live import GroupEvents
from services.web.session import COOKIE, MAX_AGE_S, SessionCodec, csrf_ok, new_session
from services.web.upstream import Apis, UpstreamError
from shared.broker import Broker
from shared.config import Settings
from shared.routing import TASK_EXCHANGES

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent

# Our own scripts and styles only: an injected <script> could not run even if escaping
# failed somewhere. Inline styles are allowed for the timeline's computed positions.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    codec: SessionCodec = request.app[CODEC]
    session = codec.decode(request.cookies.get(COOKIE))
    fresh = session is None
    request["session"] = session or new_session()
    if request.method == "POST":
        form = await request.post()
        submitted = form.get("csrf")
        if fresh or not csrf_ok(session, submitted if isinstance(submitted, str) else None):
            log.warning("POST refused: missing or wrong CSRF token", extra={"path": request.path})
            return render(
                request,
                "error.html",
                status=403,
                code="ForbiddenRequest",
                message="This form is stale or did not come from this console; reload and retry.",
            )
    try:
        response = await handler(request)
    except UpstreamError as exc:
        response = render(
            request, "error.html", status=exc.status, code=exc.code, message=exc.message
        )
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
        new_cookie = request.get("set_session")
        if fresh or new_cookie is not None:
            response.set_cookie(
                COOKIE,
                codec.encode(new_cookie or request["session"]),
                max_age=MAX_AGE_S,
                httponly=True,
                samesite="Strict",
                path="/",
            )
    return response


def build_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[session_middleware], client_max_size=2 * 1024 * 1024)
    app[CODEC] = SessionCodec(settings.secret_key)
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every user-supplied string (names, logs) is text, never markup
    )

    async def http_context(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        ) as http:
            app[APIS] = Apis(settings.root_url, http)
            yield

    async def live_context(app: web.Application) -> AsyncIterator[None]:
        broker = await Broker.connect(
            settings.amqp_url,
            prefix=settings.exchange_prefix,
            events=(*TASK_EXCHANGES, "task-group-resolved"),
        )
        live = GroupEvents(broker)
        await live.start()
        app[LIVE] = live
        yield
        with contextlib.suppress(Exception):
            await broker.close()

    async def end_streams(app: web.Application) -> None:
        if LIVE in app:
            app[LIVE].close()

    app.cleanup_ctx.append(http_context)
    app.cleanup_ctx.append(live_context)
    app.on_shutdown.append(end_streams)
    app.router.add_static("/static/", HERE / "static", name="static")
    app.router.add_routes(pages.routes)
    app.router.add_routes(signin.routes)
    app.router.add_routes(workers.routes)
    app.router.add_routes(groups.routes)
    app.router.add_routes(tasks.routes)  # last: its artifact route is a catch-all
    return app
