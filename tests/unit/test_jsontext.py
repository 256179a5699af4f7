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

