"""`python -m services.dependency_resolver`: the composition root."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from services.dependency_resolver.resolver import Resolver
from shared import logs, service
from shared.config import load_settings


async def _loops(runtime: service.Runtime) -> Sequence[service.Loop]:
    resolver = Resolver(runtime)
    return [resolver.consume, resolver.sweep]


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_level, service="services.dependency_resolver")
    sys.exit(asyncio.run(service.run(settings, _loops)))


if __name__ == "__main__":
    main()
