"""Builds the queue's aiohttp application: long-lived resources under typed keys in
`cleanup_ctx`, the declared APIs registered behind the protocol middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.queue import monitoring
from services.queue.auth_api import AuthApi
from shared import db as dbmod
from shared.api import Api, make_app
from shared.auth.http import HawkAuthenticator
from shared.auth.scopes import expand_template
from shared.auth.store import AuthStore, StaticClient
from shared.config import Settings

MONGO = web.AppKey("mongo", dbmod.AsyncMongoClient)
STORE = web.AppKey("auth_store", AuthStore)


def build_app(settings: Settings) -> web.Application:
    # The store needs a database handle before the app starts serving, so the client is
    # created here (it connects lazily) and closed in the cleanup context.
    client = dbmod.connect(settings.mongo_url)
    database = client[settings.mongo_db]
    store = AuthStore(
        database,
        secret_key=settings.secret_key,
        static_clients=[
            StaticClient(settings.root_client_id, settings.root_access_token, ("*",)),
        ],
    )
    authenticator = HawkAuthenticator(store)
    queue_api = Api(
        "/api/queue/v1",
        monitoring.endpoints(),
        authenticator=authenticator,
        fill_scopes=expand_template,
    )
    auth_api = Api(
        "/api/auth/v1",
        monitoring.endpoints() + AuthApi(store).endpoints(),
        authenticator=authenticator,
        fill_scopes=expand_template,
    )
    app = make_app(queue_api, auth_api)
    app[MONGO] = client
    app[STORE] = store

    async def database_context(app: web.Application) -> AsyncIterator[None]:
        await dbmod.ensure_indexes(database)
        yield
        await client.close()

    app.cleanup_ctx.append(database_context)
    return app
