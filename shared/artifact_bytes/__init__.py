"""Where artifact bytes live: MongoDB served by the queue ("mongodb", formerly "gridfs")
or an S3 bucket.

The queue keeps artifact metadata itself and asks a ByteStore for signed URLs, for the
routes to serve (if any), and to delete expired objects.
"""

from __future__ import annotations

from shared.artifact_bytes import signing
from shared.artifact_bytes.base import ByteStore
from shared.artifact_bytes.embedded import EmbeddedStore
from shared.artifact_bytes.s3 import S3Store
from shared.config import Settings
from shared.db import Database

__all__ = ["ByteStore", "EmbeddedStore", "S3Store", "open_store"]


def open_store(
    settings: Settings,
    db: Database,
    *,
    path_prefix: str = signing.PATH_PREFIX,
    url_base: str | None = None,
) -> ByteStore:
    """The store `settings.artifact_store` names; call `start()` before serving. The
    embedded store's signed URLs are `url_base` (default: the queue's) + `path_prefix`
    (default: the queue's route)."""
    if settings.artifact_store == "s3":
        return S3Store(
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )
    return EmbeddedStore(
        db,
        secret_key=settings.secret_key,
        url_base=url_base or settings.artifact_url_base or settings.root_url,
        path_prefix=path_prefix,
        max_bytes=settings.artifact_max_bytes,
    )
