"""The official async Queue client plus Flotilla's `workerShutdown` (a queue endpoint
upstream does not have, so the generated client lacks the method)."""

from __future__ import annotations

from typing import Any

import taskcluster.aio

WORKER_SHUTDOWN = {
    "args": ["provisionerId", "workerType", "workerGroup", "workerId"],
    "method": "post",
    "name": "workerShutdown",
    "output": None,
    "route": (
        "/provisioners/<provisionerId>/worker-types/<workerType>/workers/"
        "<workerGroup>/<workerId>/shutdown"
    ),
    "stability": "experimental",
}


class FlotillaQueue(taskcluster.aio.Queue):  # type: ignore[misc]
    funcinfo = {**taskcluster.aio.Queue.funcinfo, "workerShutdown": WORKER_SHUTDOWN}

    async def workerShutdown(self, *args: Any, **kwargs: Any) -> Any:
        """Resolve every run the worker holds as exception/worker-shutdown."""
        return await self._makeApiCall(self.funcinfo["workerShutdown"], *args, **kwargs)
