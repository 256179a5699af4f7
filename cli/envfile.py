"""`.flotilla/env`: the KEY=VALUE file `make up` writes. Explicit environment variables win."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from cli.errors import EXIT_USAGE, CliError

ENV_FILE_VARIABLE = "FLOTILLA_ENV_FILE"
_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def parse_env_file(text: str, source: str = ".flotilla/env") -> dict[str, str]:
    """`KEY=VALUE` and `export KEY=VALUE` lines; `#` comments and blank lines are skipped;
    values may be quoted as a shell would quote them."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise CliError(f"{source}:{number}: expected KEY=VALUE, got {line[:60]!r}", EXIT_USAGE)
        key, value = match.groups()
        try:
            words = shlex.split(value, comments=True)
        except ValueError as exc:
            raise CliError(f"{source}:{number}: {exc}", EXIT_USAGE) from exc
        values[key] = " ".join(words)
    return values


def find_env_file(cwd: Path, environ: Mapping[str, str]) -> Path | None:
    """`$FLOTILLA_ENV_FILE` if set (empty: none), else the nearest `.flotilla/env` at or
    above `cwd`."""
    if ENV_FILE_VARIABLE in environ:
        named = environ[ENV_FILE_VARIABLE]
        return Path(named) if named else None
    for directory in (cwd, *cwd.parents):
        candidate = directory / ".flotilla" / "env"
        if candidate.is_file():
            return candidate
    return None


def merged_environment(
    file_values: Mapping[str, str], environ: Mapping[str, str]
) -> dict[str, str]:
    """The file's values under the real environment's: an explicit variable always wins."""
    return {**file_values, **environ}


def load_environment(cwd: Path, environ: Mapping[str, str]) -> dict[str, str]:
    path = find_env_file(cwd, environ)
    if path is None:
        return dict(environ)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return merged_environment(parse_env_file(text, str(path)), environ)
