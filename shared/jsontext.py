"""Parsing JSON that strangers send: UTF-8 only, bounded nesting, no lone surrogates.

Every parser of outside JSON (request bodies, Hawk `ext`, certificates, continuation
tokens) goes through `loads`, so hostile input is a ValueError its caller turns into a
clean refusal instead of a RecursionError (a 500) or a string MongoDB cannot store.
"""

from __future__ import annotations

import json
import re
from typing import Any

# MongoDB refuses documents nested deeper than 100 levels, and a task's payload sits two
# levels down in its document; no real payload comes near this.
MAX_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonRefused(ValueError):
    """Input that is not acceptable JSON for us (the message says why)."""


class JsonTooDeep(JsonRefused):
    pass


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The value of a JSON text, refusing non-UTF-8 bytes, nesting beyond `max_depth`
    and lone UTF-16 surrogates (in strings and object keys)."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"{exc.reason} at byte {exc.start}"
            raise JsonRefused(f"JSON must be UTF-8 encoded ({reason})") from None
    else:
        text = data
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonTooDeep(f"JSON is nested deeper than {max_depth} levels") from None
    check(value, max_depth=max_depth)
    return value


def check(value: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise JsonRefused if a parsed value nests too deep or holds a lone surrogate.
    Iterative, so the check itself cannot recurse too deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise JsonTooDeep(f"JSON is nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key in item:
                    _check_text(key)
                children = item.values()
            else:
                children = item
            stack.extend((child, depth + 1) for child in children)


def _check_text(text: str) -> None:
    # json.loads turns "\ud800" into a lone surrogate: not a character, not encodable
    # as UTF-8, so it can be neither stored nor sent back.
    if _SURROGATE.search(text):
        raise JsonRefused("JSON strings must not contain lone UTF-16 surrogates (\\ud800-\\udfff)")
