"""Command-line and environment settings for a kit-based worker's `main`:
flags over `FLOTILLA_WORKER_*` variables (the official client's `TASKCLUSTER_*` as
fallbacks) over a YAML file (`--config`) over defaults. `--help` lists every setting with
its description, default and variable. Optional (needs PyYAML only for `--config`)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flotilla_worker.settings import (
    ENV_FALLBACKS,
    ENV_PREFIX,
    HELP,
    SettingsError,
    WorkerSettings,
    _convert,
)

Extra = tuple[type, Any, str]  # (type, default, description) of an engine's own setting


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _describe(name: str, default: Any, description: str) -> str:
    variables = ", ".join((ENV_PREFIX + name.upper(), *ENV_FALLBACKS.get(name, ())))
    if default is dataclasses.MISSING:
        shown = "required"
    else:
        shown = "unset" if default is None else f"default: {default}"
    return f"{description} ({shown}; env {variables})".replace("%", "%%")


def parser(prog: str, description: str, extras: Mapping[str, Extra]) -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog=prog, description=description)
    result.add_argument(
        "--config", type=Path, help=f"a YAML file of settings (env {ENV_PREFIX}CONFIG)"
    )
    for spec in dataclasses.fields(WorkerSettings):
        result.add_argument(
            _flag(spec.name),
            dest=spec.name,
            default=None,
            metavar=spec.name.upper(),
            help=_describe(spec.name, spec.default, HELP.get(spec.name, "")),
        )
    for name, (_, default, text) in extras.items():
        result.add_argument(
            _flag(name),
            dest=name,
            default=None,
            metavar=name.upper(),
            help=_describe(name, default, text),
        )
    return result


def load(
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    prog: str,
    description: str,
    extras: Mapping[str, Extra] = {},  # noqa: B006 (read only)
) -> tuple[WorkerSettings, dict[str, Any]]:
    """The worker's settings and its engine's `extras` (converted, defaults filled)."""
    args = vars(parser(prog, description, extras).parse_args(list(argv)))
    path = args.pop("config") or (
        Path(environ[ENV_PREFIX + "CONFIG"]) if environ.get(ENV_PREFIX + "CONFIG") else None
    )
    values: dict[str, Any] = {}
    if path is not None:
        import yaml

        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"cannot read {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"{path} must hold a mapping of settings")
        values.update({str(k): str(v) for k, v in loaded.items() if v is not None})
    known = {f.name for f in dataclasses.fields(WorkerSettings)} | set(extras)
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(f"unknown settings in {path}: {', '.join(unknown)}")
    for name in known:
        for variable in (ENV_PREFIX + name.upper(), *ENV_FALLBACKS.get(name, ())):
            if environ.get(variable):
                values[name] = environ[variable]
                break
    values.update({k: v for k, v in args.items() if v is not None})
    hints = typing.get_type_hints(WorkerSettings)
    engine: dict[str, Any] = {}
    for name, (kind, default, _) in extras.items():
        raw = values.pop(name, None)
        engine[name] = default if raw is None else _convert(name, kind, raw)
    converted = {name: _convert(name, hints[name], str(raw)) for name, raw in values.items()}
    return WorkerSettings.from_env({}, **converted), engine
