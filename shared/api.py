"""Declared HTTP endpoints with upstream's conventions, shared by every API Flotilla serves.

Each endpoint is declared once (client method name, route, scope template, input model)
beside its handler. This module does the protocol's bookkeeping around it: URL-parameter
and query checks, the JSON body rules, authentication and the scope check, the error body
`{code, message, requestInfo}` (for every refusal: unmatched routes, and requests aiohttp
cannot parse, too), CORS and cache headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import types
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, TypeVar

import pydantic
from aiohttp import web, web_protocol

from shared import errors, jsontext
from shared.auth.scopes import ScopeExpr
from shared.models.errors import describe_validation_error, is_input_error
from shared.timeutil import format_ts, utcnow

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024

COMMON_HEADERS = {
    "Cache-Control": "no-store, no-cache, must-revalidate",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Cache-Control",
    "Access-Control-Allow-Methods": "OPTIONS, GET, HEAD, POST, PUT, DELETE",
    "Access-Control-Expose-Headers": "Location, x-taskcluster-artifact-storage-type",
}

_PLACEHOLDER = re.compile(r"<([A-Za-z][A-Za-z0-9]*)>")


@dataclass(frozen=True)
class BodyPace:
    """How slowly a request body may arrive: `grace_s` for free, then on average at
    least `min_rate` bytes a second (a 1 byte/s upload would hold a connection for days)."""

    grace_s: float = 30.0
    min_rate: float = 1024.0


BODY_PACE = web.AppKey("body_pace", BodyPace)


async def paced_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives, cut off with a 408 once it falls behind the
    application's BodyPace."""
    pace = request.app.get(BODY_PACE) or BodyPace()
    loop = asyncio.get_running_loop()
    start, received = loop.time(), 0
    while True:
        try:
            async with asyncio.timeout_at(start + pace.grace_s + received / pace.min_rate):
                piece = await request.content.readany()
        except TimeoutError:
            raise errors.RequestTimeout(
                f"The request body arrived slower than {pace.min_rate:.0f} bytes/s "
                f"({received} bytes received)"
            ) from None
        if not piece:
            return
        received += len(piece)
        yield piece


class Principal(Protocol):
    """Who is calling: what an Authenticator hands back."""

    client_id: str | None
    scopes: tuple[str, ...]  # expanded and normalised

    def satisfies(self, expression: ScopeExpr) -> bool: ...

    def missing(self, expression: ScopeExpr) -> ScopeExpr | None: ...


class Authenticator(Protocol):
    async def authenticate(self, request: web.Request, body: bytes) -> Principal: ...


class ScopeTemplates(Protocol):
    """Fills `<param>` placeholders and `{for, in, each}` loops of a scope template."""

    def __call__(self, template: ScopeExpr, params: Mapping[str, Any]) -> ScopeExpr: ...


@dataclass
class Call:
    """Everything a handler needs, already parsed and authenticated."""

    endpoint: Endpoint
    request: web.Request
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    raw_payload: Any
    principal: Principal
    fill_scopes: ScopeTemplates

    def authorize(self, template: ScopeExpr | None = None, **params: Any) -> None:
        """Check a scope template (the endpoint's by default) with these parameters."""
        template = self.endpoint.scopes if template is None else template
        if template is None:
            return
        expression = self.fill_scopes(template, {**self.params, **params})
        if not self.principal.satisfies(expression):
            missing = self.principal.missing(expression)
            raise errors.InsufficientScopes(
                "Client ID {} does not have sufficient scopes and is missing the following "
                "scopes:\n\n```\n{}\n```\n\nThis request requires the client to satisfy "
                "the following scope expression:\n\n```\n{}\n```".format(
                    self.principal.client_id or "anonymous",
                    json.dumps(missing, indent=2),
                    json.dumps(expression, indent=2),
                )
            )


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    name: str  # the client's method name, e.g. "createTask"
    method: str
    route: str  # upstream form: "/task/<taskId>/runs/<runId>"
    handler: Handler
    scopes: ScopeExpr | None = None
    input: type[pydantic.BaseModel] | None = None
    params: Mapping[str, str] = field(default_factory=dict)  # name -> regex it must match
    query: Sequence[str] = ()
    # Route parameters that may be left out, with their slash (upstream's `:namespace?`).
    optional: Sequence[str] = ()
    # True when the scope template uses only URL params, so it is checked before the
    # handler runs (upstream's order: a 403 can precede a 404).
    scopes_from_params: bool | None = None
    title: str = ""  # one line, as upstream's reference gives it
    output: type[pydantic.BaseModel] | None = None  # the answer's shape, where one is modelled

    def checks_scopes_early(self) -> bool:
        if self.scopes_from_params is not None:
            return self.scopes_from_params
        if self.scopes is None:
            return False
        names = set(_PLACEHOLDER.findall(json.dumps(self.scopes)))
        return names <= set(_route_params(self.route))


