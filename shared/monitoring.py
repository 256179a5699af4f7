"""Dockerflow monitoring endpoints every Flotilla API serves; they need no credentials.

(services/queue/monitoring.py predates this module and can switch to it.)"""

from __future__ import annotations

import time
from importlib.metadata import version

from shared.api import Call, Endpoint

_STARTED = time.monotonic()


async def ping(call: Call) -> dict[str, object]:
    return {"alive": True, "uptime": round(time.monotonic() - _STARTED, 3)}


async def empty(call: Call) -> dict[str, object]:
    return {}


async def version_info(call: Call) -> dict[str, object]:
    return {"source": "flotilla", "version": version("flotilla"), "commit": "", "build": ""}


def endpoints() -> list[Endpoint]:
    return [
        Endpoint("ping", "GET", "/ping", ping),
        Endpoint("lbheartbeat", "GET", "/__lbheartbeat__", empty),
        Endpoint("heartbeat", "GET", "/__heartbeat__", empty),
        Endpoint("version", "GET", "/__version__", version_info),
    ]
