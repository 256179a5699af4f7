"""Hawk request verification (reference 7.2), pure: the caller hands in the request data.

Matches what the official client's `mohawk` signs and what upstream's Node `hawk`
verifies: MAC over `hawk.1.<type>` lines, the raw (still percent-encoded) resource,
the lower-cased host, the port; payload hash over the lower-cased content type without
parameters and the raw body; +-15 min skew; bewits in url-safe base64 without padding.
Every secret comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import errors, jsontext
from shared.auth.errors import AuthenticationFailed

TIMESTAMP_SKEW_S = 15 * 60
# Generous, but bounded: certificates carrying many scopes make long headers.
MAX_HEADER_LENGTH = 64 * 1024

_SCHEME = re.compile(r"(\w+)(?:\s+(.*))?", re.ASCII | re.DOTALL)
# An attribute is `key="value"` followed by a comma or the end. Values are found with
# str.find rather than a regex: a certificate makes ext over a kilobyte long.
_ATTRIBUTE_KEY = re.compile(r'(\w+)="', re.ASCII)
_ATTRIBUTE_SEPARATOR = re.compile(r"\s*(?:,\s*|\Z)", re.ASCII)
_ATTRIBUTE_VALUE = re.compile(r"[ \w!#$%&'()*+,\-./:;<=>?@\[\]^`{|}~]*", re.ASCII)
_ATTRIBUTE_KEYS = frozenset({"id", "ts", "nonce", "hash", "ext", "mac", "app", "dlg"})
_HAS_BEWIT = re.compile(r"/.*[?&]bewit=")
# Node hawk's own split: the last `bewit=` parameter, what precedes it, what follows.
_BEWIT_PARTS = re.compile(r"(/.*)([?&])bewit=([^&$]*)(?:&(.+))?")
_BEWIT_CHARS = re.compile(r"[A-Za-z0-9_-]*")
_EXT_CHARS = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


@dataclass(frozen=True, slots=True)
class HawkRequest:
    """What authentication needs from an HTTP request.

    `resource` is the request target exactly as sent (aiohttp's `request.raw_path`:
    path plus `?query`, still percent-encoded). `host` is the Host header's name
    without the port; `port` comes from `request_port`.
    """

    method: str
    resource: str
    host: str
    port: int
    authorization: str | None = None
    content_type: str | None = None
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class HawkHeader:
    id: str
    ts: str
    nonce: str
    mac: str
    hash: str | None = None
    ext: str | None = None
    app: str | None = None
    dlg: str | None = None


@dataclass(frozen=True, slots=True)
class Bewit:
    id: str
    exp: int
    mac: str
    ext: str
    resource: str  # the request target with the bewit parameter removed: what was signed


def parse_authorization_header(header: str) -> HawkHeader:
    """Parse `Hawk id="..", ts="..", ...` with Node hawk's rules and (terse) messages."""
    if len(header) > MAX_HEADER_LENGTH:
        raise AuthenticationFailed("Header length too long")
    match = _SCHEME.fullmatch(header.strip())
    if match is None:
        raise AuthenticationFailed("Invalid header syntax")
    if match.group(1).lower() != "hawk":
        raise AuthenticationFailed("Unsupported authorization scheme")
    attributes_text = match.group(2)
    if not attributes_text:
        raise AuthenticationFailed("Invalid header syntax")
    attributes: dict[str, str] = {}
    position = 0
    while position < len(attributes_text):
        key_match = _ATTRIBUTE_KEY.match(attributes_text, position)
        if key_match is None:
            raise AuthenticationFailed("Bad header format")
        value_end = attributes_text.find('"', key_match.end())
        separator = _ATTRIBUTE_SEPARATOR.match(attributes_text, value_end + 1)
        if value_end < 0 or separator is None:
            raise AuthenticationFailed("Bad header format")
        key, value = key_match.group(1), attributes_text[key_match.end() : value_end]
        if "\\" in value:  # Node's value pattern is [^"\\]*: a backslash breaks the format
            raise AuthenticationFailed("Bad header format")
        if key not in _ATTRIBUTE_KEYS:
            raise AuthenticationFailed(f"Unknown attribute: {key}")
        if _ATTRIBUTE_VALUE.fullmatch(value) is None:
            raise AuthenticationFailed(f"Bad attribute value: {key}")
        if key in attributes:
            raise AuthenticationFailed(f"Duplicate attribute: {key}")
        attributes[key] = value
        position = separator.end()
    if not all(attributes.get(k) for k in ("id", "ts", "nonce", "mac")):
        raise AuthenticationFailed("Missing attributes")
    return HawkHeader(**attributes)


def split_host_header(host_header: str) -> tuple[str, int | None]:
    """`name[:port]` or `[v6]:port` -> (name, port or None). IPv6 brackets are dropped,
    as Python's urlparse (and so mohawk, on the signing side) drops them."""
    text = host_header.strip()
    if text.startswith("["):
        end = text.find("]")
        if end > 0:
            rest = text[end + 1 :]
            port = rest[1:] if rest.startswith(":") else ""
            return text[1:end], int(port) if port.isdigit() else None
    name, sep, port = text.rpartition(":")
    if sep and port.isdigit():
        return name, int(port)
    return text, None


def request_port(
    host_header: str | None,
    x_forwarded_port: str | None,
    x_forwarded_proto: str | None,
    tls: bool,
) -> int:
    """The port the client signed: what it connected to, as far as we can tell.

    X-Forwarded-Port wins; else 443 behind an https proxy; else the Host header's port;
    else the listener's default. An unparseable header is skipped, not trusted: the MAC
    binds the port, so guessing wrong only makes the request fail.
    """
    if x_forwarded_port is not None and x_forwarded_port.strip().isdigit():
        return int(x_forwarded_port.strip())
    if x_forwarded_proto is not None and x_forwarded_proto.strip().lower() == "https":
        return 443
    if host_header:
        _name, port = split_host_header(host_header)
        if port is not None:
            return port
    return 443 if tls else 80


