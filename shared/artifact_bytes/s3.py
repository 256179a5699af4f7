"""The S3 byte store (`kind = "s3"`): clients move bytes straight to and from the bucket at
presigned URLs; the queue only signs them and deletes expired objects.

boto3 is synchronous, so calls that touch the network run in a thread. Presigning is
local computation once credentials are known.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import boto3
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

_DELETE_BATCH = 1000  # DeleteObjects' limit
_MAX_EXPIRY_S = 7 * 24 * 3600  # SigV4 presigned URLs live at most a week


class S3StoreError(Exception):
    """S3 refused part of a request; a retry may help (deletes are idempotent)."""


class S3Store:
    kind: str = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        region: str,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self._bucket = bucket
        self._region = region
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            # Path-style and SigV4 work with AWS, MinIO and moto alike, whatever the
            # bucket's name.
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )

    def upload_url(
        self, key: str, *, content_type: str, expires: datetime, length: int | None = None
    ) -> str:
        # A declared length is signed in (Content-Length becomes a signed header), so S3
        # refuses a PUT of any other length; without one, S3's own 5 GB bounds a PUT.
        # Emulators may not check presigned signatures (moto does not); for object
        # artifacts the object service's finishUpload checks the stored length again.
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": key, "ContentType": content_type}
        if length is not None:
            params["ContentLength"] = length
        return self._presign("put_object", params, expires)

    def download_url(self, key: str, *, expires: datetime) -> str:
        return self._presign("get_object", {"Bucket": self._bucket, "Key": key}, expires)

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        await asyncio.to_thread(
            self._client.put_object,
            Bucket=self._bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
        )

    async def stat(self, key: str) -> int | None:
        try:
            head = await asyncio.to_thread(self._client.head_object, Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    async def delete(self, keys: Sequence[str]) -> None:
        for offset in range(0, len(keys), _DELETE_BATCH):
            await asyncio.to_thread(self._delete_batch, keys[offset : offset + _DELETE_BATCH])

    def routes(self) -> list[web.RouteDef]:
        return []  # clients talk to S3 directly

    async def start(self) -> None:
        await asyncio.to_thread(self._ensure_bucket)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    def _presign(self, operation: str, params: dict[str, Any], expires: datetime) -> str:
        seconds = int(expires.timestamp() - time.time())
        return self._client.generate_presigned_url(
            operation, Params=params, ExpiresIn=min(max(seconds, 1), _MAX_EXPIRY_S)
        )

    def _delete_batch(self, keys: Sequence[str]) -> None:
        response = self._client.delete_objects(
            Bucket=self._bucket,
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
        )
        failures = response.get("Errors") or []
        if failures:
            first = failures[0]
            raise S3StoreError(
                f"S3 did not delete {len(failures)} of {len(keys)} objects, e.g. "
                f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
            )

    def _ensure_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self._bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
        # Meant for local set-ups (MinIO, moto); production buckets are provisioned.
        log.warning("creating missing artifact bucket", extra={"bucket": self._bucket})
        options: dict[str, Any] = {}
        if self._region != "us-east-1":  # the one region S3 refuses a constraint for
            options["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        self._client.create_bucket(Bucket=self._bucket, **options)
