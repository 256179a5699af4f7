"""Builds the provisioner's process: the Worker-Manager API (aiohttp, its own port) and,
in the cleanup context, the providers, the event subscription and the provisioning loop.

Shutdown sequence: stop the loop (releasing the lease so a standby takes over at once),
stop the docker workers this process watches (SIGTERM, they report worker-shutdown;
SIGKILL after the grace period), close the providers, RabbitMQ, the queue client
session, then MongoDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import taskcluster.aio
from aiohttp import web

from services.provisioner.api import WorkerManagerApi
from services.provisioner.providers import Provider
from services.provisioner.providers.aws import AwsProvider
from services.provisioner.providers.docker import DockerProvider, Issuer
from services.provisioner.providers.static import StaticProvider
from services.provisioner.provisioner import RESOLUTION_EVENTS, Provisioner
from services.provisioner.queue_client import FlotillaQueue
from services.provisioner.store import PoolStore
from shared import db as dbmod
from shared import monitoring
from shared.api import Api, make_app
from shared.auth.http import HawkAuthenticator
from shared.auth.scopes import expand_template
from shared.auth.store import AuthStore, StaticClient
from shared.broker import Binding, Broker
from shared.config import Settings
from shared.routing import task_queue_of_routing_key

log = logging.getLogger(__name__)

PROVISIONER = web.AppKey("provisioner", Provisioner)


def build_app(settings: Settings) -> web.Application:
    client = dbmod.connect(settings.mongo_url)
    database = client[settings.mongo_db]
    issuer = Issuer(settings.root_client_id, settings.root_access_token)
    auth = AuthStore(
        database,
        secret_key=settings.secret_key,
        static_clients=[StaticClient(issuer.client_id, issuer.access_token, ("*",))],
    )
    store = PoolStore(database)
    instance_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"

    async def worker_exited(key: str, code: int) -> None:
        await provisioner.worker_exited(key, code)

    providers: dict[str, Provider] = {
        "docker": DockerProvider(
            root_url=settings.root_url,
            issuer=issuer,
            work_root=Path(settings.provisioner_work_root),
            on_exit=worker_exited,
            grace_s=settings.provisioner_worker_grace_s,
            image=settings.provisioner_worker_image,
            docker_url=settings.provisioner_docker_url,
        ),
        "aws": AwsProvider(
            root_url=settings.root_url,
            endpoint_url=settings.aws_endpoint_url,
            access_key_id=settings.aws_access_key_id,
            secret_access_key=settings.aws_secret_access_key,
        ),
        "static": StaticProvider(),
    }
    provisioner = Provisioner(
        store=store,
        providers=providers,
        queue=None,  # the client needs a session: set in the cleanup context
        instance_id=instance_id,
        interval_s=settings.provisioner_interval_s,
        lease_s=settings.provisioner_lease_s,
        # How stale a healthy worker's lastDateActive can look (see inactivity).
        activity_slack_s=settings.worker_activity_resolution_s + settings.claim_work_wait_s,
    )
    health = {"mongodb": monitoring.database_answers(database)}
    api = Api(
        "/api/worker-manager/v1",
        [
            monitoring.Monitoring(health),
            WorkerManagerApi(store, providers, issuer, provisioner.wake, provisioner.claim_holders),
        ],
        authenticator=HawkAuthenticator(auth),
        fill_scopes=expand_template,
    )
    app = make_app(api)
    app[PROVISIONER] = provisioner

    async def database_context(app: web.Application) -> AsyncIterator[None]:
        await dbmod.ensure_indexes(database)
        yield
        await client.close()

    async def loop_context(app: web.Application) -> AsyncIterator[None]:
        session = taskcluster.aio.createSession()
        provisioner.queue = FlotillaQueue(
            {
                "rootUrl": settings.root_url,
                "credentials": {
                    "clientId": issuer.client_id,
                    "accessToken": issuer.access_token,
                },
            },
            session=session,
        )
        broker = await Broker.connect(settings.amqp_url, prefix=settings.exchange_prefix)
        events = await broker.bind_queue(
            "",
            [Binding(event, "#") for event in ("task-pending", *RESOLUTION_EVENTS)],
            durable=False,
            exclusive=True,
        )
        prefix = settings.exchange_prefix

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            event = (message.exchange or "").removeprefix(prefix)
            provisioner.on_event(event, task_queue_of_routing_key(message.routing_key or ""))

        await events.consume(on_message, no_ack=True)
        loop = asyncio.create_task(_crash_exits(provisioner.run()), name="provisioner loop")
        log.info("provisioner started", extra={"instance": instance_id})
        yield
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        for provider in providers.values():
            await provider.close()
        await broker.close()
        await session.close()

    app.cleanup_ctx.append(database_context)
    app.cleanup_ctx.append(loop_context)
    return app


async def _crash_exits(body: object) -> None:
    """A crashed loop takes the process down so the supervisor restarts it."""
    try:
        await body  # type: ignore[misc]
    except asyncio.CancelledError:
        raise
    except BaseException:
        log.critical("provisioner loop crashed; exiting", exc_info=True)
        os._exit(70)
