"""Turning model failures into the precise messages a 400 response carries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydantic
from pydantic_core import ErrorDetails

__all__ = [
    "INPUT_ERROR_TYPE",
    "TaskInputError",
    "describe_validation_error",
    "is_input_error",
    "json_path",
]

# The pydantic error type of rules upstream reports as InputError (queue identity, `**`
# scopes) rather than as a schema failure (InputValidationError).
INPUT_ERROR_TYPE = "task_input"


class TaskInputError(ValueError):
    """A well-formed request that breaks a Queue rule (upstream answers 400 InputError).

    `details` holds the offending values; upstream bakes them into the message too."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def json_path(loc: Sequence[int | str]) -> str:
    """`('metadata', 'source')` → `metadata.source`; `('routes', 3)` → `routes[3]`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _describe(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']}"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "string_too_short":
        minimum = ctx["min_length"]
        return "must not be empty" if minimum == 1 else f"must be at least {minimum} characters"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not allowed (unknown property)"
    if kind in ("greater_than_equal", "less_than_equal"):
        op = ">=" if kind == "greater_than_equal" else "<="
        bound = ctx["ge"] if kind == "greater_than_equal" else ctx["le"]
        return f"must be {op} {bound}"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx['expected']}"
    if kind in ("string_type", "int_type", "dict_type", "list_type", "model_type"):
        noun = {"string_type": "a string", "int_type": "an integer", "list_type": "an array"}
        return f"must be {noun.get(kind, 'an object')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"]


def describe_validation_error(exc: pydantic.ValidationError) -> str:
    """One line per problem, each naming its JSON path, e.g.
    `metadata.source: must match ^(https?://|ssh://|git@)`. Whole-object problems (such as
    inconsistent queue ids) name their fields in the message itself."""
    lines = []
    for error in exc.errors(include_url=False):
        path = json_path(error["loc"])
        message = _describe(error)
        lines.append(f"{path}: {message}" if path else message)
    return "\n".join(lines)


def is_input_error(exc: pydantic.ValidationError) -> bool:
    """True when the body passed the schema but broke a rule upstream answers with
    `InputError`; otherwise the failure is upstream's `InputValidationError`."""
    errors = exc.errors(include_url=False)
    return bool(errors) and all(error["type"] == INPUT_ERROR_TYPE for error in errors)
