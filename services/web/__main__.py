"""`python -m services.web`: the web console's composition root. Settings are read once, here."""

from __future__ import annotations

from aiohttp import web

from services.web.app import build_app
from shared import logs, service
from shared.config import load_settings


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_level, service="services.web")
    web.run_app(
        build_app(settings),
        host=settings.web_host,
        port=settings.web_port,
        print=service.announce_ready,
        shutdown_timeout=5,  # open event streams end at once (on_shutdown closes them)
    )


if __name__ == "__main__":
    main()
