"""`python -m services.queue`: the composition root. Settings are read once, here."""

from __future__ import annotations

from aiohttp import web

from services.queue.app import build_app
from shared import logs, service
from shared.config import load_settings


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_level, service="services.queue")
    web.run_app(
        build_app(settings),
        host=settings.queue_host,
        port=settings.queue_port,
        print=service.announce_ready,
        shutdown_timeout=30,  # long-polling claimWork calls get to finish or time out
        # A certificate carrying ~120 scopes makes an Authorization header past aiohttp's
        # default 8190-byte field limit.
        # (Passed straight through: aiohttp 3.14 forwards extra keywords to each request
        # handler, while a `handler_args` dict would be silently dropped.)
        max_field_size=65536,
        # Artifact bytes are stored as sent: a gzip upload must not be inflated on the way.
        auto_decompress=False,
        # Also the time a new connection has to send its request headers (slowloris);
        # it does not run while a request (a claimWork long poll) is being answered.
        keepalive_timeout=settings.http_header_timeout_s,
    )


if __name__ == "__main__":
    main()
