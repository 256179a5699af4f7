"""`python -m services.claim_expiry`: the composition root."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from services.claim_expiry.reapers import ClaimReaper, DeadlineReaper, Expirer
from shared import logs, service
from shared.config import load_settings


async def _loops(runtime: service.Runtime) -> Sequence[service.Loop]:
    return [ClaimReaper(runtime).run, DeadlineReaper(runtime).run, Expirer(runtime).run]


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_level, service="services.claim_expiry")
    sys.exit(asyncio.run(service.run(settings, _loops)))


if __name__ == "__main__":
    main()
