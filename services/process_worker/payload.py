"""generic-worker's payload (reference §6) as pydantic models, for the process engine.

A task written for upstream's generic-worker (insecure engine) runs here unchanged when
it uses what is modelled below; anything else is refused as `malformed-payload` with a
line naming it (upstream's schema forbids unknown properties too). Not supported:
`mounts` content from an index `namespace`, `features` other than `liveLog` /
`backingLog`, `osGroups`, `taskclusterProxyInterface`; `7z`/`rar`/`zst`/`lz4` archives.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

CACHE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
FORMATS = ("tar", "tar.gz", "tar.bz2", "tar.xz", "zip")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArtifactContent(_Strict):
    taskId: Annotated[StrictStr, Field(min_length=1)]
    artifact: Annotated[StrictStr, Field(min_length=1)]
    sha256: Annotated[StrictStr, Field(pattern=r"^[a-f0-9]{64}$")] | None = None


class UrlContent(_Strict):
    url: Annotated[StrictStr, Field(pattern=r"^https?://")]
    sha256: Annotated[StrictStr, Field(pattern=r"^[a-f0-9]{64}$")] | None = None


class RawContent(_Strict):
    raw: StrictStr


class Base64Content(_Strict):
    base64: StrictStr


Content = ArtifactContent | UrlContent | RawContent | Base64Content
Format = Literal["tar", "tar.gz", "tar.bz2", "tar.xz", "zip"]
RelativePath = Annotated[StrictStr, Field(min_length=1)]


class FileMount(_Strict):
    file: RelativePath
    content: Content
    format: Literal["gz", "bz2", "xz"] | None = None  # a compressed single file


class ReadOnlyDirectory(_Strict):
    directory: RelativePath
    content: Content
    format: Format


class WritableDirectoryCache(_Strict):
    cacheName: Annotated[StrictStr, Field(pattern=CACHE_NAME_PATTERN.pattern)]
    directory: RelativePath
    content: Content | None = None  # pre-loaded into a new cache
    format: Format | None = None


Mount = WritableDirectoryCache | ReadOnlyDirectory | FileMount


class Artifact(_Strict):
    type: Literal["file", "directory"]
    path: RelativePath
    name: StrictStr | None = None
    expires: datetime | None = None
    contentType: StrictStr | None = None
    contentEncoding: Literal["identity", "gzip"] | None = None
    optional: StrictBool = False


class OnExitStatus(_Strict):
    retry: list[Annotated[StrictInt, Field(ge=1)]] = []
    purgeCaches: list[Annotated[StrictInt, Field(ge=0)]] = []


class Features(_Strict):
    liveLog: StrictBool = True
    backingLog: StrictBool = True


class Logs(_Strict):
    live: StrictStr = "public/logs/live.log"
    backing: StrictStr = "public/logs/live_backing.log"


class Payload(_Strict):
    command: Annotated[list[Annotated[list[StrictStr], Field(min_length=1)]], Field(min_length=1)]
    maxRunTime: Annotated[StrictInt, Field(ge=1)]
    env: dict[str, StrictStr] = {}
    artifacts: list[Artifact] = []
    mounts: list[Mount] = []
    onExitStatus: OnExitStatus | None = None
    features: Features = Features()
    logs: Logs = Logs()
    supersederUrl: StrictStr | None = None


def parse_payload(raw: object, max_run_time_s: int) -> Payload | list[str]:
    """The payload, or one readable line per problem (the run is malformed-payload)."""
    try:
        payload = Payload.model_validate(raw)
    except ValidationError as exc:
        return [
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors()
        ]
    problems = []
    if payload.maxRunTime > max_run_time_s:
        problems.append(f"maxRunTime: {payload.maxRunTime} exceeds this worker's {max_run_time_s}")
    names = [m.cacheName for m in payload.mounts if isinstance(m, WritableDirectoryCache)]
    if len(names) != len(set(names)):
        problems.append("mounts: a cache is mounted twice")
    return problems or payload
