"""Identifier patterns, timestamps and priorities shared by every Queue model (reference §0).

Patterns are upstream's JSON-schema patterns verbatim. pydantic checks them with the Rust
regex engine, where `$` means end of text (as in JavaScript), so `"abc\\n"` never passes.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    model_serializer,
)
from pydantic.functional_serializers import SerializerFunctionWrapHandler

from shared.ids import SLUGID_PATTERN
from shared.timeutil import format_ts, parse_ts, to_utc, truncate_ms

__all__ = [
    "ARTIFACT_NAME_MAX_LENGTH",
    "ARTIFACT_NAME_PATTERN",
    "IDENTIFIER_MAX_LENGTH",
    "IDENTIFIER_PATTERN",
    "MAX_RUN_ID",
    "PRIORITY_LEVELS",
    "PROJECT_ID_MAX_LENGTH",
    "PROJECT_ID_PATTERN",
    "PROVISIONER_ID_PATTERN",
    "RUN_ID_URL_PATTERN",
    "SCOPE_PATTERN",
    "SLUGID_PATTERN",
    "TASK_QUEUE_ID_PATTERN",
    "URL_WORKER_TYPE_PATTERN",
    "WORKER_TYPE_PATTERN",
    "ArtifactName",
    "Identifier",
    "Priority",
    "ProjectId",
    "ProvisionerId",
    "RunId",
    "Scope",
    "Slugid",
    "TaskQueueId",
    "Timestamp",
    "WireModel",
    "WorkerType",
    "parse_timestamp",
    "priorities_at_or_above",
    "priority_to_int",
]

PROVISIONER_ID_PATTERN = r"^[a-zA-Z0-9-_]{1,38}$"
# Schemas use the strict form; URL parameters only check the generic id form.
WORKER_TYPE_PATTERN = r"^[a-z]([-a-z0-9]{0,36}[a-z0-9])?$"
URL_WORKER_TYPE_PATTERN = PROVISIONER_ID_PATTERN
TASK_QUEUE_ID_PATTERN = r"^[a-zA-Z0-9-_]{1,38}/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$"
# schedulerId, workerGroup, workerId
IDENTIFIER_PATTERN = r"^([a-zA-Z0-9-_]*)$"
IDENTIFIER_MAX_LENGTH = 38
PROJECT_ID_PATTERN = r"^([a-zA-Z0-9._/-]*)$"
PROJECT_ID_MAX_LENGTH = 500
RUN_ID_URL_PATTERN = r"^[1-9]*[0-9]+$"
MAX_RUN_ID = 1000
ARTIFACT_NAME_PATTERN = r"^[\x20-\x7e]+$"
ARTIFACT_NAME_MAX_LENGTH = 1024
SCOPE_PATTERN = r"^[\x20-\x7e]*$"

# strict=True: JSON schema never coerces, so neither do we (no bytes or numbers as strings).
Slugid = Annotated[str, StringConstraints(strict=True, pattern=SLUGID_PATTERN)]
ProvisionerId = Annotated[str, StringConstraints(strict=True, pattern=PROVISIONER_ID_PATTERN)]
WorkerType = Annotated[str, StringConstraints(strict=True, pattern=WORKER_TYPE_PATTERN)]
TaskQueueId = Annotated[str, StringConstraints(strict=True, pattern=TASK_QUEUE_ID_PATTERN)]
Identifier = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN
    ),
]
ProjectId = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=PROJECT_ID_MAX_LENGTH, pattern=PROJECT_ID_PATTERN
    ),
]
Scope = Annotated[str, StringConstraints(strict=True, pattern=SCOPE_PATTERN)]
ArtifactName = Annotated[
    str,
    StringConstraints(
        strict=True, max_length=ARTIFACT_NAME_MAX_LENGTH, pattern=ARTIFACT_NAME_PATTERN
    ),
]
RunId = Annotated[int, Field(strict=True, ge=0, le=MAX_RUN_ID)]

# --- timestamps -------------------------------------------------------------------------

# What ajv's `date-time` format accepts (RFC 3339: offset required, `t`/space separators,
# `+hh`, `+hhmm` or `+hh:mm`). Python's fromisoformat alone would also take date-only and
# basic-format strings that upstream rejects. ASCII digits only: `\d` would match others.
_DATE_TIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)"
)


def parse_timestamp(value: object) -> datetime:
    """A UTC datetime in whole milliseconds from a date-time string or a datetime.

    Datetimes are accepted so values loaded from MongoDB (naive UTC) validate too."""
    if isinstance(value, datetime):
        return truncate_ms(to_utc(value))
    if isinstance(value, str) and _DATE_TIME_RE.fullmatch(value):
        try:
            return parse_ts(value[:10] + "T" + value[11:].upper())
        except ValueError:
            pass  # e.g. month 13 or a leap second: fall through to the one message
    raise ValueError(
        "must be an ISO-8601 date-time with a UTC offset, such as 2025-01-02T03:04:05.678Z"
    )


# Python-mode dumps keep datetimes (for MongoDB); JSON-mode dumps give upstream's TS form.
Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    PlainSerializer(format_ts, return_type=str, when_used="json"),
]

# --- priorities -------------------------------------------------------------------------

# `normal` was dropped upstream (issue #8858) and is rejected like any other unknown value.
Priority = Literal["highest", "very-high", "high", "medium", "low", "very-low", "lowest"]
PRIORITY_LEVELS: tuple[Priority, ...] = get_args(Priority)  # highest first
_PRIORITY_INT: dict[str, int] = {
    name: len(PRIORITY_LEVELS) - index for index, name in enumerate(PRIORITY_LEVELS)
}


def priority_to_int(priority: Priority) -> int:
    """7 for `highest` down to 1 for `lowest`: higher sorts first in the pending queue."""
    return _PRIORITY_INT[priority]


def priorities_at_or_above(priority: Priority) -> tuple[Priority, ...]:
    """The priorities whose createTask scope authorises a task of `priority`, highest first.

    A holder of `queue:create-task:high:…` may create `high`, `medium`, … `lowest` tasks."""
    return PRIORITY_LEVELS[: PRIORITY_LEVELS.index(priority) + 1]


# --- base model -------------------------------------------------------------------------


class WireModel(BaseModel):
    """Unset optional fields are omitted from every dump, never written as null."""

    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}
