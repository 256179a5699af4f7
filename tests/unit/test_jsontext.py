"""Parsing outside JSON: depth, surrogates and encoding are refused before they reach us."""

from __future__ import annotations

import pytest

from shared import jsontext


def test_depth_is_bounded_without_recursion() -> None:
    assert jsontext.loads("[" * 64 + "]" * 64) is not None
    for levels in (65, 5000, 200_000):
        with pytest.raises(jsontext.JsonTooDeep):
            jsontext.loads("[" * levels + "]" * levels)
    with pytest.raises(jsontext.JsonTooDeep):
        jsontext.loads('{"a":' * 70 + "1" + "}" * 70)


def test_lone_surrogates_are_refused_in_values_and_keys() -> None:
    for text in ('"\\ud800"', '{"\\udc00": 1}', '["ok", {"x": "a\\udfffb"}]'):
        with pytest.raises(jsontext.JsonRefused, match="surrogate"):
            jsontext.loads(text)
    assert jsontext.loads('"\\ud83d\\ude00"') == "\U0001f600"  # a pair is one character


def test_only_utf8_bytes_are_json() -> None:
    assert jsontext.loads('{"é": 1}'.encode()) == {"é": 1}
    for data in ('{"a": 1}'.encode("utf-16"), '{"a": 1}'.encode("utf-32"), b'{"a": "\xff"}'):
        with pytest.raises(jsontext.JsonRefused):
            jsontext.loads(data)
