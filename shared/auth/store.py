"""Clients and roles in MongoDB, with the static root client from the settings.

Access tokens are encrypted at rest (Fernet, key derived from the settings' secret key),
not hashed: Hawk needs the secret itself to check a MAC. Reads go through a short cache,
so a disabled or deleted client is served for at most `cache_ttl_s` on any replica.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from shared.auth.authenticate import ClientRecord
from shared.auth.roles import RoleResolver
from shared.db import Database
from shared.timeutil import utcnow

CLIENTS = "clients"
ROLES = "roles"
# The read-only scopes upstream deployments give `anonymous` (its docs' anonymous-role list,
# as tc-admin applies it): reading tasks, statuses, artifact lists, public artifacts, task
# groups, dependents, provisioners and workers, counts, pools, index and purge requests.
# Nothing that writes. generic-worker asks `queue.status` without credentials when a report
# is refused, and reads public artifacts for mounts this way.
DEFAULT_ANONYMOUS_SCOPES = (
    "auth:current-scopes",
    "auth:expand-scopes",
    "auth:get-client:*",
    "auth:get-role:*",
    "auth:list-clients",
    "auth:list-roles",
    "github:get-badge:*",
    "github:get-repository:*",
    "github:latest-status:*",
    "github:list-builds",
    "hooks:get:*",
    "hooks:list-hooks:*",
    "hooks:list-last-fires:*",
    "hooks:status:*",
    "index:find-task:*",
    "index:list-namespaces:*",
    "index:list-tasks:*",
    "purge-cache:all-purge-requests",
    "purge-cache:purge-requests:*",
    "queue:get-artifact:public/*",
    "queue:get-provisioner:*",
    "queue:get-task:*",
    "queue:get-worker-type:*",
    "queue:get-worker:*",
    "queue:list-artifacts:*",
    "queue:list-dependent-tasks:*",
    "queue:list-provisioners",
    "queue:list-task-group:*",
    "queue:list-worker-types:*",
    "queue:list-workers:*",
    "queue:pending-count:*",
    "queue:status:*",
    "secrets:list-secrets",
    "worker-manager:get-worker-pool:*",
    "worker-manager:get-worker:*",
    "worker-manager:list-providers",
    "worker-manager:list-worker-pool-errors:*",
    "worker-manager:list-worker-pools",
    "worker-manager:list-workers:*",
)
FAR_FUTURE = datetime(3000, 1, 1, tzinfo=UTC)  # static clients never expire


def fernet_for(secret_key: str) -> Fernet:
    digest = hashlib.sha256(secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


@dataclass(frozen=True)
class StaticClient:
    client_id: str
    access_token: str
    scopes: tuple[str, ...]


class AuthStore:
    def __init__(
        self,
        db: Database,
        *,
        secret_key: str,
        static_clients: Iterable[StaticClient] = (),
        cache_ttl_s: float = 2.0,
    ) -> None:
        self._db = db
        self._fernet = fernet_for(secret_key)
        self._static = {c.client_id: c for c in static_clients if c.access_token}
        self._ttl = cache_ttl_s
        self._clients: dict[str, tuple[float, ClientRecord | None]] = {}
        self._resolver: tuple[float, RoleResolver] | None = None

    # --- what authentication needs -------------------------------------------------------

    def is_static(self, client_id: str) -> bool:
        return client_id in self._static or client_id.startswith("static/")

    async def clients(self, client_ids: Iterable[str]) -> dict[str, ClientRecord]:
        """Records for these ids (unknown ids are left out), through the cache."""
        found: dict[str, ClientRecord] = {}
        now = time.monotonic()
        wanted = []
        for client_id in client_ids:
            static = self._static.get(client_id)
            if static is not None:
                found[client_id] = ClientRecord(
                    clientId=client_id,
                    accessToken=static.access_token,
                    scopes=list(static.scopes),
                    expires=FAR_FUTURE,
                    disabled=False,
                )
                continue
            cached = self._clients.get(client_id)
            if cached is not None and cached[0] > now:
                if cached[1] is not None:
                    found[client_id] = cached[1]
                continue
            wanted.append(client_id)
        if wanted:
            async for document in self._db[CLIENTS].find({"_id": {"$in": wanted}}):
                record = self._record(document)
                self._clients[record.clientId] = (now + self._ttl, record)
                found[record.clientId] = record
            for client_id in wanted:
                self._clients.setdefault(client_id, (now + self._ttl, None))
        return found

    async def resolver(self) -> RoleResolver:
        now = time.monotonic()
        if self._resolver is None or self._resolver[0] <= now:
            roles = {doc["_id"]: list(doc["scopes"]) async for doc in self._db[ROLES].find({})}
            self._resolver = (now + self._ttl, RoleResolver(roles))
        return self._resolver[1]

    def forget(self, client_id: str | None = None) -> None:
        """Drop cached entries after a local change (other replicas expire theirs)."""
        if client_id is None:
            self._resolver = None
        else:
            self._clients.pop(client_id, None)

    # --- client documents ----------------------------------------------------------------

    def encrypt(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def _record(self, document: Mapping[str, Any]) -> ClientRecord:
        try:
            token = self._fernet.decrypt(document["encryptedToken"].encode()).decode()
        except InvalidToken:
            token = ""  # a key change makes the stored secret useless: the MAC never matches
        return ClientRecord(
            clientId=document["_id"],
            accessToken=token,
            scopes=list(document.get("scopes", [])),
            expires=document["expires"],
            disabled=bool(document.get("disabled", False)),
        )

    async def get_client(self, client_id: str) -> dict[str, Any] | None:
        return await self._db[CLIENTS].find_one({"_id": client_id})

    async def insert_client(self, document: dict[str, Any]) -> bool:
        """Insert; False if the id is taken."""
        try:
            await self._db[CLIENTS].insert_one(document)
        except DuplicateKeyError:
            return False
        self.forget(document["_id"])
        return True

    async def update_client(
        self, client_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        document = await self._db[CLIENTS].find_one_and_update(
            {"_id": client_id}, {"$set": dict(changes)}, return_document=ReturnDocument.AFTER
        )
        self.forget(client_id)
        return document

    async def delete_client(self, client_id: str) -> None:
        await self._db[CLIENTS].delete_one({"_id": client_id})
        self.forget(client_id)

    async def list_clients(
        self, prefix: str, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        bounds: dict[str, str] = {}
        if prefix:
            bounds["$gte"] = prefix
        if after is not None:
            bounds["$gt"] = after
        if bounds:
            query["_id"] = bounds
        cursor = self._db[CLIENTS].find(query).sort("_id", 1).limit(limit + 1)
        documents = [doc async for doc in cursor]
        return [doc for doc in documents if doc["_id"].startswith(prefix)]

    # --- roles -----------------------------------------------------------------------------

    async def ensure_default_roles(self) -> None:
        """Upstream's convention: anyone may read what a public deployment shows (tasks,
        statuses, public artifacts, ...; DEFAULT_ANONYMOUS_SCOPES). Created only when there
        is no `anonymous` role yet, so an operator's own choice stays."""
        now = utcnow()
        await self.insert_role(
            {
                "_id": "anonymous",
                "scopes": list(DEFAULT_ANONYMOUS_SCOPES),
                "description": "Anyone, without credentials: read-only access, as upstream's "
                "public deployments (tasks, statuses, public artifacts, ...).",
                "created": now,
                "lastModified": now,
            }
        )

    async def get_role(self, role_id: str) -> dict[str, Any] | None:
        return await self._db[ROLES].find_one({"_id": role_id})

    async def all_roles(self) -> list[dict[str, Any]]:
        return [doc async for doc in self._db[ROLES].find({}).sort("_id", 1)]

    async def insert_role(self, document: dict[str, Any]) -> bool:
        try:
            await self._db[ROLES].insert_one(document)
        except DuplicateKeyError:
            return False
        self.forget()
        return True

    async def update_role(self, role_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        document = await self._db[ROLES].find_one_and_update(
            {"_id": role_id}, {"$set": dict(changes)}, return_document=ReturnDocument.AFTER
        )
        self.forget()
        return document

    async def delete_role(self, role_id: str) -> None:
        await self._db[ROLES].delete_one({"_id": role_id})
        self.forget()
