"""The whole authentication decision as one pure function (reference 7.2, 7.4, 7.5).

The caller does the I/O first:

    needed = client_ids_needed(hawk_request)          # parsed, not verified
    clients = {cid: record for cid in needed if (record := await load(cid))}
    result = authenticate(hawk_request, clients, resolver, utcnow())

and maps AuthenticationFailed to 401. The rules run in upstream's order: ext and the
certificate issuer, the client (unknown/disabled/expired), the certificate, then
authorizedScopes, then the MAC, payload hash and clock. Every outcome carries the
expansion of `assume:anonymous`; no credentials at all is the anonymous caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from shared.auth import certificates, hawk
from shared.auth.errors import AuthenticationFailed
from shared.auth.roles import RoleResolver
from shared.auth.scopes import ScopeExpr, ScopeSet, is_valid_scope
from shared.timeutil import to_utc

ANONYMOUS_SCOPE = "assume:anonymous"
# What upstream reports as the expiry of an anonymous "authentication".
ANONYMOUS_EXPIRY = timedelta(minutes=15)

Scheme = Literal["hawk", "bewit", "none"]


class ClientRecord(BaseModel):
    """A stored client as authentication needs it: the plain secret, unexpanded scopes.

    Field names follow the protocol's (clientId, accessToken) so a stored document maps
    straight onto it. `expires` may be naive (MongoDB hands back naive UTC).
    """

    model_config = ConfigDict(frozen=True)

    clientId: str
    accessToken: str
    scopes: tuple[str, ...] = ()
    expires: datetime
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class AuthResult:
    client_id: str | None  # the Hawk id (a temporary credential's name); None if anonymous
    scope_set: ScopeSet = field(repr=False)  # expanded, normalised, anonymous included
    expires: datetime
    scheme: Scheme

    @property
    def scopes(self) -> tuple[str, ...]:
        return self.scope_set.scopes

    def satisfies(self, expr: ScopeExpr) -> bool:
        return self.scope_set.satisfies(expr)


@dataclass(frozen=True, slots=True)
class _Credentials:
    key: str
    scopes: ScopeSet
    expires: datetime


def client_ids_needed(request: hawk.HawkRequest) -> set[str]:
    """The stored client(s) `authenticate` will look up: the Hawk/bewit id, or the issuer
    of a named certificate. Empty when nothing is needed or the request is malformed
    (authenticate then raises the precise error without a lookup)."""
    try:
        credential_name, ext_text = _claimed_identity(request)
    except AuthenticationFailed:
        return set()
    if credential_name is None:
        return set()
    try:
        ext = hawk.decode_ext(ext_text) if ext_text else None
        cert = _certificate_in(ext)
        issuer = certificates.certificate_issuer(cert, credential_name) if cert else None
    except AuthenticationFailed:
        return {credential_name}
    return {issuer or credential_name}


def authenticate(
    request: hawk.HawkRequest,
    clients: Mapping[str, ClientRecord],
    resolver: RoleResolver,
    now: datetime,
) -> AuthResult:
    """Verify the request's credentials; raise AuthenticationFailed on any problem."""
    now = to_utc(now)
    authorization = request.authorization if request.authorization else None
    bewit_present = hawk.has_bewit(request.resource)
    if authorization is not None:
        if bewit_present:
            raise AuthenticationFailed("Multiple authentications")
        header = hawk.parse_authorization_header(authorization)
        creds = _load_credentials(header.id, header.ext, clients, resolver, now)
        hawk.verify_header(request, header, creds.key, now)
        return AuthResult(header.id, creds.scopes, creds.expires, "hawk")
    if bewit_present:
        if request.method.upper() not in ("GET", "HEAD"):
            raise AuthenticationFailed("Invalid method")
        bewit = hawk.parse_bewit(request.resource)
        hawk.check_bewit_expiry(bewit, now)
        creds = _load_credentials(bewit.id, bewit.ext, clients, resolver, now)
        hawk.verify_bewit(request, bewit, creds.key)
        return AuthResult(bewit.id, creds.scopes, creds.expires, "bewit")
    return anonymous(resolver, now)


