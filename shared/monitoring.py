"""Dockerflow monitoring endpoints; they need no credentials.

`__heartbeat__` checks what the service depends on (MongoDB answers a ping, the RabbitMQ
connection is open) and answers 503 in the protocol's format when one is not;
`__lbheartbeat__` only says the process serves HTTP (a load balancer must not take every
replica out because the database is away)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import version

from shared import errors
from shared.api import Call, declare
from shared.db import Database

_STARTED = time.monotonic()
CHECK_TIMEOUT_S = 5.0

Check = Callable[[], Awaitable[None]]  # raises (or times out) when the dependency is away


def database_answers(database: Database) -> Check:
    """A check that MongoDB answers a ping."""

    async def check() -> None:
        await database.command("ping")

    return check


class Monitoring:
    """`ping` and the Dockerflow endpoints every service answers; `checks` names what
    `__heartbeat__` must reach."""

    def __init__(self, checks: Mapping[str, Check] | None = None) -> None:
        self.checks = dict(checks or {})

    @declare("ping", "GET", "/ping", title="Ping Server")
    async def ping(self, call: Call) -> dict[str, object]:
        return {"alive": True, "uptime": round(time.monotonic() - _STARTED, 3)}

    @declare("lbheartbeat", "GET", "/__lbheartbeat__", title="Load balancer heartbeat")
    async def lbheartbeat(self, call: Call) -> dict[str, object]:
        return {}

    @declare("heartbeat", "GET", "/__heartbeat__", title="Heartbeat: dependencies reachable")
    async def heartbeat(self, call: Call) -> dict[str, str]:
        async def one(check: Check) -> str | None:
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    await check()
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"[:300]
            return None

        checks = self.checks
        outcomes = dict(zip(checks, await asyncio.gather(*map(one, checks.values())), strict=True))
        failed = {name: why for name, why in outcomes.items() if why is not None}
        if failed:
            raise errors.ServiceUnavailable(
                "Unreachable: " + "; ".join(f"{name} ({why})" for name, why in failed.items())
            )
        return {name: "ok" for name in checks}

    @declare("version", "GET", "/__version__", title="Version of the running service")
    async def version(self, call: Call) -> dict[str, object]:
        return {"source": "flotilla", "version": version("flotilla"), "commit": "", "build": ""}
