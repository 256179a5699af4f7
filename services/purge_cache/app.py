"""Builds the purge-cache service's process: the Purge-Cache API on its own port, with
the project's Hawk authentication against the clients and roles in MongoDB."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.purge_cache.api import PurgeCacheApi
from shared import db as dbmod
from shared import monitoring
from shared.api import Api, make_app
from shared.auth.http import HawkAuthenticator
from shared.auth.scopes import expand_template
from shared.auth.store import AuthStore, StaticClient
from shared.config import Settings


def build_app(settings: Settings) -> web.Application:
    client = dbmod.connect(settings.mongo_url)
    database = client[settings.mongo_db]
    auth = AuthStore(
        database,
        secret_key=settings.secret_key,
        static_clients=[StaticClient(settings.root_client_id, settings.root_access_token, ("*",))],
    )
    health = {"mongodb": monitoring.database_answers(database)}
    api = Api(
        "/api/purge-cache/v1",
        [monitoring.Monitoring(health), PurgeCacheApi(database)],
        authenticator=HawkAuthenticator(auth),
        fill_scopes=expand_template,
    )
    app = make_app(api)

    async def database_context(app: web.Application) -> AsyncIterator[None]:
        # Connect now, not at the first request: a database that cannot be reached fails
        # the start, and the image's healthcheck sees the connection it expects.
        await client.admin.command("ping")
        yield
        await client.close()

    app.cleanup_ctx.append(database_context)
    return app
