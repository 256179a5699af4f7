"""`python -m services.index`: the composition root. Settings are read once, here.
Serves the Index API on FLOTILLA_INDEX_PORT (default 8182)."""

from __future__ import annotations

from aiohttp import web

from services.index.app import build_app
from shared import logs, service
from shared.config import load_settings


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_level, service="services.index")
    web.run_app(
        build_app(settings),
        host=settings.index_host,
        port=settings.index_port,
        print=service.announce_ready,
        shutdown_timeout=10,
    )


if __name__ == "__main__":
    main()
