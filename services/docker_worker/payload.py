"""The docker-worker v1 payload (reference §1) as pydantic models, and the pure checks a
claimed task goes through before anything runs. Each check returns the reasons it
refuses the task; which report that makes is `results`' business:

- `feature_errors`: unknown / not enabled features (run `failed`, checked first, as upstream);
- `parse_payload`: the schema (run `exception/malformed-payload`);
- `scope_errors`: caches and capabilities the task's scopes do not allow (run `failed`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from shared.auth.scopes import scope_satisfies
from shared.ids import SLUGID_PATTERN

DEFAULT_LOG_NAME = "public/logs/live.log"
# Upstream's feature table (reference §1.2): name → used when the task does not say.
FEATURE_DEFAULTS: dict[str, bool] = {
    "localLiveLog": True,
    "artifacts": True,
    "chainOfTrust": False,
    "bulkLog": False,
    "taskclusterProxy": False,
    "dind": False,
    "dockerSave": False,
    "interactive": False,
    "allowPtrace": False,
}
# A cache name becomes a directory under the cache root: no separators, no `..`, no `::`.
CACHE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DockerImage(_Strict):
    type: Literal["docker-image"]
    name: Annotated[StrictStr, Field(min_length=1)]


class TaskImage(_Strict):
    type: Literal["task-image"]
    taskId: Annotated[StrictStr, Field(pattern=SLUGID_PATTERN)]
    path: Annotated[StrictStr, Field(min_length=1)]


class IndexedImage(_Strict):
    type: Literal["indexed-image"]
    namespace: StrictStr
    path: StrictStr


ImageObject = Annotated[DockerImage | TaskImage | IndexedImage, Field(discriminator="type")]


class ArtifactSpec(_Strict):
    type: Literal["file", "directory"]
    path: Annotated[StrictStr, Field(min_length=1)]
    expires: datetime | None = None


class OnExitStatus(_Strict):
    retry: list[StrictInt] = []
    purgeCaches: list[StrictInt] = []


class Devices(_Strict):
    loopbackVideo: StrictBool = False
    loopbackAudio: StrictBool = False
    hostSharedMemory: StrictBool = False
    kvm: StrictBool = False


class Capabilities(_Strict):
    privileged: StrictBool = False
    devices: Devices = Devices()
    disableSeccomp: StrictBool = False


class Payload(_Strict):
    image: StrictStr | ImageObject
    command: list[StrictStr] = []
    env: dict[str, StrictStr] = {}
    maxRunTime: Annotated[StrictInt, Field(ge=1)]
    artifacts: dict[str, ArtifactSpec] = {}
    cache: dict[str, StrictStr] = {}
    capabilities: Capabilities = Capabilities()
    features: dict[str, StrictBool] = {}
    onExitStatus: OnExitStatus | None = None
    log: Annotated[StrictStr, Field(min_length=1)] = DEFAULT_LOG_NAME
    supersederUrl: StrictStr | None = None

    @field_validator("image")
    @classmethod
    def _image_not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value:
            raise ValueError("image must not be empty")
        return value

    @field_validator("cache")
    @classmethod
    def _cache_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, mount in value.items():
            if not CACHE_NAME_PATTERN.match(name) or name in (".", ".."):
                raise ValueError(f"cache name {name!r} must match {CACHE_NAME_PATTERN.pattern}")
            if not mount.startswith("/"):
                raise ValueError(f"cache {name!r} mount point {mount!r} must be absolute")
        return value

    def uses(self, feature: str, enabled: Iterable[str]) -> bool:
        """Whether the run uses `feature`: the task's choice (or the default), if enabled."""
        return self.features.get(feature, FEATURE_DEFAULTS.get(feature, False)) and (
            feature in set(enabled)
        )

    def image_name(self) -> str | None:
        """The registry image to use (tag defaulting to `latest`); None for other forms."""
        name = self.image if isinstance(self.image, str) else None
        if isinstance(self.image, DockerImage):
            name = self.image.name
        if name is None:
            return None
        last = name.rsplit("/", 1)[-1]
        return name if (":" in last or "@" in last) else f"{name}:latest"

    def backing_log_name(self) -> str:
        return backing_log_name(self.log)


def backing_log_name(live_name: str) -> str:
    """`_backing` before the extension: `a/b.log.txt` → `a/b.log_backing.txt`."""
    head, sep, last = live_name.rpartition("/")
    stem, dot, ext = last.rpartition(".")
    last = f"{stem}_backing.{ext}" if dot and stem else f"{last}_backing"
    return f"{head}{sep}{last}"


def feature_errors(raw_payload: object, enabled: Iterable[str]) -> list[str]:
    """Upstream's feature check, made before schema validation; any error fails the run."""
    features = raw_payload.get("features") if isinstance(raw_payload, Mapping) else None
    if not isinstance(features, Mapping):
        return []  # absent, or the schema check will name the problem
    enabled = set(enabled)
    errors = []
    for name, wanted in features.items():
        if name not in FEATURE_DEFAULTS:
            errors.append(f"{name} is not part of valid features")
        elif wanted is True and name not in enabled:
            errors.append(f"{name} is not enabled on this worker")
    return errors


def parse_payload(raw_payload: object) -> Payload | list[str]:
    """The payload, or the schema errors (one readable line each) that make it malformed."""
    try:
        payload = Payload.model_validate(raw_payload)
    except ValidationError as exc:
        return [_error_line(error) for error in exc.errors()]
    if isinstance(payload.image, IndexedImage):
        return ["image: indexed-image is not supported by this worker (no index service)"]
    return payload


def _error_line(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "payload"
    return f"{where}: {error['msg']}"


def _allowed(task_scopes: Iterable[str], *required: str) -> bool:
    held = list(task_scopes)
    return any(scope_satisfies(h, r) for h in held for r in required)


def scope_errors(
    payload: Payload, task_scopes: Iterable[str], worker_pool: str, *, allow_privileged: bool
) -> list[str]:
    """What the task asks for but may not have (reference §1.3). `task.scopes` is used as
    given: roles are not expanded (the claim's credentials may not call expandScopes)."""
    scopes = list(task_scopes)
    errors = []
    for name in payload.cache:
        base = f"docker-worker:cache:{name}"
        if not _allowed(scopes, base, f"{base}:{worker_pool}"):
            errors.append(f"Insufficient scopes to attach cache {name!r}: need {base}")
    if payload.capabilities.privileged:
        base = "docker-worker:capability:privileged"
        if not _allowed(scopes, base, f"{base}:{worker_pool}"):
            errors.append(f"Insufficient scopes to run a privileged container: need {base}")
        elif not allow_privileged:
            errors.append("Privileged containers are not allowed on this worker")
    for device, wanted in payload.capabilities.devices:
        if wanted:
            errors.append(f"Device {device!r} is not available on this worker")
    return errors