def normalized_string(
    mac_type: str,
    *,
    ts: str,
    nonce: str,
    method: str,
    resource: str,
    host: str,
    port: int | str,
    hash: str | None,
    ext: str | None,
    app: str | None = None,
    dlg: str | None = None,
) -> str:
    """The text Hawk MACs: one line per field, each ending in a newline."""
    lines = [
        f"hawk.1.{mac_type}",
        ts,
        nonce,
        method.upper(),
        resource,
        host.lower(),
        str(port),
        hash or "",
        # Node escapes these; header values cannot contain them, decoded bewit ext could.
        (ext or "").replace("\\", "\\\\").replace("\n", "\\n"),
    ]
    if app:
        lines += [app, dlg or ""]
    return "\n".join(lines) + "\n"


def calculate_mac(key: str, normalized: str) -> str:
    digest = hmac.digest(key.encode("utf-8"), normalized.encode("utf-8"), "sha256")
    return base64.b64encode(digest).decode("ascii")


def calculate_payload_hash(body: bytes, content_type: str | None) -> str:
    media_type = (content_type or "").split(";")[0].strip().lower()
    sha = hashlib.sha256(b"hawk.1.payload\n")
    sha.update(media_type.encode("utf-8") + b"\n")
    sha.update(body)
    sha.update(b"\n")
    return base64.b64encode(sha.digest()).decode("ascii")


def timing_safe_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def decode_ext(ext: str) -> dict[str, Any]:
    """ext is base64 JSON. Python sends url-safe, Node standard; padding is optional."""
    if _EXT_CHARS.fullmatch(ext) is None:
        raise AuthenticationFailed("Failed to parse ext")
    # str.replace is much faster than str.translate on kilobyte-long certificates.
    text = ext.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant)
        jsontext.check(value)
    except RecursionError:
        raise _too_deep() from None
    except jsontext.JsonTooDeep:
        raise _too_deep() from None
    except (binascii.Error, ValueError):
        raise AuthenticationFailed("Failed to parse ext") from None
    if not isinstance(value, dict):
        raise AuthenticationFailed("ext must be a JSON object")
    return value


def _too_deep() -> errors.MalformedPayload:
    # Bad input rather than bad credentials: answered 400 before anything is looked up.
    return errors.MalformedPayload(f"Hawk ext is nested deeper than {jsontext.MAX_DEPTH} levels")


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are Python extensions; JSON.parse refuses them, so do we.
    raise ValueError(name)


def verify_header(request: HawkRequest, header: HawkHeader, key: str, now: datetime) -> None:
    """MAC, then payload hash (when the client sent one), then the clock: Node's order."""
    expected = calculate_mac(
        key,
        normalized_string(
            "header",
            ts=header.ts,
            nonce=header.nonce,
            method=request.method,
            resource=request.resource,
            host=request.host,
            port=request.port,
            hash=header.hash,
            ext=header.ext,
            app=header.app,
            dlg=header.dlg,
        ),
    )
    if not timing_safe_equal(expected, header.mac):
        raise AuthenticationFailed("Bad mac")
    if header.hash is not None:
        body_hash = calculate_payload_hash(request.body, request.content_type)
        if not timing_safe_equal(body_hash, header.hash):
            raise AuthenticationFailed("Bad payload hash")
    if not header.ts.isdigit() or abs(int(header.ts) - now.timestamp()) > TIMESTAMP_SKEW_S:
        raise AuthenticationFailed("Stale timestamp")


def has_bewit(resource: str) -> bool:
    return _HAS_BEWIT.match(resource) is not None


def parse_bewit(resource: str) -> Bewit:
    """Split the bewit out of the request target and decode `id\\exp\\mac\\ext`."""
    parts = _BEWIT_PARTS.fullmatch(resource)
    if parts is None:
        raise AuthenticationFailed("Missing bewit")
    encoded = parts.group(3)
    if not encoded:
        raise AuthenticationFailed("Empty bewit")
    if _BEWIT_CHARS.fullmatch(encoded) is None:
        raise AuthenticationFailed("Invalid bewit encoding")
    try:
        decoded = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise AuthenticationFailed("Invalid bewit encoding") from None
    fields = decoded.decode("latin-1").split("\\")
    if len(fields) != 4:
        raise AuthenticationFailed("Invalid bewit structure")
    client_id, exp, mac, ext = fields
    if not client_id or not exp.isdigit() or int(exp) == 0 or not mac:
        raise AuthenticationFailed("Missing bewit attributes")
    remainder = parts.group(4)
    signed_resource = parts.group(1) + (parts.group(2) + remainder if remainder else "")
    return Bewit(id=client_id, exp=int(exp), mac=mac, ext=ext, resource=signed_resource)


def check_bewit_expiry(bewit: Bewit, now: datetime) -> None:
    if bewit.exp <= now.timestamp():
        raise AuthenticationFailed("Access expired")


def verify_bewit(request: HawkRequest, bewit: Bewit, key: str) -> None:
    if request.method.upper() not in ("GET", "HEAD"):
        raise AuthenticationFailed("Invalid method")
    expected = calculate_mac(
        key,
        normalized_string(
            "bewit",
            ts=str(bewit.exp),
            nonce="",
            method="GET",  # a HEAD is verified as the GET it mirrors
            resource=bewit.resource,
            host=request.host,
            port=request.port,
            hash=None,
            ext=bewit.ext,
        ),
    )
    if not timing_safe_equal(expected, bewit.mac):
        raise AuthenticationFailed("Bad mac")
