"""Builds the object service's aiohttp application: the Object API under
`/api/object/v1/`, authenticated with the clients and roles the queue's auth API keeps
(same database), and, for the embedded byte store, its signed byte URLs under
`/api/object/v1/bytes/` (so the ingress routes them here with the API)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from services.object.api import ObjectApi
from services.object.expiry import run_expiry
from services.object.records import ObjectRecords
from shared import artifact_bytes, monitoring
from shared import db as dbmod
from shared.api import Api, BodyPace, make_app
from shared.auth.http import HawkAuthenticator
from shared.auth.scopes import expand_template
from shared.auth.store import AuthStore, StaticClient
from shared.config import Settings

log = logging.getLogger(__name__)

PREFIX = "/api/object/v1"
BYTES_PREFIX = PREFIX + "/bytes/"


def build_app(settings: Settings) -> web.Application:
    client = dbmod.connect(settings.mongo_url)
    database = client[settings.mongo_db]
    auth = AuthStore(
        database,
        secret_key=settings.secret_key,
        static_clients=[
            StaticClient(settings.root_client_id, settings.root_access_token, ("*",)),
        ],
    )
    byte_store = artifact_bytes.open_store(
        settings, database, path_prefix=BYTES_PREFIX, url_base=settings.root_url
    )
    health = {"mongodb": monitoring.database_answers(database)}
    api = Api(
        PREFIX,
        [
            monitoring.Monitoring(health),
            ObjectApi(ObjectRecords(database), byte_store, max_bytes=settings.artifact_max_bytes),
        ],
        authenticator=HawkAuthenticator(auth),
        fill_scopes=expand_template,
    )
    # Signed PUTs stream bytes here: a body that trickles in is cut off, as at the queue.
    app = make_app(
        api, body_pace=BodyPace(settings.http_body_grace_s, settings.http_body_min_rate_bytes_s)
    )
    app.router.add_routes(byte_store.routes())

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await byte_store.start()
        expiry = asyncio.create_task(_exit_on_crash(run_expiry(database, byte_store)))
        yield
        expiry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await expiry
        await byte_store.close()
        await client.close()

    app.cleanup_ctx.append(resources)
    return app


async def _exit_on_crash(body: object) -> None:
    """A loop that keeps failing takes the process down so the supervisor restarts it."""
    try:
        await body  # type: ignore[misc]
    except asyncio.CancelledError:
        raise
    except BaseException:
        log.critical("object expiry crashed; exiting", exc_info=True)
        os._exit(70)
