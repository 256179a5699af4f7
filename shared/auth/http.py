"""The edge between aiohttp and the pure auth code: gather what authentication needs from
the request and the store, call the pure decision, and hand back a Principal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from shared.auth.authenticate import AuthResult, authenticate, client_ids_needed
from shared.auth.hawk import HawkRequest, request_port, split_host_header
from shared.auth.scopes import ScopeExpr, ScopeSet, missing, satisfies
from shared.auth.store import AuthStore
from shared.timeutil import utcnow


@dataclass(frozen=True)
class Principal:
    client_id: str | None
    scopes: tuple[str, ...]
    expires: datetime | None
    _held: ScopeSet

    def satisfies(self, expression: ScopeExpr) -> bool:
        return satisfies(self._held, expression)

    def missing(self, expression: ScopeExpr) -> ScopeExpr | None:
        return missing(self._held, expression)


def hawk_request(request: web.Request, body: bytes) -> HawkRequest:
    host_header = signed_host(request.headers.get("X-Forwarded-Host"), request.headers.get("Host"))
    host, _port = split_host_header(host_header)
    return HawkRequest(
        method=request.method,
        resource=request.raw_path,
        host=host,
        port=request_port(
            host_header,
            request.headers.get("X-Forwarded-Port"),
            request.headers.get("X-Forwarded-Proto"),
            request.secure,
        ),
        authorization=request.headers.get("Authorization"),
        content_type=request.headers.get("Content-Type"),
        body=body,
    )


def signed_host(x_forwarded_host: str | None, host: str | None) -> str:
    """The `host[:port]` the client signed. Behind proxies (the ingress) that is the first
    X-Forwarded-Host, which the ingress keeps from an outer proxy; else the Host header.
    A client that sends its own X-Forwarded-Host only changes what its own MAC must
    match, so trusting it grants nothing. Pure."""
    if x_forwarded_host:
        first = x_forwarded_host.split(",")[0].strip()
        if first:
            return first
    return host or ""


class HawkAuthenticator:
    """Implements shared.api.Authenticator with the clients and roles of an AuthStore."""

    def __init__(self, store: AuthStore) -> None:
        self.store = store

    async def authenticate(self, request: web.Request, body: bytes) -> Principal:
        hawk = hawk_request(request, body)
        clients = await self.store.clients(client_ids_needed(hawk))  # 401s raise through
        result: AuthResult = authenticate(hawk, clients, await self.store.resolver(), utcnow())
        return Principal(result.client_id, result.scopes, result.expires, result.scope_set)
