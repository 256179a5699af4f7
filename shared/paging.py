"""Continuation tokens and page limits, as upstream's paginated endpoints take them.

A token is opaque to callers: url-safe base64 of a JSON value (a keyset position or an
offset). A token that does not decode is the caller's error (400 InputError).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from shared import errors, jsontext

MAX_LIMIT = 1000


def limit(query: Mapping[str, str], default: int = MAX_LIMIT) -> int:
    text = query.get("limit", str(default))
    if not (text.isascii() and text.isdigit()):  # ^[0-9]+$: no other Unicode digits
        raise errors.InvalidRequestArguments("limit must match ^[0-9]+$")
    return max(1, min(int(text), MAX_LIMIT))


def encode(position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode(query: Mapping[str, str]) -> Any:
    """The position in `continuationToken`, or None when there is none."""
    token = query.get("continuationToken")
    if not token:
        return None
    try:
        return jsontext.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError) as exc:
        raise errors.InputError(f"Invalid continuationToken: {token!r}") from exc


def decode_str(query: Mapping[str, str]) -> str | None:
    position = decode(query)
    if position is not None and not isinstance(position, str):
        raise errors.InputError("Invalid continuationToken")
    return position


def decode_offset(query: Mapping[str, str]) -> int:
    position = decode(query)
    if position is None:
        return 0
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise errors.InputError("Invalid continuationToken")
    return position


def offset_page(items: list[Any], query: Mapping[str, str], key: str) -> dict[str, Any]:
    """One page of an in-memory list, continued by offset (for short listings)."""
    size = limit(query)
    offset = decode_offset(query)
    out: dict[str, Any] = {key: items[offset : offset + size]}
    if offset + size < len(items):
        out["continuationToken"] = encode(offset + size)
    return out


PAGE_QUERY = ("limit", "continuationToken")
