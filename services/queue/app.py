"""Builds the queue's aiohttp application: long-lived resources under typed keys in
`cleanup_ctx`, the declared APIs registered behind the protocol middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from services.queue.artifacts_api import ArtifactsApi
from services.queue.auth_api import AuthApi
from services.queue.claims_api import ClaimsApi
from services.queue.context import Issuer, QueueContext
from services.queue.groups_api import GroupsApi
from services.queue.object_artifacts import ObjectServiceClient
from services.queue.tasks_api import TasksApi
from services.queue.waiters import ClaimWaiters
from services.queue.worker_records import WorkerRecords
from services.queue.worker_shutdown_api import WorkerShutdownApi
from services.queue.workers_api import WorkersApi
from shared import artifact_bytes, monitoring, pending_upgrade, resolution_queue, taskgroups
from shared import db as dbmod
from shared.api import Api, BodyPace, make_app
from shared.auth.http import HawkAuthenticator
from shared.auth.scopes import expand_template
from shared.auth.store import AuthStore, StaticClient
from shared.broker import Binding, Broker
from shared.config import Settings
from shared.outbox import Outbox
from shared.taskstore import TaskStore

log = logging.getLogger(__name__)

MONGO = web.AppKey("mongo", dbmod.AsyncMongoClient)
STORE = web.AppKey("auth_store", AuthStore)

# The relay is a safety net: live writers deliver their own effects at once. Its query
# scans the tasks collection on FerretDB (only _id lookups are indexed there), so it runs
# soon after start-up (to recover what a crash of this or another replica left) and
# then rarely.
RELAY_FIRST_S = 6.0  # after the grace period, so what a crash left is due by then
RELAY_INTERVAL_S = 30.0
RELAY_GRACE_S = 5.0


def build_app(settings: Settings) -> web.Application:
    # The stores need a database handle before the app starts serving, so the client is
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
    # The broker connects in the cleanup context.
    outbox = Outbox(database, _LazyBroker(), pending_expires_s=settings.pending_queue_expires_s)
    tasks = TaskStore(database, outbox, fault=settings.fault_injection)

    async def anything_ready(task_queue_id: str) -> bool:
        return await outbox.pending.ready(task_queue_id) > 0

    waiters = ClaimWaiters(
        anything_ready,
        sweep_interval_s=settings.claim_sweep_interval_s,
        hangup_check_s=settings.claim_hangup_check_s,
    )
    context = QueueContext(
        db=database,
        store=tasks,
        waiters=waiters,
        workers=WorkerRecords(database, throttle_s=settings.worker_activity_resolution_s),
        issuer=Issuer(settings.root_client_id, settings.root_access_token),
        claim_timeout_s=settings.claim_timeout_s,
        claim_work_wait_s=settings.claim_work_wait_s,
    )
    byte_store = artifact_bytes.open_store(settings, database)
    # `object` artifacts: the queue calls the object service directly when told where,
    # else through the root URL (the ingress).
    objects = ObjectServiceClient(settings.object_url or settings.root_url, context.issuer)

    async def rabbitmq_connected() -> None:
        broker = outbox.broker
        if not isinstance(broker, Broker) or broker.channel.is_closed:
            raise ConnectionError("no open channel to RabbitMQ")

    checks = {"mongodb": monitoring.database_answers(database), "rabbitmq": rabbitmq_connected}
    queue_api = Api(
        "/api/queue/v1",
        [
            monitoring.Monitoring(checks),
            TasksApi(context),
            GroupsApi(context),
            ClaimsApi(context),
            WorkersApi(context),
            WorkerShutdownApi(context),
            ArtifactsApi(context, byte_store, objects, max_bytes=settings.artifact_max_bytes),
        ],
        authenticator=authenticator,
        fill_scopes=expand_template,
    )
    auth_api = Api(
        "/api/auth/v1",
        [monitoring.Monitoring(checks), AuthApi(store)],
        authenticator=authenticator,
        fill_scopes=expand_template,
    )
    app = make_app(
        queue_api,
        auth_api,
        body_pace=BodyPace(settings.http_body_grace_s, settings.http_body_min_rate_bytes_s),
    )
    # The embedded byte store serves its signed upload and download URLs from here.
    app.router.add_routes(byte_store.routes())
    app[MONGO] = client
    app[STORE] = store

    async def database_context(app: web.Application) -> AsyncIterator[None]:
        await dbmod.ensure_indexes(database)
        await store.ensure_default_roles()
        # A deployment upgraded in place: groups it counted get their open tasks marked.
        await taskgroups.upgrade(database)
        await byte_store.start()
        yield
        await byte_store.close()
        await client.close()

    async def broker_context(app: web.Application) -> AsyncIterator[None]:
        broker = await Broker.connect(settings.amqp_url, prefix=settings.exchange_prefix)
        outbox.broker = broker
        # Before the first request: a resolution published now must reach the resolver.
        await resolution_queue.declare(broker, settings)
        # A deployment upgraded in place: runs its database-held queue still had.
        await pending_upgrade.move_to_broker(database, outbox.pending)
        # Each replica hears every task-pending event on its own auto-deleted queue.
        wakeups = await broker.bind_queue(
            "", [Binding("task-pending", "#")], durable=False, exclusive=True
        )
        await wakeups.consume(waiters.on_task_pending, no_ack=True)
        background = [
            _supervised(
                "outbox relay",
                lambda: outbox.run_relay(
                    first_s=RELAY_FIRST_S, interval_s=RELAY_INTERVAL_S, grace_s=RELAY_GRACE_S
                ),
            ),
            _supervised("claim sweeper", waiters.run_sweeper),
        ]
        yield
        await tasks.drain()  # bookkeeping of the last answered requests
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await broker.close()

    async def release_long_polls(app: web.Application) -> None:
        waiters.close()  # waiting claimWork calls answer now instead of holding shutdown

    async def object_client_context(app: web.Application) -> AsyncIterator[None]:
        await objects.start()
        yield
        await objects.close()

    app.on_shutdown.append(release_long_polls)
    app.cleanup_ctx.append(object_client_context)
    app.cleanup_ctx.append(database_context)
    app.cleanup_ctx.append(broker_context)
    return app


def _supervised(name: str, loop: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    """A background loop that takes the process down if it dies, so the supervisor
    restarts it rather than it serving without its safety nets."""

    async def run() -> None:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.critical("%s crashed; exiting", name, exc_info=True)
            raise SystemExit(70) from None

    return asyncio.create_task(run(), name=name)


class _LazyBroker:
    """Stands in until the broker context connects; using it earlier is a bug."""

    async def publish(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("broker used before the application started")
