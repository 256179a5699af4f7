"""Completing a task definition before createTask: times, metadata. Pure functions."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from taskcluster.utils import fromNow

from cli.errors import EXIT_USAGE, CliError
from shared.models.task import default_expires

DEFAULT_DEADLINE = "1 day"
TIME_FIELDS = ("created", "deadline", "expires")


def json_time(moment: datetime.datetime) -> str:
    moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def resolve_time(value: Any, now: datetime.datetime, field: str, where: str) -> datetime.datetime:
    """An ISO 8601 time, or an offset from now such as `2 hours` (taskcluster's fromNow)."""
    if not isinstance(value, str):
        raise CliError(f"{where}: {field} must be a time string, not {value!r}", EXIT_USAGE)
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            return fromNow(value, dateObj=now.replace(tzinfo=None)).replace(tzinfo=datetime.UTC)
        except (ValueError, AttributeError):
            raise CliError(
                f"{where}: {field} {value!r} is neither an ISO time nor an offset like '2 hours'",
                EXIT_USAGE,
            ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def fill_task(
    definition: dict[str, Any],
    *,
    now: datetime.datetime,
    name: str,
    owner: str,
    source: str,
    where: str,
) -> dict[str, Any]:
    """A copy with `created` (now), `deadline` (+1 day), `expires` (deadline + 1 year, as
    the queue would) and missing metadata filled; relative times resolved against `now`."""
    task = copy.deepcopy(definition)
    created = resolve_time(task.get("created", json_time(now)), now, "created", where)
    deadline = resolve_time(task.get("deadline", DEFAULT_DEADLINE), now, "deadline", where)
    if "expires" in task:
        expires = resolve_time(task["expires"], now, "expires", where)
    else:
        expires = default_expires(deadline)
    task.update(
        created=json_time(created), deadline=json_time(deadline), expires=json_time(expires)
    )
    metadata = task.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise CliError(f"{where}: metadata must be a mapping", EXIT_USAGE)
    task["metadata"] = {
        "name": name,
        "description": "",
        "owner": owner,
        "source": source,
        **metadata,
    }
    task.setdefault("payload", {})
    return task
