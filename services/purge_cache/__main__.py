"""`python -m services.purge_cache`: the composition root. Settings are read once, here.
Serves the Purge-Cache API on FLOTILLA_PURGE_CACHE_PORT (default 8183)."""

from __future__ import annotations

from aiohttp import web

from services.purge_cache.app import build_app
from shared import logs, service
from shared.config import load_settings


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_level, service="services.purge_cache")
    web.run_app(
        build_app(settings),
        host=settings.purge_cache_host,
        port=settings.purge_cache_port,
        print=service.announce_ready,
        shutdown_timeout=10,
    )


if __name__ == "__main__":
    main()