_DECLARATION = "__flotilla_endpoint__"

H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


def declare(
    name: str,
    method: str,
    route: str,
    *,
    title: str,
    scopes: ScopeExpr | None = None,
    input: type[pydantic.BaseModel] | None = None,
    output: type[pydantic.BaseModel] | None = None,
    params: Mapping[str, str] | None = None,
    query: Sequence[str] = (),
    optional: Sequence[str] = (),
    scopes_from_params: bool | None = None,
) -> Callable[[H], H]:
    """Declare the handler below it as an endpoint, as upstream's `builder.declare` does:
    the client's method name, HTTP method, route, a one-line title, the scope expression
    and the input/output models, all next to the code that serves it. `declared(owner)`
    collects an object's (or module's) declarations, in the order they are written."""

    def mark(handler: H) -> H:
        setattr(
            handler,
            _DECLARATION,
            {
                "name": name,
                "method": method,
                "route": route,
                "title": title,
                "scopes": scopes,
                "input": input,
                "output": output,
                "params": dict(params or {}),
                "query": tuple(query),
                "optional": tuple(optional),
                "scopes_from_params": scopes_from_params,
            },
        )
        return handler

    return mark


def declared(owner: object) -> list[Endpoint]:
    """The endpoints declared with `@declare` on an object's methods (bound to it), a
    class's or a module's functions, in source order."""
    if isinstance(owner, types.ModuleType):
        namespaces: list[Mapping[str, Any]] = [vars(owner)]
    else:
        # A class gives its declarations with unbound handlers: for listing, not serving.
        cls = owner if isinstance(owner, type) else type(owner)
        namespaces = [vars(c) for c in reversed(cls.__mro__)]
    endpoints: dict[str, Endpoint] = {}
    for namespace in namespaces:
        for attribute, value in namespace.items():
            declaration = getattr(value, _DECLARATION, None)
            if declaration is None:
                continue
            handler = getattr(owner, attribute)
            endpoints[attribute] = Endpoint(handler=handler, **declaration)
    return list(endpoints.values())


def _route_params(route: str) -> list[str]:
    return _PLACEHOLDER.findall(route)


def _aiohttp_path(route: str, optional: Sequence[str] = ()) -> str:
    # Parameters may hold '/' (taskQueueId, artifact names): the last parameter of a route
    # absorbs the rest; a taskQueueId or workerPoolId takes exactly one '/' or '%2F'.
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in optional:
            return f"{{{name}:[^/]*}}"
        if name in ("taskQueueId", "workerPoolId"):
            return f"{{{name}:[^/%]+(?:/|%2[Ff])[^/%]+}}"
        if name == "name" and route.endswith("<name>"):
            return f"{{{name}:.+}}"
        return f"{{{name}}}"

    return _PLACEHOLDER.sub(replace, route)


