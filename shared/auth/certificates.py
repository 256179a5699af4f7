"""Temporary credentials (reference 7.4): parse, verify and create certificates.

A certificate is `{version: 1, scopes, start, expiry (epoch ms), seed (44 chars),
signature, issuer?}`. The signature is std-base64 HMAC-SHA256 under the issuer's
accessToken over `version:1[\\nclientId:<name>\\nissuer:<issuer>]\\nseed:..\\nstart:..
\\nexpiry:..\\nscopes:[\\n<scope>...]`; the temporary accessToken is url-safe base64
(no padding) of HMAC-SHA256(issuer accessToken, seed). Only a stored client can be an
issuer, so temporary credentials cannot mint further temporary credentials: there is
no accessToken to look up for them.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared import errors, jsontext
from shared.auth.errors import AuthenticationFailed
from shared.auth.hawk import timing_safe_equal
from shared.auth.scopes import ScopeSet, is_valid_scope
from shared.ids import slugid
from shared.timeutil import from_epoch_ms, to_utc

# Upstream's allowance for clocks that disagree: a certificate is accepted from 5 min
# before its `start` until 5 min after its `expiry`. So a certificate whose expiry passed
# less than 5 min ago still authenticates (as upstream; task credentials rely on it, see
# README "Temporary credentials and clock skew").
CLOCK_SKEW_MS = 5 * 60 * 1000
MAX_LIFETIME_MS = 31 * 24 * 60 * 60 * 1000
MAX_LIFETIME = timedelta(days=31)

Number = int | float


@dataclass(frozen=True, slots=True)
class Certificate:
    version: int
    scopes: tuple[str, ...]
    start: Number
    expiry: Number
    seed: str
    signature: object  # whatever was sent; only a matching string verifies
    issuer: str | None  # None (or "") for unnamed credentials
    has_client_id: bool  # upstream forbids a `clientId` key in unnamed certificates

    @property
    def expires(self) -> datetime:
        return from_epoch_ms(self.expiry)


def certificate_object(value: object) -> dict[str, Any]:
    """The certificate as a dict: an object inside ext, or (leniently) its JSON string."""
    if isinstance(value, str | bytes):
        try:
            value = jsontext.loads(value)
        except jsontext.JsonTooDeep as exc:
            raise errors.MalformedPayload(f"ext.certificate: {exc}") from None
        except ValueError:
            raise AuthenticationFailed("ext.certificate must be a JSON object") from None
    if not isinstance(value, dict):
        raise AuthenticationFailed("ext.certificate must be a JSON object")
    return value


def certificate_issuer(cert: dict[str, Any], credential_name: str) -> str | None:
    """The issuer of a named certificate, checked the way upstream does before loading it."""
    issuer = cert.get("issuer")
    if not issuer:  # JS truthiness: a missing or empty issuer means unnamed
        return None
    if not isinstance(issuer, str):
        raise AuthenticationFailed("ext.certificate.issuer must be a string")
    if issuer == credential_name:
        raise AuthenticationFailed("ext.certificate.issuer must differ from the supplied clientId")
    return issuer


def parse_certificate(value: object) -> Certificate:
    """Validate the shape with upstream's checks and messages."""
    cert = certificate_object(value)
    version = cert.get("version")
    if not _is_number(version) or version != 1:
        raise AuthenticationFailed("ext.certificate.version must be 1")
    seed = cert.get("seed")
    if not isinstance(seed, str):
        raise AuthenticationFailed("ext.certificate.seed must be a string")
    if _js_length(seed) != 44:
        raise AuthenticationFailed("ext.certificate.seed must be 44 characters")
    start, expiry = cert.get("start"), cert.get("expiry")
    if not _is_number(start):
        raise AuthenticationFailed("ext.certificate.start must be a number")
    if not _is_number(expiry):
        raise AuthenticationFailed("ext.certificate.expiry must be a number")
    scopes = cert.get("scopes")
    if not isinstance(scopes, list):
        raise AuthenticationFailed("ext.certificate.scopes must be an array")
    if not all(is_valid_scope(s) for s in scopes):
        raise AuthenticationFailed("ext.certificate.scopes must be an array of valid scopes")
    issuer = cert.get("issuer")
    return Certificate(
        version=1,
        scopes=tuple(scopes),
        start=start,
        expiry=expiry,
        seed=seed,
        signature=cert.get("signature"),
        issuer=issuer if isinstance(issuer, str) and issuer else None,
        has_client_id="clientId" in cert,
    )