def anonymous(resolver: RoleResolver, now: datetime) -> AuthResult:
    return AuthResult(
        None, resolver.expand_set([ANONYMOUS_SCOPE]), to_utc(now) + ANONYMOUS_EXPIRY, "none"
    )


def _claimed_identity(request: hawk.HawkRequest) -> tuple[str | None, str | None]:
    if request.authorization:
        if hawk.has_bewit(request.resource):
            return None, None
        header = hawk.parse_authorization_header(request.authorization)
        return header.id, header.ext
    if hawk.has_bewit(request.resource):
        bewit = hawk.parse_bewit(request.resource)
        return bewit.id, bewit.ext
    return None, None


def _certificate_in(ext: Mapping[str, Any] | None) -> dict[str, Any] | None:
    value = ext.get("certificate") if ext else None
    # JS truthiness, as upstream tests `if (ext.certificate)`: null, "", 0, false are absent.
    if not _js_truthy(value):
        return None
    return certificates.certificate_object(value)


def _load_credentials(
    credential_name: str,
    ext_text: str | None,
    clients: Mapping[str, ClientRecord],
    resolver: RoleResolver,
    now: datetime,
) -> _Credentials:
    """Client lookup plus everything ext can do to the key, scopes and expiry."""
    ext = hawk.decode_ext(ext_text) if ext_text else None
    cert_object = _certificate_in(ext)
    issuer_id = credential_name
    if cert_object is not None:
        issuer_id = certificates.certificate_issuer(cert_object, credential_name) or issuer_id
    client = _usable_client(clients, issuer_id, now)
    key = client.accessToken
    expires = to_utc(client.expires)
    scopes: Iterable[str] = client.scopes
    if cert_object is not None:
        cert = certificates.parse_certificate(cert_object)
        key = certificates.verify_certificate(
            cert,
            credential_name=credential_name,
            issuer_id=issuer_id,
            issuer_access_token=client.accessToken,
            # Upstream checks the issuer's own expanded scopes, without anonymous.
            issuer_scopes=resolver.expand_set(client.scopes),
            now=now,
        )
        expires = min(expires, cert.expires)
        scopes = cert.scopes
    authorized = ext.get("authorizedScopes") if ext else None
    if _js_truthy(authorized):
        if not isinstance(authorized, list):
            raise AuthenticationFailed("ext.authorizedScopes must be an array")
        if not all(is_valid_scope(s) for s in authorized):
            raise AuthenticationFailed("ext.authorizedScopes must be an array of valid scopes")
        current = resolver.expand_set([*scopes, ANONYMOUS_SCOPE])
        if not current.satisfies({"AllOf": authorized}):
            raise AuthenticationFailed(
                "Supplied credentials do not satisfy authorizedScopes; credentials have scopes:"
                "\n\n```\n" + "\n".join(current.scopes) + "\n```\n\n"
                "authorizedScopes are:\n\n```\n" + "\n".join(authorized) + "\n```"
            )
        scopes = authorized
    return _Credentials(key, resolver.expand_set([*scopes, ANONYMOUS_SCOPE]), expires)


def _usable_client(
    clients: Mapping[str, ClientRecord], client_id: str, now: datetime
) -> ClientRecord:
    client = clients.get(client_id)
    if client is None:
        raise AuthenticationFailed(f"Client with clientId '{client_id}' not found")
    if client.disabled:
        raise AuthenticationFailed(f"Client with clientId '{client_id}' is disabled")
    if to_utc(client.expires) < now:
        raise AuthenticationFailed(f"Client with clientId '{client_id}' has expired")
    return client


def _js_truthy(value: object) -> bool:
    # An empty list or object is truthy in JS, unlike in Python.
    if value is None or value is False:
        return False
    if isinstance(value, str):
        return value != ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0
    return True
