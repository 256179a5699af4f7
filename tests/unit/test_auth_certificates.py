"""Temporary credentials: byte-for-byte creation and upstream's verification rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import taskcluster

from shared.auth.certificates import (
    Certificate,
    certificate_issuer,
    create_temporary_credentials,
    parse_certificate,
    sign,
    signature_text,
    temporary_access_token,
    verify_certificate,
)
from shared.auth.errors import AuthenticationFailed
from shared.auth.scopes import ScopeSet
from shared.timeutil import from_epoch_ms, utcnow

ISSUER = "project/ci/issuer"
TOKEN = "issuerSecretToken-0123456789abcdefABCDEF01"
NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def official(scopes: list[str], name: str | None = None, **span: float) -> dict[str, Any]:
    start = NOW - timedelta(minutes=1)
    expiry = start + timedelta(**(span or {"hours": 1}))
    creds = taskcluster.createTemporaryCredentials(ISSUER, TOKEN, start, expiry, scopes, name=name)
    return {
        "clientId": creds["clientId"],
        "accessToken": creds["accessToken"].decode(),  # the client returns bytes
        "certificate": creds["certificate"],
    }


@pytest.mark.parametrize("name", [None, "task-client/abc/0/on/g/w/until/123"])
@pytest.mark.parametrize("scopes", [[], ["queue:get-artifact:private/*"], ["a", "b*", "c:<x>"]])
def test_created_credentials_equal_the_official_clients(
    name: str | None, scopes: list[str]
) -> None:
    theirs = official(scopes, name)
    seed = json.loads(theirs["certificate"])["seed"]
    start = NOW - timedelta(minutes=1)
    ours = create_temporary_credentials(
        ISSUER, TOKEN, start, start + timedelta(hours=1), scopes, name, seed=seed
    )
    assert ours == theirs


def test_created_credentials_verify_and_use_whole_seconds() -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC)
    creds = create_temporary_credentials(ISSUER, TOKEN, start, start + timedelta(days=31), ["a"])
    cert_object = json.loads(creds["certificate"])
    assert cert_object["start"] == 1767323045000 and len(cert_object["seed"]) == 44
    assert list(cert_object) == ["version", "scopes", "start", "expiry", "seed", "signature"]
    key = verify_certificate(
        parse_certificate(creds["certificate"]),
        credential_name=ISSUER,
        issuer_id=ISSUER,
        issuer_access_token=TOKEN,
        issuer_scopes=ScopeSet(["a"]),
        now=start,
    )
    assert key == creds["accessToken"]


def test_create_refuses_what_upstream_would_refuse() -> None:
    with pytest.raises(ValueError):
        create_temporary_credentials(ISSUER, TOKEN, NOW, NOW + timedelta(days=31, seconds=1), [])
    with pytest.raises(ValueError):
        create_temporary_credentials(ISSUER, TOKEN, NOW, NOW, ["bad\nscope"])


def test_signature_text_layout() -> None:
    assert signature_text(seed="S", start=1, expiry=2.0, scopes=[]) == (
        "version:1\nseed:S\nstart:1\nexpiry:2\nscopes:"
    )
    assert signature_text(seed="S", start=1, expiry=2, scopes=["x", "y"], name="n", issuer="i") == (
        "version:1\nclientId:n\nissuer:i\nseed:S\nstart:1\nexpiry:2\nscopes:\nx\ny"
    )
    assert signature_text(seed="S", start=1.5, expiry=2, scopes=[]).endswith(
        "start:1.5\nexpiry:2\nscopes:"
    )


def test_temporary_access_token_is_urlsafe_unpadded() -> None:
    token = temporary_access_token(TOKEN, "s" * 44)
    assert len(token) == 43 and "=" not in token and "+" not in token and "/" not in token


# --- parsing ---------------------------------------------------------------------------


def good_cert(**changes: Any) -> dict[str, Any]:
    cert: dict[str, Any] = json.loads(official(["a"])["certificate"])
    cert.update(changes)
    return {k: v for k, v in cert.items() if v is not DROP}


DROP = object()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 2}, "ext.certificate.version must be 1"),
        ({"version": True}, "ext.certificate.version must be 1"),
        ({"version": "1"}, "ext.certificate.version must be 1"),
        ({"version": DROP}, "ext.certificate.version must be 1"),
        ({"seed": 5}, "ext.certificate.seed must be a string"),
        ({"seed": "s" * 43}, "ext.certificate.seed must be 44 characters"),
        ({"start": "0"}, "ext.certificate.start must be a number"),
        ({"start": True}, "ext.certificate.start must be a number"),
        ({"expiry": None}, "ext.certificate.expiry must be a number"),
        ({"scopes": "a"}, "ext.certificate.scopes must be an array"),
        ({"scopes": ["ok", 1]}, "ext.certificate.scopes must be an array of valid scopes"),
        ({"scopes": ["tab\t"]}, "ext.certificate.scopes must be an array of valid scopes"),
    ],
)
def test_parse_rejects_malformed_certificates(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        parse_certificate(good_cert(**changes))
    assert info.value.message == message


@pytest.mark.parametrize("value", ["not json", "[1]", 5, ["x"]])
def test_parse_requires_an_object(value: object) -> None:
    with pytest.raises(AuthenticationFailed, match="must be a JSON object"):
        parse_certificate(value)


def test_parse_accepts_object_or_json_string() -> None:
    creds = official(["a"], name="named")
    assert parse_certificate(creds["certificate"]) == parse_certificate(
        json.loads(creds["certificate"])
    )
    assert parse_certificate(creds["certificate"]).issuer == ISSUER


def test_certificate_issuer_rules() -> None:
    assert certificate_issuer({"issuer": ""}, "x") is None
    assert certificate_issuer({}, "x") is None
    assert certificate_issuer({"issuer": "i"}, "x") == "i"
    with pytest.raises(AuthenticationFailed, match="must be a string"):
        certificate_issuer({"issuer": 5}, "x")
    with pytest.raises(AuthenticationFailed, match="must differ"):
        certificate_issuer({"issuer": "x"}, "x")


# --- verification ----------------------------------------------------------------------


def check(
    cert: Certificate | dict[str, Any] | str,
    *,
    name: str = ISSUER,
    issuer_scopes: list[str] | None = None,
    now: datetime = NOW,
    token: str = TOKEN,
) -> str:
    parsed = cert if isinstance(cert, Certificate) else parse_certificate(cert)
    return verify_certificate(
        parsed,
        credential_name=name,
        issuer_id=parsed.issuer or name,
        issuer_access_token=token,
        issuer_scopes=ScopeSet(issuer_scopes if issuer_scopes is not None else ["*"]),
        now=now,
    )


def test_official_unnamed_and_named_certificates_verify() -> None:
    unnamed = official(["queue:a", "queue:b"])
    assert check(unnamed["certificate"], issuer_scopes=["queue:*"]) == unnamed["accessToken"]
    named = official(["queue:a"], name="temp/one")
    assert (
        check(
            named["certificate"],
            name="temp/one",
            issuer_scopes=["queue:a", "auth:create-client:temp/*"],
        )
        == named["accessToken"]
    )


def test_start_and_expiry_have_five_minutes_of_grace() -> None:
    cert = official(["a"])["certificate"]
    parsed = parse_certificate(cert)
    starts, expires = from_epoch_ms(parsed.start), from_epoch_ms(parsed.expiry)
    check(cert, now=starts - timedelta(minutes=5))
    with pytest.raises(AuthenticationFailed, match=r"ext.certificate.start > now"):
        check(cert, now=starts - timedelta(minutes=5, milliseconds=1))
    check(cert, now=expires + timedelta(minutes=5))
    with pytest.raises(AuthenticationFailed, match=r"ext.certificate.expiry < now"):
        check(cert, now=expires + timedelta(minutes=5, milliseconds=1))


def test_lifetime_is_at_most_31_days() -> None:
    exactly = official(["a"], days=31)["certificate"]
    check(exactly, now=NOW + timedelta(days=1))
    # The official client refuses to make a longer one, so sign one ourselves.
    parsed = parse_certificate(exactly)
    longer = good_cert(start=parsed.start, expiry=parsed.start + 31 * 86_400_000 + 1)
    longer["signature"] = sign(
        TOKEN,
        signature_text(
            seed=longer["seed"], start=longer["start"], expiry=longer["expiry"], scopes=["a"]
        ),
    )
    with pytest.raises(AuthenticationFailed, match="cannot last longer than 31 days"):
        check(longer, now=NOW + timedelta(days=1))


def test_named_needs_create_client_scope() -> None:
    named = official(["a"], name="temp/one")["certificate"]
    with pytest.raises(AuthenticationFailed, match="doesn't have `auth:create-client:temp/one`"):
        check(named, name="temp/one", issuer_scopes=["a"])


def test_unnamed_must_not_carry_client_id() -> None:
    cert = good_cert(clientId="sneaky")
    with pytest.raises(AuthenticationFailed, match="clientId must only be used with"):
        check(cert)


def test_issuer_must_hold_the_certificate_scopes() -> None:
    cert = official(["queue:a", "secrets:b"])["certificate"]
    with pytest.raises(AuthenticationFailed, match="doesn't satisfy all certificate scopes"):
        check(cert, issuer_scopes=["queue:*"])


@pytest.mark.parametrize(
    "changes",
    [
        {"scopes": ["a", "b"]},
        {"seed": "x" * 44},
        {"signature": "AAAA"},
        {"signature": 5},
        {"signature": DROP},
    ],
)
def test_bad_signatures_are_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(AuthenticationFailed, match="ext.certificate.signature is not valid"):
        check(good_cert(**changes))


def test_wrong_issuer_token_or_name_is_a_bad_signature() -> None:
    named = official(["a"], name="temp/one")["certificate"]
    with pytest.raises(AuthenticationFailed, match="signature is not valid, or wrong clientId"):
        check(named, name="temp/other")
    with pytest.raises(AuthenticationFailed, match="signature is not valid"):
        check(official(["a"])["certificate"], token="another-token-entirely-0123456789abcd")


def test_float_times_sign_like_javascript() -> None:
    cert = good_cert()
    cert["start"] = float(cert["start"])
    cert["expiry"] = float(cert["expiry"])
    check(cert)  # "start:1767...000", not "start:1767...000.0"


def test_real_clock_round_trip() -> None:
    now = utcnow()
    creds = create_temporary_credentials(ISSUER, TOKEN, now, now + timedelta(hours=1), ["x"], "n")
    assert check(creds["certificate"], name="n", now=now) == creds["accessToken"]