def verify_certificate(
    cert: Certificate,
    *,
    credential_name: str,
    issuer_id: str,
    issuer_access_token: str,
    issuer_scopes: ScopeSet,
    now: datetime,
) -> str:
    """Check a parsed certificate against its issuer; return the temporary accessToken.

    `credential_name` is the Hawk id; `issuer_scopes` the issuer's expanded scopes.
    """
    now_ms = to_utc(now).timestamp() * 1000
    if cert.start > now_ms + CLOCK_SKEW_MS:
        raise AuthenticationFailed("ext.certificate.start > now")
    if cert.expiry < now_ms - CLOCK_SKEW_MS:
        raise AuthenticationFailed("ext.certificate.expiry < now")
    if cert.expiry - cert.start > MAX_LIFETIME_MS:
        raise AuthenticationFailed("ext.certificate cannot last longer than 31 days!")
    if issuer_id != credential_name:
        create_scope = f"auth:create-client:{credential_name}"
        if not issuer_scopes.satisfies_scope(create_scope):
            raise AuthenticationFailed(
                f"ext.certificate issuer `{issuer_id}` doesn't have `{create_scope}` "
                "for supplied clientId."
            )
    elif cert.has_client_id:
        raise AuthenticationFailed(
            "ext.certificate.clientId must only be used with ext.certificate.issuer"
        )
    if not issuer_scopes.satisfies({"AllOf": list(cert.scopes)}):
        raise AuthenticationFailed(
            f"ext.certificate issuer `{issuer_id}` doesn't satisfy all certificate scopes "
            f"{', '.join(cert.scopes)}.  The temporary credentials were not generated correctly."
        )
    text = signature_text(
        seed=cert.seed,
        start=cert.start,
        expiry=cert.expiry,
        scopes=cert.scopes,
        name=credential_name if cert.issuer else None,
        issuer=cert.issuer,
    )
    expected = sign(issuer_access_token, text)
    if not isinstance(cert.signature, str) or not timing_safe_equal(cert.signature, expected):
        if cert.issuer:
            raise AuthenticationFailed(
                "ext.certificate.signature is not valid, or wrong clientId provided"
            )
        raise AuthenticationFailed("ext.certificate.signature is not valid")
    return temporary_access_token(issuer_access_token, cert.seed)


def signature_text(
    *,
    seed: str,
    start: Number,
    expiry: Number,
    scopes: Sequence[str],
    name: str | None = None,
    issuer: str | None = None,
) -> str:
    """The signed text. No trailing newline (with zero scopes it ends in `scopes:`)."""
    lines = ["version:1"]
    if name is not None:
        lines += [f"clientId:{name}", f"issuer:{issuer}"]
    lines += [
        f"seed:{seed}",
        f"start:{_js_number(start)}",
        f"expiry:{_js_number(expiry)}",
        "scopes:",
        *scopes,
    ]
    return "\n".join(lines)


def sign(access_token: str, text: str) -> str:
    digest = hmac.digest(access_token.encode("utf-8"), text.encode("utf-8"), "sha256")
    return base64.b64encode(digest).decode("ascii")


def temporary_access_token(issuer_access_token: str, seed: str) -> str:
    digest = hmac.new(issuer_access_token.encode("utf-8"), seed.encode("utf-8"), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode("ascii").rstrip("=")


def create_temporary_credentials(
    client_id: str,
    access_token: str,
    start: datetime,
    expiry: datetime,
    scopes: Sequence[str],
    name: str | None = None,
    *,
    seed: str | None = None,
) -> dict[str, str]:
    """Issue temporary credentials byte-for-byte as `taskcluster.createTemporaryCredentials`.

    start/expiry are truncated to whole seconds (x1000) as the client does; the
    certificate is compact JSON with the client's key order. `seed` is for tests.
    """
    scopes = list(scopes)
    if not all(is_valid_scope(s) for s in scopes):
        raise ValueError("scopes must be valid scope strings")
    if expiry - start > MAX_LIFETIME:
        raise ValueError("temporary credentials may last at most 31 days")
    # utctimetuple() drops sub-second precision, exactly as the official client does.
    start_ms = calendar.timegm(start.utctimetuple()) * 1000
    expiry_ms = calendar.timegm(expiry.utctimetuple()) * 1000
    seed = seed if seed is not None else slugid() + slugid()
    cert: dict[str, Any] = {
        "version": 1,
        "scopes": scopes,
        "start": start_ms,
        "expiry": expiry_ms,
        "seed": seed,
    }
    if name:
        cert["issuer"] = client_id
    cert["signature"] = sign(
        access_token,
        signature_text(
            seed=seed,
            start=start_ms,
            expiry=expiry_ms,
            scopes=scopes,
            name=name or None,
            issuer=client_id if name else None,
        ),
    )
    return {
        "clientId": name or client_id,
        "accessToken": temporary_access_token(access_token, seed),
        "certificate": json.dumps(cert, separators=(",", ":")),
    }


def _is_number(value: object) -> bool:
    # JSON true/false arrive as bool, an int subclass; JS says typeof true !== 'number'.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _js_length(text: str) -> int:
    # JS counts UTF-16 code units.
    return len(text.encode("utf-16-le")) // 2


def _js_number(value: Number) -> str:
    """How JS prints a number in string concatenation (integral floats lose the `.0`)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)
