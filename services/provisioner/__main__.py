"""`python -m services.provisioner`: the composition root. Settings are read once, here.
Serves the Worker-Manager API on FLOTILLA_PROVISIONER_PORT (default 8181)."""

from __future__ import annotations

from aiohttp import web

from services.provisioner.app import build_app
from shared import logs, service
from shared.config import load_settings


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_level, service="services.provisioner")
    web.run_app(
        build_app(settings),
        host=settings.provisioner_host,
        port=settings.provisioner_port,
        print=service.announce_ready,
        shutdown_timeout=10,
    )


if __name__ == "__main__":
    main()
