"""The CLI's one error boundary: everything a user can cause becomes a one-line message."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pymongo.errors
from taskcluster.exceptions import (
    TaskclusterAuthFailure,
    TaskclusterConnectionError,
    TaskclusterFailure,
    TaskclusterRestFailure,
)

from shared.broker import BrokerError

EXIT_FAILURE = 1  # the request was fine, the world said no (404, 401, connection, ...)
EXIT_USAGE = 2  # the user's input is wrong (bad file, schema error, bad arguments)


class CliError(Exception):
    """A message for stderr and the process's exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return str(text).strip()


def _compact(block: list[str]) -> str:
    """A fenced JSON block of the message (missing scopes) as one short phrase."""
    text = "\n".join(block)
    try:
        value = json.loads(text)
    except ValueError:
        return " ".join(line.strip() for line in block if line.strip())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ", ".join(value)
    return json.dumps(value, separators=(",", ":"))


def essential(message: str) -> str:
    """The part of a protocol error message a user needs, on one line: the statement and
    its details (a schema error's `deadline: is required`, a scope error's missing scopes),
    without the request footer, the schema's name or the full required expression."""
    head = str(message).split("\n---\n", 1)[0]
    head = head.split("This request requires the client to satisfy", 1)[0]
    parts: list[str] = []
    block: list[str] | None = None
    for line in head.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if block is not None:
                parts.append(_compact(block))
            block = None if block is not None else []
            continue
        if block is not None:
            block.append(line)
        elif stripped and not stripped.startswith("Rejecting Schema:") and stripped != "Errors:":
            parts.append(stripped)
    text = ""
    for part in parts:
        text += part if not text else (" " if text[-1] in ":!" else "; ") + part
    return text or first_line(message)


def translate(exc: BaseException) -> CliError | None:
    """Our one-line form of a library error, or None when it is a bug (let it show)."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, TaskclusterAuthFailure) or (
        isinstance(exc, TaskclusterRestFailure) and exc.status_code in (401, 403)
    ):
        status = getattr(exc, "status_code", 401)
        return CliError(f"not authorized ({status}): {essential(str(exc))}")
    if isinstance(exc, TaskclusterRestFailure):
        status = exc.status_code
        if status == 404:
            return CliError(f"not found: {essential(str(exc))}")
        code = EXIT_USAGE if status == 400 else EXIT_FAILURE
        return CliError(f"the queue refused the request ({status}): {essential(str(exc))}", code)
    if isinstance(exc, TaskclusterConnectionError):
        cause = f" ({exc.superExc})" if getattr(exc, "superExc", None) else ""
        return CliError(f"cannot reach the queue{cause}; is TASKCLUSTER_ROOT_URL right?")
    if isinstance(exc, TaskclusterFailure):
        return CliError(first_line(str(exc)))
    if isinstance(exc, BrokerError):
        return CliError(f"{first_line(str(exc))}; is FLOTILLA_AMQP_URL right?")
    if isinstance(exc, pymongo.errors.ConnectionFailure):
        cause = re.split(r" \(configured timeouts|, Timeout: ", first_line(str(exc)))[0]
        return CliError(f"cannot reach MongoDB ({cause}); is FLOTILLA_MONGO_URL right?")
    if isinstance(exc, pymongo.errors.PyMongoError):
        return CliError(f"MongoDB: {first_line(str(exc))}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return CliError(f"HTTP {exc.status} from {exc.request_info.real_url}: {exc.message}")
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError):
        return CliError(f"HTTP request failed: {first_line(str(exc)) or type(exc).__name__}")
    return None
