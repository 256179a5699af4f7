"""Hawk primitives against mohawk, the library the official client signs with."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import timedelta
from urllib.parse import urlsplit

import mohawk
import mohawk.util
import pytest
import taskcluster

from shared.auth.errors import AuthenticationFailed
from shared.auth.hawk import (
    HawkHeader,
    HawkRequest,
    calculate_mac,
    calculate_payload_hash,
    check_bewit_expiry,
    decode_ext,
    has_bewit,
    normalized_string,
    parse_authorization_header,
    parse_bewit,
    request_port,
    split_host_header,
    verify_bewit,
    verify_header,
)
from shared.timeutil import utcnow

KEY = "k" * 22 + "eyEyEyEyEyEyEyEyEyEyEy"
ROOT = "http://127.0.0.1:8080"


def signed(
    method: str,
    url: str,
    body: str = "",
    content_type: str = "",
    ext: str | bytes = "e30=",
    **extra: object,
) -> HawkRequest:
    """Sign as taskcluster/client.py does, and describe the request as a server sees it."""
    sender = mohawk.Sender(
        credentials={"id": "tester", "key": KEY, "algorithm": "sha256"},
        ext=ext,
        url=url,
        content=body,
        content_type=content_type,
        method=method,
        **extra,  # type: ignore[arg-type]
    )
    parts = urlsplit(url)
    return HawkRequest(
        method=method,
        resource=parts.path + (f"?{parts.query}" if parts.query else ""),
        host=parts.hostname or "",
        port=parts.port or 80,
        authorization=sender.request_header,
        content_type=content_type or None,
        body=body.encode(),
    )


def verify(request: HawkRequest, key: str = KEY, **shift: float) -> None:
    assert request.authorization is not None
    header = parse_authorization_header(request.authorization)
    verify_header(request, header, key, utcnow() + timedelta(**shift))


# --- header parsing -------------------------------------------------------------------


def test_parse_header_as_mohawk_writes_it() -> None:
    request = signed("GET", f"{ROOT}/api/queue/v1/ping")
    header = parse_authorization_header(request.authorization or "")
    assert header.id == "tester" and header.ext == "e30=" and header.hash
    assert header.ts.isdigit() and len(header.nonce) == 6 and header.app is None
    assert mohawk.util.parse_authorization_header(request.authorization) == {
        k: v for k, v in dataclasses.asdict(header).items() if v is not None
    }


def test_parse_header_with_app_and_dlg() -> None:
    header = parse_authorization_header(
        'hawk id="a", ts="1", nonce="n", mac="m=", app="ap", dlg="dl"'
    )
    assert header == HawkHeader(id="a", ts="1", nonce="n", mac="m=", app="ap", dlg="dl")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "Invalid header syntax"),
        ("Hawk", "Invalid header syntax"),
        ("Basic dXNlcjpwYXNz", "Unsupported authorization scheme"),
        ('Hawk id="a", ts="1", nonce="n"', "Missing attributes"),
        ('Hawk id="", ts="1", nonce="n", mac="m"', "Missing attributes"),
        ('Hawk id="a", ts="1", nonce="n", mac="m", foo="x"', "Unknown attribute: foo"),
        ('Hawk id="a", id="b", ts="1", nonce="n", mac="m"', "Duplicate attribute: id"),
        ('Hawk id="a\u00e9", ts="1", nonce="n", mac="m"', "Bad attribute value: id"),
        ('Hawk id="a" ts="1", nonce="n", mac="m"', "Bad header format"),
        ('Hawk id="a", ts="1", nonce="n", mac="m", garbage', "Bad header format"),
        ('Hawk id="a\\"b", ts="1", nonce="n", mac="m"', "Bad header format"),
        ("Hawk " + 'ext="' + "x" * 70_000 + '"', "Header length too long"),
    ],
)
def test_parse_header_errors(header: str, message: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        parse_authorization_header(header)
    assert info.value.message == message


# --- host and port --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host_header", "expected"),
    [
        ("example.com", ("example.com", None)),
        ("example.com:8080", ("example.com", 8080)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:8443", ("::1", 8443)),
        ("[::1]", ("::1", None)),
        ("host:notaport", ("host:notaport", None)),
        (" spaced:1 ", ("spaced", 1)),
    ],
)
def test_split_host_header(host_header: str, expected: tuple[str, int | None]) -> None:
    assert split_host_header(host_header) == expected


@pytest.mark.parametrize(
    ("host", "fwd_port", "fwd_proto", "tls", "expected"),
    [
        ("q.example:8080", None, None, False, 8080),
        ("q.example", None, None, False, 80),
        ("q.example", None, None, True, 443),
        ("q.example:8080", None, "https", False, 443),
        ("q.example:8080", None, "http", False, 8080),
        ("q.example:8080", "9000", "https", False, 9000),
        ("q.example", "junk", None, True, 443),
        (None, None, None, False, 80),
    ],
)
def test_request_port(
    host: str | None, fwd_port: str | None, fwd_proto: str | None, tls: bool, expected: int
) -> None:
    assert request_port(host, fwd_port, fwd_proto, tls) == expected


# --- MAC, payload hash ----------------------------------------------------------------


def test_mac_matches_mohawk() -> None:
    url = f"{ROOT}/api/queue/v1/claim-work/prov%2Fwt?x=1"
    resource = mohawk.base.Resource(
        credentials={"id": "i", "key": KEY, "algorithm": "sha256"},
        url=url,
        method="post",
        timestamp=1700000000,
        nonce="abc",
        ext="e30=",
        app="app",
        dlg="dlg",
    )
    theirs = mohawk.util.calculate_mac("header", resource, "hash=").decode()
    text = normalized_string(
        "header",
        ts="1700000000",
        nonce="abc",
        method="post",
        resource="/api/queue/v1/claim-work/prov%2Fwt?x=1",
        host="127.0.0.1",
        port=8080,
        hash="hash=",
        ext="e30=",
        app="app",
        dlg="dlg",
    )
    assert calculate_mac(KEY, text) == theirs


@pytest.mark.parametrize(
    ("body", "content_type", "theirs_type"),
    [
        (b"", None, ""),
        (b'{"a":1}', "application/json", "application/json"),
        (b'{"a":1}', "Application/JSON; charset=utf-8", "application/json"),
        (b"\x00\xff binary", "application/octet-stream", "application/octet-stream"),
    ],
)
def test_payload_hash_matches_mohawk(
    body: bytes, content_type: str | None, theirs_type: str
) -> None:
    theirs = mohawk.util.calculate_payload_hash(body, "sha256", theirs_type).decode()
    assert calculate_payload_hash(body, content_type) == theirs


# --- verification of real signatures --------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/queue/v1/task/abc", ""),
        ("GET", "/api/queue/v1/task-group/abc/list?limit=10&continuationToken=a%2Fb", ""),
        ("POST", "/api/queue/v1/claim-work/prov%2Fwt", '{"workerGroup":"g","workerId":"w"}'),
        ("PUT", "/api/queue/v1/task/abc", '{"a":1}'),
        ("POST", "/api/queue/v1/task/abc/runs/0/completed", ""),
        ("DELETE", "/api/queue/v1/x", ""),
    ],
)
def test_real_signatures_verify(method: str, path: str, body: str) -> None:
    verify(signed(method, ROOT + path, body, "application/json" if body else ""))


def tamper(request: HawkRequest, **changes: object) -> HawkRequest:
    return dataclasses.replace(request, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "PUT"}, "Bad mac"),
        ({"resource": "/api/queue/v1/claim-work/prov/wt"}, "Bad mac"),  # decoded %2F
        ({"resource": "/api/queue/v1/claim-work/prov%2Fwt?x=1"}, "Bad mac"),
        ({"host": "127.0.0.2"}, "Bad mac"),
        ({"port": 80}, "Bad mac"),
        ({"body": b'{"workerGroup":"g","workerId":"W"}'}, "Bad payload hash"),
        ({"content_type": "text/plain"}, "Bad payload hash"),
        ({"content_type": None}, "Bad payload hash"),
    ],
)
def test_tampering_is_detected(change: dict[str, object], message: str) -> None:
    request = signed(
        "POST",
        f"{ROOT}/api/queue/v1/claim-work/prov%2Fwt",
        '{"workerGroup":"g","workerId":"w"}',
        "application/json",
    )
    with pytest.raises(AuthenticationFailed) as info:
        verify(tamper(request, **change))
    assert info.value.message == message


def test_host_case_and_content_type_parameters_do_not_matter() -> None:
    request = signed("POST", f"{ROOT}/p", "{}", "application/json")
    verify(
        tamper(request, host="127.0.0.1".upper(), content_type="Application/Json; charset=utf-8")
    )


def test_wrong_key_or_tampered_mac() -> None:
    request = signed("GET", f"{ROOT}/p")
    with pytest.raises(AuthenticationFailed, match="Bad mac"):
        verify(request, key="x" * 44)
    header = request.authorization or ""
    mac = parse_authorization_header(header).mac
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    with pytest.raises(AuthenticationFailed, match="Bad mac"):
        verify(tamper(request, authorization=header.replace(mac, flipped)))


@pytest.mark.parametrize(
    ("minutes", "ok"), [(-14.9, True), (14.9, True), (-15.1, False), (15.1, False)]
)
def test_clock_skew_is_fifteen_minutes(minutes: float, ok: bool) -> None:
    request = signed("GET", f"{ROOT}/p")
    if ok:
        verify(request, minutes=minutes)
    else:
        with pytest.raises(AuthenticationFailed, match="Stale timestamp"):
            verify(request, minutes=minutes)


def test_a_request_without_hash_is_not_payload_checked() -> None:
    # Node clients may omit the hash; upstream then does not check the body.
    sender = mohawk.Sender(
        credentials={"id": "tester", "key": KEY, "algorithm": "sha256"},
        url=f"{ROOT}/p",
        method="POST",
        always_hash_content=False,
    )
    assert "hash=" not in sender.request_header
    request = HawkRequest("POST", "/p", "127.0.0.1", 8080, sender.request_header)
    verify(tamper(request, body=b"anything", content_type="application/json"))


# --- ext ------------------------------------------------------------------------------


def _ext_variants() -> list[str]:
    # A payload whose base64 uses both alphabet-specific characters and needs padding.
    for n in range(500):
        text = json.dumps({"authorizedScopes": [f"s:{n}?>>~~"]}, separators=(",", ":"))
        std = base64.b64encode(text.encode()).decode()
        if "+" in std and "/" in std and std.endswith("="):
            url = base64.urlsafe_b64encode(text.encode()).decode()
            return [std, std.rstrip("="), url, url.rstrip("=")]
    raise AssertionError("no suitable payload found")


@pytest.mark.parametrize("ext", _ext_variants())
def test_ext_in_either_alphabet_padded_or_not(ext: str) -> None:
    assert decode_ext(ext)["authorizedScopes"][0].startswith("s:")
    verify(signed("GET", f"{ROOT}/p", ext=ext))


@pytest.mark.parametrize(
    ("ext", "message"),
    [
        ("e30", None),
        ("e30=", None),
        ("not base64!", "Failed to parse ext"),
        ("e3=0", "Failed to parse ext"),
        ("a", "Failed to parse ext"),
        (base64.b64encode(b"not json").decode(), "Failed to parse ext"),
        (base64.b64encode(b"\xff\xfe").decode(), "Failed to parse ext"),
        (base64.b64encode(b"NaN").decode(), "Failed to parse ext"),
        (base64.b64encode(b"[1]").decode(), "ext must be a JSON object"),
        (base64.b64encode(b"null").decode(), "ext must be a JSON object"),
    ],
)
def test_decode_ext(ext: str, message: str | None) -> None:
    if message is None:
        assert decode_ext(ext) == {}
    else:
        with pytest.raises(AuthenticationFailed) as info:
            decode_ext(ext)
        assert info.value.message == message


# --- bewit ----------------------------------------------------------------------------


def client(**options: object) -> taskcluster.Queue:
    return taskcluster.Queue(
        {"rootUrl": ROOT, "credentials": {"clientId": "tester", "accessToken": KEY}, **options}
    )


def bewit_request(url: str, method: str = "GET") -> HawkRequest:
    parts = urlsplit(url)
    return HawkRequest(
        method, f"{parts.path}?{parts.query}", parts.hostname or "", parts.port or 80
    )


def test_bewit_from_the_official_client_verifies() -> None:
    request = bewit_request(client().buildSignedUrl("task", "abc"))
    assert has_bewit(request.resource)
    bewit = parse_bewit(request.resource)
    assert (bewit.id, bewit.ext, bewit.resource) == ("tester", "e30=", "/api/queue/v1/task/abc")
    check_bewit_expiry(bewit, utcnow())
    verify_bewit(request, bewit, KEY)
    verify_bewit(tamper(request, method="HEAD"), bewit, KEY)


def test_bewit_with_query_and_percent_encoding() -> None:
    url = client().buildSignedUrl(
        "listTaskGroup", "abc", query={"limit": 5, "continuationToken": "a/b c"}
    )
    request = bewit_request(url)
    bewit = parse_bewit(request.resource)
    assert bewit.resource == "/api/queue/v1/task-group/abc/list?limit=5&continuationToken=a%2Fb+c"
    verify_bewit(request, bewit, KEY)
    with pytest.raises(AuthenticationFailed, match="Bad mac"):
        verify_bewit(tamper(request, host="other"), bewit, KEY)
    with pytest.raises(AuthenticationFailed, match="Bad mac"):
        verify_bewit(tamper(request, port=81), bewit, KEY)
    with pytest.raises(AuthenticationFailed, match="Bad mac"):
        verify_bewit(request, bewit, "x" * 44)
    with pytest.raises(AuthenticationFailed, match="Invalid method"):
        verify_bewit(tamper(request, method="POST"), bewit, KEY)


def test_bewit_parameter_first_keeps_the_rest_of_the_query() -> None:
    url = client().buildSignedUrl("listTaskGroup", "abc", query={"limit": 5})
    path, query = urlsplit(url).path, urlsplit(url).query
    first, bewit_param = query.split("&")
    moved = f"{path}?{bewit_param}&{first}"
    assert parse_bewit(moved).resource == f"{path}?{first}"


def test_bewit_expiry() -> None:
    bewit = parse_bewit(
        bewit_request(client().buildSignedUrl("task", "abc", expiration=60)).resource
    )
    check_bewit_expiry(bewit, utcnow())
    with pytest.raises(AuthenticationFailed, match="Access expired"):
        check_bewit_expiry(bewit, utcnow() + timedelta(seconds=61))


def _raw_bewit(text: str) -> str:
    return "/p?bewit=" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ("/p?bewit=", "Empty bewit"),
        ("/p?bewit=abc+def", "Invalid bewit encoding"),
        ("/p?bewit=abcde", "Invalid bewit encoding"),
        (_raw_bewit("id\\123\\mac"), "Invalid bewit structure"),
        (_raw_bewit("id\\123\\mac\\ext\\more"), "Invalid bewit structure"),
        (_raw_bewit("\\123\\mac\\"), "Missing bewit attributes"),
        (_raw_bewit("id\\soon\\mac\\"), "Missing bewit attributes"),
        (_raw_bewit("id\\123\\\\"), "Missing bewit attributes"),
        ("/p?nobewit=1", "Missing bewit"),
    ],
)
def test_bewit_errors(resource: str, message: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        parse_bewit(resource)
    assert info.value.message == message


def test_has_bewit() -> None:
    assert has_bewit("/a?bewit=x") and has_bewit("/a?b=1&bewit=")
    assert not has_bewit("/a?xbewit=1") and not has_bewit("/a/bewit=1") and not has_bewit("/a")
