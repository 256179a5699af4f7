"""The part of Taskcluster's Auth API people need to manage clients and roles.

Served under `/api/auth/v1/` on the queue's HTTP front, so `taskcluster.Auth` works
against Flotilla. Scopes as upstream: creating or widening a client or role needs
`auth:<verb>-<client|role>:<id>` and every scope being granted.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from shared import errors, paging
from shared.api import Call, declare
from shared.auth.roles import RoleError, RoleResolver, check_no_cycle
from shared.auth.scopes import is_valid_scope, normalize_scopes
from shared.auth.store import AuthStore
from shared.ids import slugid
from shared.models.common import Timestamp
from shared.timeutil import format_ts, utcnow

CLIENT_ID = r"^[A-Za-z0-9!@/:.+|_-]+$"
ROLE_ID = r"^[\x20-\x7e]+$"


def _scopes(values: list[str]) -> list[str]:
    bad = [scope for scope in values if not is_valid_scope(scope)]
    if bad:
        raise ValueError(f"invalid scopes: {bad}")
    return values


def _granted_scopes(values: list[str]) -> list[str]:
    """Scopes a client or role is given, as upstream's schemas take them: valid, unique,
    and none ending in `**` (a star is the wildcard; a second one is a typo that would
    never match what its author meant)."""
    _scopes(values)
    starred = [scope for scope in values if scope.endswith("**")]
    if starred:
        raise ValueError(f"scopes must not end in '**': {starred}")
    if len(set(values)) != len(values):
        raise ValueError("scopes must be unique")
    return values


class ClientRequest(BaseModel):
    """create-client-request / update-client-request, as upstream."""

    model_config = ConfigDict(extra="forbid")
    expires: Timestamp
    description: str = Field(max_length=10240)
    scopes: list[str] = Field(default_factory=list)
    deleteOnExpiration: StrictBool = False

    _check = field_validator("scopes")(_granted_scopes)


class RoleRequest(BaseModel):
    """create-role-request / update-role-request, as upstream."""

    model_config = ConfigDict(extra="forbid")
    scopes: list[str]
    description: str = Field(max_length=10240)

    _check = field_validator("scopes")(_granted_scopes)


class ScopeSetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scopes: list[str]

    _check = field_validator("scopes")(_scopes)


def new_access_token() -> str:
    return slugid() + slugid()


CLIENT = {"clientId": CLIENT_ID}
ROLE = {"roleId": ROLE_ID}
GRANT = {"for": "scope", "in": "scopes", "each": "<scope>"}


class AuthApi:
    def __init__(self, store: AuthStore) -> None:
        self.store = store

    # --- responses -------------------------------------------------------------------------

    async def _client_out(self, doc: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        resolver = await self.store.resolver()
        out = {
            "clientId": doc["_id"],
            "description": doc.get("description", ""),
            "expires": format_ts(doc["expires"]),
            "created": format_ts(doc["created"]),
            "lastModified": format_ts(doc["lastModified"]),
            "lastDateUsed": format_ts(doc.get("lastDateUsed", doc["created"])),
            "lastRotated": format_ts(doc["lastRotated"]),
            "deleteOnExpiration": bool(doc.get("deleteOnExpiration", False)),
            "scopes": list(doc.get("scopes", [])),
            "expandedScopes": resolver.expand(doc.get("scopes", [])),
            "disabled": bool(doc.get("disabled", False)),
        }
        if token is not None:
            out["accessToken"] = token
        return out

    async def _role_out(self, doc: dict[str, Any]) -> dict[str, Any]:
        resolver = await self.store.resolver()
        return {
            "roleId": doc["_id"],
            "scopes": list(doc["scopes"]),
            "description": doc.get("description", ""),
            "created": format_ts(doc["created"]),
            "lastModified": format_ts(doc["lastModified"]),
            "expandedScopes": resolver.expand([f"assume:{doc['_id']}"]),
        }

    async def _existing_client(self, client_id: str) -> dict[str, Any]:
        doc = await self.store.get_client(client_id)
        if doc is None:
            raise errors.ResourceNotFound(f"Client {client_id} not found")
        return doc

    def _refuse_static(self, client_id: str) -> None:
        if self.store.is_static(client_id):
            # upstream answers 400 here, not 409: the request can never succeed
            raise errors.InputError(f"Client {client_id} is a static client; it cannot be changed")

    # --- clients ---------------------------------------------------------------------------

    @declare(
        "createClient",
        "PUT",
        "/clients/<clientId>",
        title="Create Client",
        scopes={"AllOf": ["auth:create-client:<clientId>", GRANT]},
        input=ClientRequest,
        params=CLIENT,
        scopes_from_params=False,
    )
    async def create_client(self, call: Call) -> dict[str, Any]:
        client_id, body = call.params["clientId"], call.body
        call.authorize(scopes=body.scopes)
        self._refuse_static(client_id)
        now = utcnow()
        scopes = normalize_scopes(body.scopes)
        token = new_access_token()
        document = {
            "_id": client_id,
            "description": body.description,
            "encryptedToken": self.store.encrypt(token),
            "scopes": scopes,
            "expires": body.expires,
            "disabled": False,
            "deleteOnExpiration": body.deleteOnExpiration,
            "created": now,
            "lastModified": now,
            "lastDateUsed": now,
            "lastRotated": now,
        }
        if not await self.store.insert_client(document):
            # Upstream answers even an identical repeat with 409: the token is shown once.
            raise errors.RequestConflict(f"Client {client_id} already exists")
        return await self._client_out(document, token)

    @declare(
        "updateClient",
        "POST",
        "/clients/<clientId>",
        title="Update Client",
        input=ClientRequest,
        params=CLIENT,
    )
    async def update_client(self, call: Call) -> dict[str, Any]:
        client_id, body = call.params["clientId"], call.body
        self._refuse_static(client_id)
        existing = await self._existing_client(client_id)
        added = sorted(set(body.scopes) - set(existing.get("scopes", [])))
        call.authorize({"AllOf": ["auth:update-client:<clientId>", *added]}, clientId=client_id)
        doc = await self.store.update_client(
            client_id,
            {
                "description": body.description,
                "scopes": normalize_scopes(body.scopes),
                "expires": body.expires,
                "deleteOnExpiration": body.deleteOnExpiration,
                "lastModified": utcnow(),
            },
        )
        if doc is None:
            raise errors.ResourceNotFound(f"Client {client_id} not found")
        return await self._client_out(doc)

    @declare("client", "GET", "/clients/<clientId>", title="Get Client", params=CLIENT)
    async def get_client(self, call: Call) -> dict[str, Any]:
        return await self._client_out(await self._existing_client(call.params["clientId"]))

    @declare(
        "listClients",
        "GET",
        "/clients/",
        title="List Clients",
        query=("prefix", "continuationToken", "limit"),
    )
    async def list_clients(self, call: Call) -> dict[str, Any]:
        limit = paging.limit(call.query)
        docs = await self.store.list_clients(
            call.query.get("prefix", ""), paging.decode_str(call.query), limit
        )
        page = docs[:limit]
        out: dict[str, Any] = {"clients": [await self._client_out(d) for d in page]}
        if len(docs) > limit:
            out["continuationToken"] = paging.encode(page[-1]["_id"])
        return out

    @declare(
        "deleteClient",
        "DELETE",
        "/clients/<clientId>",
        title="Delete Client",
        scopes="auth:delete-client:<clientId>",
        params=CLIENT,
    )
    async def delete_client(self, call: Call) -> None:
        client_id = call.params["clientId"]
        self._refuse_static(client_id)
        await self.store.delete_client(client_id)  # deleting a missing client succeeds

    async def _set_disabled(self, call: Call, disabled: bool) -> dict[str, Any]:
        client_id = call.params["clientId"]
        self._refuse_static(client_id)
        doc = await self.store.update_client(
            client_id, {"disabled": disabled, "lastModified": utcnow()}
        )
        if doc is None:
            raise errors.ResourceNotFound(f"Client {client_id} not found")
        return await self._client_out(doc)

    @declare(
        "disableClient",
        "POST",
        "/clients/<clientId>/disable",
        title="Disable Client",
        scopes="auth:disable-client:<clientId>",
        params=CLIENT,
    )
    async def disable_client(self, call: Call) -> dict[str, Any]:
        return await self._set_disabled(call, True)

    @declare(
        "enableClient",
        "POST",
        "/clients/<clientId>/enable",
        title="Enable Client",
        scopes="auth:enable-client:<clientId>",
        params=CLIENT,
    )
    async def enable_client(self, call: Call) -> dict[str, Any]:
        return await self._set_disabled(call, False)

    @declare(
        "resetAccessToken",
        "POST",
        "/clients/<clientId>/reset",
        title="Reset `accessToken`",
        scopes="auth:reset-access-token:<clientId>",
        params=CLIENT,
    )
    async def reset_access_token(self, call: Call) -> dict[str, Any]:
        client_id = call.params["clientId"]
        self._refuse_static(client_id)
        token = new_access_token()
        now = utcnow()
        doc = await self.store.update_client(
            client_id,
            {"encryptedToken": self.store.encrypt(token), "lastRotated": now, "lastModified": now},
        )
        if doc is None:
            raise errors.ResourceNotFound(f"Client {client_id} not found")
        return await self._client_out(doc, token)

    # --- roles -----------------------------------------------------------------------------

    async def _check_role(self, role_id: str, scopes: list[str]) -> None:
        roles = {doc["_id"]: list(doc["scopes"]) for doc in await self.store.all_roles()}
        try:
            check_no_cycle(roles, role_id, scopes)
        except RoleError as exc:
            raise errors.InputError(str(exc)) from exc

    @declare(
        "createRole",
        "PUT",
        "/roles/<roleId>",
        title="Create Role",
        scopes={"AllOf": ["auth:create-role:<roleId>", GRANT]},
        input=RoleRequest,
        params=ROLE,
        scopes_from_params=False,
    )
    async def create_role(self, call: Call) -> dict[str, Any]:
        role_id, body = call.params["roleId"], call.body
        call.authorize(scopes=body.scopes)
        scopes = normalize_scopes(body.scopes)
        await self._check_role(role_id, scopes)
        now = utcnow()
        document = {
            "_id": role_id,
            "scopes": scopes,
            "description": body.description,
            "created": now,
            "lastModified": now,
        }
        if not await self.store.insert_role(document):
            existing = await self.store.get_role(role_id)
            if (
                existing
                and existing["scopes"] == scopes
                and existing.get("description") == body.description
            ):
                return await self._role_out(existing)  # an identical repeat succeeds
            raise errors.RequestConflict(f"Role {role_id} already exists with different properties")
        return await self._role_out(document)

    @declare(
        "updateRole", "POST", "/roles/<roleId>", title="Update Role", input=RoleRequest, params=ROLE
    )
    async def update_role(self, call: Call) -> dict[str, Any]:
        role_id, body = call.params["roleId"], call.body
        existing = await self.store.get_role(role_id)
        if existing is None:
            raise errors.ResourceNotFound(f"Role {role_id} not found")
        added = sorted(set(body.scopes) - set(existing["scopes"]))
        call.authorize({"AllOf": ["auth:update-role:<roleId>", *added]}, roleId=role_id)
        scopes = normalize_scopes(body.scopes)
        await self._check_role(role_id, scopes)
        doc = await self.store.update_role(
            role_id, {"scopes": scopes, "description": body.description, "lastModified": utcnow()}
        )
        if doc is None:
            raise errors.ResourceNotFound(f"Role {role_id} not found")
        return await self._role_out(doc)

    @declare("role", "GET", "/roles/<roleId>", title="Get Role", params=ROLE)
    async def get_role(self, call: Call) -> dict[str, Any]:
        doc = await self.store.get_role(call.params["roleId"])
        if doc is None:
            raise errors.ResourceNotFound(f"Role {call.params['roleId']} not found")
        return await self._role_out(doc)

    @declare("listRoles", "GET", "/roles/", title="List Roles (no pagination)")
    async def list_roles(self, call: Call) -> list[dict[str, Any]]:
        return [await self._role_out(doc) for doc in await self.store.all_roles()]

    @declare(
        "deleteRole",
        "DELETE",
        "/roles/<roleId>",
        title="Delete Role",
        scopes="auth:delete-role:<roleId>",
        params=ROLE,
    )
    async def delete_role(self, call: Call) -> None:
        await self.store.delete_role(call.params["roleId"])

    # --- scopes ----------------------------------------------------------------------------

    @declare("currentScopes", "GET", "/scopes/current", title="Get Current Scopes")
    async def current_scopes(self, call: Call) -> dict[str, Any]:
        return {"scopes": list(call.principal.scopes)}

    @declare("expandScopes", "POST", "/scopes/expand", title="Expand Scopes", input=ScopeSetBody)
    async def expand_scopes(self, call: Call) -> dict[str, Any]:
        resolver: RoleResolver = await self.store.resolver()
        return {"scopes": resolver.expand(call.body.scopes)}
