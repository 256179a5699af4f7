"""`python -m services.object`: the composition root. Settings are read once, here.
Serves the Object API on FLOTILLA_OBJECT_HOST:FLOTILLA_OBJECT_PORT (default
127.0.0.1:8184)."""

from __future__ import annotations

from aiohttp import web

from services.object.app import build_app
from shared import logs, service
from shared.config import load_settings


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_level, service="services.object")
    web.run_app(
        build_app(settings),
        host=settings.object_host,
        port=settings.object_port,
        print=service.announce_ready,
        shutdown_timeout=30,  # uploads in flight get to finish
        max_field_size=65536,  # certificates with many scopes make long Authorization headers
        # Object bytes are stored as sent: an encoded upload must not be inflated.
        auto_decompress=False,
        # Also the time a new connection has to send its request headers (slowloris).
        keepalive_timeout=settings.http_header_timeout_s,
    )


if __name__ == "__main__":
    main()
