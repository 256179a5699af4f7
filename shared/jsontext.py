"""Parsing JSON that strangers send: bounded nesting.

Every parser of outside JSON (request bodies, Hawk `ext`, certificates, continuation
tokens) goes through `loads`, so hostile input is a ValueError its caller turns into a
clean refusal instead of a RecursionError (a 500).
"""

from __future__ import annotations

import json
from typing import Any

# MongoDB refuses documents nested deeper than 100 levels, and a task's payload sits two
# levels down in its document; no real payload comes near this.
MAX_DEPTH = 64


class JsonRefused(ValueError):
    """Input that is not acceptable JSON for us (the message says why)."""


class JsonTooDeep(JsonRefused):
    pass


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The value of a JSON text, refusing nesting beyond `max_depth`."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise JsonTooDeep(f"JSON is nested deeper than {max_depth} levels") from None
    check(value, max_depth=max_depth)
    return value


def check(value: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise JsonRefused if a parsed value nests too deep.
    Iterative, so the check itself cannot recurse too deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise JsonTooDeep(f"JSON is nested deeper than {max_depth} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)

