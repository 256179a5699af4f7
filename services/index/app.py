"""Builds the index service's process: the Index API (aiohttp, its own port) and, in the
cleanup context, the consumer that indexes completed tasks and an hourly purge of
expired rows.

Shutdown sequence: stop consuming (unacked messages go back to the queue), stop the
purge, close RabbitMQ, then MongoDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

import taskcluster
from aiohttp import web

from services.index import indexer
from services.index.api import SIGNED_URL_TTL_S, ArtifactUrl, IndexApi
from services.index.store import IndexStore
from shared import db as dbmod
from shared import monitoring
from shared.api import Api, make_app
from shared.auth.http import HawkAuthenticator
from shared.auth.scopes import expand_template
from shared.auth.store import AuthStore, StaticClient
from shared.broker import Broker
from shared.config import Settings
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 3600.0


def artifact_url(settings: Settings) -> ArtifactUrl:
    """The queue's getLatestArtifact URL under the root URL; signed (a bewit with the root
    client's credentials, as upstream signs with the index's own) when asked and possible."""
    credentials = (
        {"clientId": settings.root_client_id, "accessToken": settings.root_access_token}
        if settings.root_access_token
        else {}
    )
    queue = taskcluster.Queue({"rootUrl": settings.root_url, "credentials": credentials})

    def url(task_id: str, name: str, signed: bool) -> str:
        if signed and credentials:
            return str(
                queue.buildSignedUrl(
                    "getLatestArtifact", task_id, name, expiration=SIGNED_URL_TTL_S
                )
            )
        return str(queue.buildUrl("getLatestArtifact", task_id, name))

    return url


def build_app(settings: Settings) -> web.Application:
    client = dbmod.connect(settings.mongo_url)
    database = client[settings.mongo_db]
    auth = AuthStore(
        database,
        secret_key=settings.secret_key,
        static_clients=[StaticClient(settings.root_client_id, settings.root_access_token, ("*",))],
    )
    store = IndexStore(database)
    health = {"mongodb": monitoring.database_answers(database)}
    api = Api(
        "/api/index/v1",
        [monitoring.Monitoring(health), IndexApi(store, artifact_url(settings))],
        authenticator=HawkAuthenticator(auth),
        fill_scopes=expand_template,
    )
    app = make_app(api)

    async def database_context(app: web.Application) -> AsyncIterator[None]:
        await store.ensure_indexes()
        yield
        await client.close()

    async def events_context(app: web.Application) -> AsyncIterator[None]:
        broker = await Broker.connect(settings.amqp_url, prefix=settings.exchange_prefix)
        queue = await indexer.declare(broker, settings.mongo_db, settings.index_queue_expires_s)
        consumer = indexer.Indexer(database, store)
        tag = await queue.consume(consumer.on_message)
        purge = asyncio.create_task(_crash_exits(_purge_loop(store)), name="index purge")
        log.info("index consuming", extra={"queue": queue.name})
        yield
        await queue.cancel(tag)
        purge.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await purge
        await broker.close()

    app.cleanup_ctx.append(database_context)
    app.cleanup_ctx.append(events_context)
    return app


async def _purge_loop(store: IndexStore) -> None:
    failures = 0
    while True:
        try:
            removed = await store.purge_expired(utcnow())
            failures = 0
            if removed:
                log.info("purged %d expired index rows", removed)
        except Exception:
            failures += 1
            log.exception("purging expired index rows failed")
            if failures >= 5:
                raise
        await asyncio.sleep(PURGE_INTERVAL_S)


async def _crash_exits(body: object) -> None:
    """A crashed loop takes the process down so the supervisor restarts it."""
    try:
        await body  # type: ignore[misc]
    except asyncio.CancelledError:
        raise
    except BaseException:
        log.critical("index loop crashed; exiting", exc_info=True)
        os._exit(70)
