"""Signed, expiring URLs for the embedded store's bytes. Pure: no I/O, no clock.

A URL is `<base>/artifact-bytes/v1/<key>?expires=<unix s>&signature=<hex>`, where the
signature is HMAC-SHA256 over the method, the key, `expires` and (for PUT) the
Content-Type the uploader must send. Any replica holding the secret verifies it.

The key is percent-encoded as ONE path segment (`/` as `%2F`): artifact names may hold
`.`, `..` or empty segments, which clients (yarl, curl) would otherwise normalise away.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import quote, urlencode

from shared import errors

PATH_PREFIX = "/artifact-bytes/v1/"
# Signing keys are derived from the service secret, so a leaked URL signature says
# nothing about the key used for the other things that secret protects.
_KEY_LABEL = b"flotilla artifact-bytes url signing v1"


class SignatureInvalid(errors.ApiError):
    code, status = "SignatureInvalid", 403


def derive_key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), _KEY_LABEL, hashlib.sha256).digest()


def signature(
    signing_key: bytes,
    *,
    method: str,
    key: str,
    expires: int,
    content_type: str = "",
    length: int | None = None,
) -> str:
    # JSON keeps the fields unambiguous whatever characters the key or content type hold.
    fields: list[object] = [method, key, expires, content_type]
    if length is not None:  # a PUT of exactly this many bytes
        fields.append(length)
    message = json.dumps(fields, separators=(",", ":"))
    return hmac.new(signing_key, message.encode(), hashlib.sha256).hexdigest()


def signed_url(
    base: str,
    signing_key: bytes,
    *,
    method: str,
    key: str,
    expires: int,
    content_type: str = "",
    length: int | None = None,
    path_prefix: str = PATH_PREFIX,
) -> str:
    sig = signature(
        signing_key,
        method=method,
        key=key,
        expires=expires,
        content_type=content_type,
        length=length,
    )
    query = {"expires": str(expires), "signature": sig}
    if length is not None:
        query["length"] = str(length)
    return f"{base.rstrip('/')}{path_prefix}{quote(key, safe='')}?{urlencode(query)}"


def verify(
    signing_key: bytes,
    *,
    method: str,
    key: str,
    expires: str | None,
    signature_hex: str | None,
    now: float,
    content_type: str = "",
    length: int | None = None,
) -> None:
    """Raise SignatureInvalid unless the URL's signature matches and has not expired."""
    if expires is None or signature_hex is None:
        raise SignatureInvalid("The URL must carry `expires` and `signature` query parameters.")
    try:
        expires_at = int(expires)
    except ValueError:
        raise SignatureInvalid("`expires` must be a Unix time in whole seconds.") from None
    expected = signature(
        signing_key,
        method=method,
        key=key,
        expires=expires_at,
        content_type=content_type,
        length=length,
    )
    if not hmac.compare_digest(expected.encode(), signature_hex.lower().encode()):
        hint = (
            " (a PUT must send the Content-Type the URL was issued for)" if method == "PUT" else ""
        )
        raise SignatureInvalid(f"The signature does not match{hint}.")
    if now > expires_at:
        raise SignatureInvalid("The URL has expired; ask the queue for a fresh one.")