class Api:
    """A set of endpoints under one prefix, e.g. `/api/queue/v1`: those declared on each
    handler object (see `declare`), or given as Endpoints."""

    def __init__(
        self,
        prefix: str,
        handlers: Sequence[object],
        *,
        authenticator: Authenticator,
        fill_scopes: ScopeTemplates,
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.endpoints = [
            endpoint
            for owner in handlers
            for endpoint in ([owner] if isinstance(owner, Endpoint) else declared(owner))
        ]
        self._authenticator = authenticator
        self._fill_scopes = fill_scopes
        names = [e.name for e in self.endpoints]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate endpoint names under {prefix}")

    def register(self, app: web.Application) -> None:
        # Route names are unique per application: `queue.ping`, `auth.ping`, ...
        service = self.prefix.strip("/").split("/")[1] if self.prefix.count("/") >= 2 else "api"
        for endpoint in self.endpoints:
            path = self.prefix + _aiohttp_path(endpoint.route, endpoint.optional)
            name = f"{service}.{endpoint.name}"
            handler = self._wrap(endpoint)
            app.router.add_route(endpoint.method, path, handler, name=name)
            if path.endswith("/"):
                # Clients call `/roles` for the route `/roles/`; upstream's router takes both.
                app.router.add_route(endpoint.method, path.rstrip("/"), handler)
            if endpoint.optional and endpoint.route.endswith(f"/<{endpoint.optional[-1]}>"):
                # The optional last parameter left out with its slash (`/namespaces`).
                bare = self.prefix + endpoint.route.rsplit("/", 1)[0]
                app.router.add_route(endpoint.method, bare, handler)
            if endpoint.method == "GET":
                # HEAD answers as GET without a body (aiohttp drops it): status and headers
                for head_path in {path, path.rstrip("/") or path}:
                    app.router.add_route("HEAD", head_path, handler)

    def _wrap(self, endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        early = endpoint.checks_scopes_early()  # decided once, not per request
        optional = endpoint.optional

        async def run(request: web.Request) -> web.StreamResponse:
            request["endpoint"] = endpoint
            params = dict(request.match_info)
            for name in optional:
                params.setdefault(name, "")  # left out with its slash
            request["params"] = params
            body = await _read_body(request)
            principal = await self._authenticator.authenticate(request, body)
            query = _check_query(request, endpoint)
            for name, pattern in endpoint.params.items():
                if name in params and not re.fullmatch(pattern, params[name]):
                    raise errors.InvalidRequestArguments(
                        f"Invalid request arguments: {name} {params[name]!r} must match {pattern}"
                    )
            raw_payload, parsed = _parse_input(request, endpoint, body)
            request["payload"] = {} if raw_payload is None else raw_payload
            call = Call(
                endpoint, request, params, query, parsed, raw_payload, principal, self._fill_scopes
            )
            if early:
                call.authorize()
            result = await endpoint.handler(call)
            if isinstance(result, web.StreamResponse):
                return result
            if result is None:
                return web.Response(status=204)
            return json_response(result)

        return run


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise errors.InputTooLarge(f"Request body is larger than {MAX_BODY_BYTES} bytes")
    if not request.body_exists:
        return b""
    body = bytearray()
    async for piece in paced_chunks(request):
        body += piece
        if len(body) > MAX_BODY_BYTES:
            raise errors.InputTooLarge(f"Request body is larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)


def _check_query(request: web.Request, endpoint: Endpoint) -> dict[str, str]:
    allowed = set(endpoint.query) | {"bewit"}
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise errors.InvalidRequestArguments(
            f"Query-string parameters not allowed: {', '.join(unknown)}"
        )
    return {key: value for key, value in request.query.items() if key != "bewit"}


def _parse_input(request: web.Request, endpoint: Endpoint, body: bytes) -> tuple[Any, Any]:
    if endpoint.input is None:
        return None, None
    if request.content_type != "application/json":
        raise errors.MalformedPayload("Payload must be JSON with content-type: application/json")
    if not body.strip():
        payload: Any = {}
    else:
        try:
            payload = jsontext.loads(body)
        except jsontext.JsonRefused as exc:
            raise errors.MalformedPayload(f"Refused JSON payload: {exc}") from exc
        except ValueError as exc:
            raise errors.MalformedPayload(f"Failed to parse JSON payload: {exc}") from exc
    if not isinstance(payload, dict | list):
        raise errors.MalformedPayload("Payload must be a JSON object or array")
    try:
        return payload, endpoint.input.model_validate(payload)
    except pydantic.ValidationError as exc:
        if is_input_error(exc):  # a protocol rule on a well-formed body, e.g. queue identity
            raise errors.InputError(describe_validation_error(exc)) from exc
        raise errors.InputValidationError(
            f"Schema Validation Failed!\nRejecting Schema: {endpoint.input.__name__}\n"
            f"Errors:\n{describe_validation_error(exc)}"
        ) from exc


def error_body(request: web.Request, error: errors.ApiError) -> dict[str, Any]:
    endpoint: Endpoint | None = request.get("endpoint")
    now = format_ts(utcnow())
    method = endpoint.name if endpoint else "unknown"
    message = (
        f"{error.message}\n\n---\n\n* method:     {method}\n* errorCode:  {error.code}\n"
        f"* statusCode: {error.status}\n* time:       {now}"
    )
    return {
        "code": error.code,
        "message": message,
        "requestInfo": {
            "method": method,
            "params": request.get("params", dict(request.match_info)),
            "payload": request.get("payload", {}),
            "time": now,
        },
    }


@web.middleware
async def protocol_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one error boundary, plus the headers every response carries."""
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=200)
    else:
        try:
            response = await handler(request)
        except errors.ApiError as exc:
            headers = {"WWW-Authenticate": "hawk"} if exc.status == 401 else None
            response = json_response(error_body(request, exc), exc.status, headers)
            if exc.status in (408, 413):
                # The rest of the body is not worth reading (aiohttp would linger for it).
                response.force_close()
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            error = errors.ResourceNotFound(f"No such endpoint: {request.method} {request.path}")
            response = json_response(error_body(request, error), 404)
        except web.HTTPRequestEntityTooLarge:
            error = errors.InputTooLarge(f"Request body is larger than {MAX_BODY_BYTES} bytes")
            response = json_response(error_body(request, error), 413)
        except web.HTTPException:
            raise
        except Exception:
            incident = str(uuid.uuid4())
            log.exception("internal error", extra={"incidentId": incident})
            error = errors.ApiError(f"Internal Server Error, incidentId {incident}.")
            response = json_response(error_body(request, error), 500)
    for name, value in COMMON_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _protocol_error_response(
    self: web_protocol.RequestHandler,
    request: web.BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """aiohttp answers requests it cannot parse (over-long URLs or headers, not HTTP at
    all) itself, in plain text, before any middleware runs; this answers them in the
    protocol's format instead. aiohttp offers no hook for it, hence the replacement."""
    _aiohttp_handle_error(self, request, status, exc, message)  # logs; raises if too late
    code = "InternalServerError" if status >= 500 else "InvalidRequestArguments"
    now = format_ts(utcnow())
    text = message or HTTPStatus(status).phrase
    body = {
        "code": code,
        "message": f"{text}\n\n---\n\n* method:     unknown\n* errorCode:  {code}\n"
        f"* statusCode: {status}\n* time:       {now}",
        "requestInfo": {"method": "unknown", "params": {}, "payload": {}, "time": now},
    }
    response = json_response(body, status, COMMON_HEADERS)
    response.force_close()
    return response


_aiohttp_handle_error = web_protocol.RequestHandler.handle_error


def make_app(*apis: Api, body_pace: BodyPace | None = None) -> web.Application:
    """An aiohttp application serving these APIs behind the protocol middleware."""
    web_protocol.RequestHandler.handle_error = _protocol_error_response  # type: ignore[method-assign]
    app = web.Application(middlewares=[protocol_middleware], client_max_size=MAX_BODY_BYTES + 1)
    app[BODY_PACE] = body_pace or BodyPace()
    for api in apis:
        api.register(app)
    return app
