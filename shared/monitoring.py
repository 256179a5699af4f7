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
from shared.api import Call, Endpoint

_STARTED = time.monotonic()
CHECK_TIMEOUT_S = 5.0

Check = Callable[[], Awaitable[None]]  # raises (or times out) when the dependency is away


async def ping(call: Call) -> dict[str, object]:
    return {"alive": True, "uptime": round(time.monotonic() - _STARTED, 3)}


async def empty(call: Call) -> dict[str, object]:
    return {}


async def version_info(call: Call) -> dict[str, object]:
    return {"source": "flotilla", "version": version("flotilla"), "commit": "", "build": ""}


def heartbeat(checks: Mapping[str, Check]) -> Callable[[Call], Awaitable[dict[str, str]]]:
    async def run(call: Call) -> dict[str, str]:
        async def one(check: Check) -> str | None:
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    await check()
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"[:300]
            return None

        outcomes = dict(zip(checks, await asyncio.gather(*map(one, checks.values())), strict=True))
        failed = {name: why for name, why in outcomes.items() if why is not None}
        if failed:
            raise errors.ServiceUnavailable(
                "Unreachable: " + "; ".join(f"{name} ({why})" for name, why in failed.items())
            )
        return {name: "ok" for name in checks}

    return run


def endpoints(checks: Mapping[str, Check] | None = None) -> list[Endpoint]:
    return [
        Endpoint("ping", "GET", "/ping", ping),
        Endpoint("lbheartbeat", "GET", "/__lbheartbeat__", empty),
        Endpoint("heartbeat", "GET", "/__heartbeat__", heartbeat(checks or {})),
        Endpoint("version", "GET", "/__version__", version_info),
    ]
