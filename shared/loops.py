"""Every background loop's failure budget and per-pass summary, in one place.

A loop runs passes; each pass is wrapped in `budget.attempt()`. A pass that raises is
logged and counted; a pass that succeeds resets the count. Once a loop has failed
`allowed` passes in a row and for at least `min_failing_s`, it gives up by raising
LoopFailed, and the service exits with EXIT_LOOP_FAILED (70) so its supervisor restarts
it, instead of retrying silently forever. Every pass logs one summary line (what the
pass put in its summary dict, how long it took, whether it failed).

    budget = FailureBudget("claim reaper")
    while True:
        async with budget.attempt() as summary:
            summary["expired"] = await reap()
        await asyncio.sleep(...)
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger(__name__)

EXIT_LOOP_FAILED = 70  # EX_SOFTWARE: what the supervisor sees when a loop gave up
ALLOWED_FAILURES = 5
MIN_FAILING_S = 30.0


_defaults = {"allowed": ALLOWED_FAILURES, "min_failing_s": MIN_FAILING_S}


def configure(*, allowed: int, min_failing_s: float) -> None:
    """The budget of loops that do not set their own (from settings, once, in main)."""
    _defaults.update(allowed=allowed, min_failing_s=min_failing_s)


class LoopFailed(Exception):
    """A loop used up its failure budget; the process should exit for a restart."""


class FailureBudget:
    def __init__(
        self,
        name: str,
        *,
        allowed: int | None = None,
        min_failing_s: float | None = None,
        quiet_when_idle: bool = True,
    ) -> None:
        self.name = name
        self.allowed = int(_defaults["allowed"]) if allowed is None else allowed
        self.min_failing_s = (
            float(_defaults["min_failing_s"]) if min_failing_s is None else min_failing_s
        )
        self.quiet_when_idle = quiet_when_idle  # idle passes log at debug level
        self.failures = 0  # in a row
        self.failing_since: float | None = None
        self.passes = 0

    @asynccontextmanager
    async def attempt(self) -> AsyncIterator[dict[str, Any]]:
        """One pass: yields the dict the pass fills in as its summary. Exceptions
        (not cancellation) are logged and counted, then swallowed, until the budget is
        spent: then LoopFailed is raised."""
        summary: dict[str, Any] = {}
        started = time.monotonic()
        try:
            yield summary
        except Exception as exc:
            self.failed(exc, summary, time.monotonic() - started)
        else:
            self.succeeded(summary, time.monotonic() - started)

    def succeeded(self, summary: dict[str, Any], duration_s: float = 0.0) -> None:
        self.passes += 1
        self.failures, self.failing_since = 0, None
        busy = any(summary.values())
        level = logging.DEBUG if self.quiet_when_idle and not busy else logging.INFO
        log.log(level, "%s pass", self.name, extra=self._line(summary, duration_s, ok=True))

    def failed(self, exc: Exception, summary: dict[str, Any], duration_s: float = 0.0) -> None:
        self.passes += 1
        self.failures += 1
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        log.error(
            "%s pass failed (%d in a row)",
            self.name,
            self.failures,
            exc_info=exc,
            extra=self._line(summary, duration_s, ok=False),
        )
        if self.failures >= self.allowed and now - self.failing_since >= self.min_failing_s:
            log.critical(
                "%s keeps failing; exiting so the supervisor restarts it",
                self.name,
                extra={"loop": self.name, "failuresInARow": self.failures},
            )
            raise LoopFailed(f"{self.name} failed {self.failures} passes in a row") from exc

    def _line(self, summary: dict[str, Any], duration_s: float, *, ok: bool) -> dict[str, Any]:
        return {
            "loop": self.name,
            "pass": self.passes,
            "ok": ok,
            "durationMs": round(duration_s * 1000, 1),
            **summary,
        }
