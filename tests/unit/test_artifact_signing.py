"""Signed artifact-byte URLs: what they cover, how they expire, how keys survive URLs."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from shared.artifact_bytes import signing

KEY = signing.derive_key("test-secret")
T = 1_900_000_000


def _parts(url: str) -> tuple[str, dict[str, str]]:
    """The key and query of a signed URL, as the server's router will see them."""
    parsed = URL(url)  # the client-side parse (aiohttp, yarl) must not alter the key
    assert parsed.raw_path.startswith(signing.PATH_PREFIX)
    key = unquote(parsed.raw_path[len(signing.PATH_PREFIX) :])
    query = {name: values[0] for name, values in parse_qs(parsed.raw_query_string).items()}
    return key, query


def _verify(url: str, method: str = "GET", now: float = T - 1, content_type: str = "") -> None:
    key, query = _parts(url)
    signing.verify(
        KEY,
        method=method,
        key=key,
        expires=query.get("expires"),
        signature_hex=query.get("signature"),
        now=now,
        content_type=content_type,
    )


def _url(key: str = "t/abc/0/public/x.txt", method: str = "GET", content_type: str = "") -> str:
    return signing.signed_url(
        "http://q.example/", KEY, method=method, key=key, expires=T, content_type=content_type
    )


def test_a_signed_url_verifies_until_it_expires() -> None:
    url = _url()
    assert url.startswith("http://q.example/artifact-bytes/v1/t%2Fabc%2F0%2Fpublic%2Fx.txt?")
    _verify(url, now=T)
    with pytest.raises(signing.SignatureInvalid, match="expired"):
        _verify(url, now=T + 1)


def test_the_signature_covers_method_key_expiry_and_content_type() -> None:
    put = _url(method="PUT", content_type="text/plain")
    _verify(put, method="PUT", content_type="text/plain")
    with pytest.raises(signing.SignatureInvalid, match="Content-Type"):
        _verify(put, method="PUT", content_type="text/html")
    with pytest.raises(signing.SignatureInvalid):
        _verify(put, method="GET")  # an upload URL is no download URL
    key, query = _parts(_url())
    forged = [
        {**query, "expires": str(T + 3600)},
        {**query, "signature": "0" * 64},
        {**query, "signature": "é"},
        {"expires": query["expires"]},
        {**query, "expires": "soon"},
    ]
    for candidate in forged:
        with pytest.raises(signing.SignatureInvalid):
            signing.verify(
                KEY,
                method="GET",
                key=key,
                expires=candidate.get("expires"),
                signature_hex=candidate.get("signature"),
                now=T - 1,
            )
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(
            KEY,
            method="GET",
            key=key + "x",
            expires=query["expires"],
            signature_hex=query["signature"],
            now=T - 1,
        )


def test_another_secret_signs_differently() -> None:
    other = signing.derive_key("other-secret")
    assert other != KEY
    url = signing.signed_url("http://q", other, method="GET", key="t/a/0/x", expires=T)
    with pytest.raises(signing.SignatureInvalid):
        _verify(url)


@pytest.mark.parametrize(
    "name",
    ["public/logs/live.log", "a b/c d", "../../etc/passwd", "x/./y//z/", "100% ?#&=+;", ".."],
)
def test_awkward_names_survive_the_url(name: str) -> None:
    key = f"t/abc/0/{name}"
    url = _url(key)
    assert _parts(url)[0] == key
    _verify(url)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1))
def test_any_printable_name_survives_the_url(name: str) -> None:
    key = f"t/abc/0/{name}"
    assert _parts(_url(key))[0] == key
