"""Task and graph files: YAML (or JSON, which YAML reads too) into plain JSON values."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import yaml

from cli.errors import EXIT_USAGE, CliError, first_line


def _plain(value: Any) -> Any:
    """YAML reads unquoted timestamps as datetimes; the queue wants the JSON strings."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def parse_document(text: str, source: str) -> Any:
    """The file's value; a CliError naming `source` and the line for anything unreadable."""
    if source.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"{source}:{exc.lineno}: bad JSON: {exc.msg}", EXIT_USAGE) from exc
    try:
        return _plain(yaml.safe_load(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = exc.problem or exc.context or "unreadable"
        raise CliError(f"{where}: bad YAML: {first_line(problem)}", EXIT_USAGE) from exc
    except yaml.YAMLError as exc:
        raise CliError(f"{source}: bad YAML: {first_line(str(exc))}", EXIT_USAGE) from exc


def load_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text ({exc.reason})", EXIT_USAGE) from exc
    return parse_document(text, str(path))


def require_mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        kind = "nothing" if value is None else type(value).__name__
        raise CliError(f"{what} must be a mapping, not {kind}", EXIT_USAGE)
    return value
