"""The Auth API through the official client against the running queue process: clients
and roles created there are honoured, scope by scope, on the very next request."""

from __future__ import annotations

import datetime
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterAuthFailure, TaskclusterRestFailure

from tests.conftest import RunningService


def in_days(days: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)


@pytest.fixture
def root(queue_service: RunningService) -> taskcluster.Auth:
    return taskcluster.Auth(queue_service.client_options())


@pytest.fixture
def make_client(
    root: taskcluster.Auth, queue_service: RunningService
) -> Callable[..., tuple[str, taskcluster.Auth]]:
    def create(scopes: list[str], **options: Any) -> tuple[str, taskcluster.Auth]:
        client_id = f"test/{uuid.uuid4().hex[:10]}"
        created = root.createClient(
            client_id, {"expires": in_days(1), "description": "test", "scopes": scopes}
        )
        auth = taskcluster.Auth(
            {
                **queue_service.client_options(
                    clientId=client_id, accessToken=created["accessToken"]
                ),
                **options,
            }
        )
        return client_id, auth

    return create


def status_of(call: Callable[[], object]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(TaskclusterRestFailure) as failure:
        call()
    return failure.value.status_code, failure.value.body


def test_root_client_can_create_and_read_a_client(root: taskcluster.Auth) -> None:
    client_id = f"test/{uuid.uuid4().hex[:10]}"
    created = root.createClient(
        client_id, {"expires": in_days(1), "description": "d", "scopes": ["queue:y", "queue:x"]}
    )
    assert len(created["accessToken"]) == 44
    assert created["scopes"] == ["queue:x", "queue:y"]
    fetched = root.client(client_id)
    assert "accessToken" not in fetched
    assert fetched["clientId"] == client_id
    assert fetched["disabled"] is False
    assert client_id in [
        c["clientId"] for c in root.listClients(query={"prefix": "test/"})["clients"]
    ]


def test_new_client_is_authorized_exactly_by_its_scopes(make_client: Callable[..., Any]) -> None:
    _, auth = make_client(["auth:create-role:team-a/*"])
    role = f"team-a/{uuid.uuid4().hex[:6]}"
    assert auth.createRole(role, {"scopes": [], "description": "ok"})["roleId"] == role
    code, body = status_of(lambda: auth.createRole("team-b/x", {"scopes": [], "description": ""}))
    assert code == 403
    assert body["code"] == "InsufficientScopes"
    assert "auth:create-role:team-b/x" in body["message"]


def test_a_client_cannot_grant_scopes_it_does_not_hold(make_client: Callable[..., Any]) -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"  # fresh names: a rerun on the same database passes
    _, auth = make_client([f"auth:create-role:{team}/*", "queue:small"])
    small = {"scopes": ["queue:small"], "description": "d"}
    assert auth.createRole(f"{team}/ok", small)["scopes"] == ["queue:small"]
    code, body = status_of(
        lambda: auth.createRole(f"{team}/big", {"scopes": ["queue:big"], "description": "d"})
    )
    assert code == 403 and "queue:big" in body["message"]


def test_roles_reach_clients_through_assume(
    root: taskcluster.Auth, make_client: Callable[..., Any]
) -> None:
    project = f"project-{uuid.uuid4().hex[:6]}"
    root.createRole(
        f"project:{project}:*",
        {"scopes": [f"auth:create-role:{project}/<..>"], "description": "d"},
    )
    _, auth = make_client([f"assume:project:{project}:admin"])
    expanded = auth.currentScopes()["scopes"]
    assert f"auth:create-role:{project}/admin" in expanded
    admin = auth.createRole(f"{project}/admin", {"scopes": [], "description": "d"})
    assert admin["roleId"] == f"{project}/admin"
    assert root.expandScopes({"scopes": [f"assume:project:{project}:x"]})["scopes"] == [
        f"assume:project:{project}:x",
        f"auth:create-role:{project}/x",
    ]


def test_anonymous_role_applies_to_everyone(
    root: taskcluster.Auth, make_client: Callable[..., Any], queue_service: RunningService
) -> None:
    marker = f"marker:{uuid.uuid4().hex[:8]}"
    before = root.role("anonymous")  # the queue creates it at start-up
    root.updateRole(
        "anonymous",
        {"scopes": sorted({*before["scopes"], marker}), "description": before["description"]},
    )
    try:
        nobody = taskcluster.Auth({"rootUrl": queue_service.root_url, "maxRetries": 0})
        _, auth = make_client([])
        deadline = time.monotonic() + 5  # other caches expire within the store's TTL
        while marker not in nobody.currentScopes()["scopes"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker in nobody.currentScopes()["scopes"]
        assert marker in auth.currentScopes()["scopes"]
    finally:  # the role is shared by every test on this queue: put it back as it was
        root.updateRole(
            "anonymous", {"scopes": before["scopes"], "description": before["description"]}
        )
    assert root.role("anonymous")["scopes"] == before["scopes"]


def test_disabled_client_is_refused_within_seconds(
    root: taskcluster.Auth, make_client: Callable[..., Any]
) -> None:
    client_id, auth = make_client(["queue:a"])
    assert "queue:a" in auth.currentScopes()["scopes"]
    root.disableClient(client_id)
    deadline = time.monotonic() + 5
    refused = False
    while time.monotonic() < deadline and not refused:
        try:
            auth.currentScopes()
            time.sleep(0.2)
        except TaskclusterAuthFailure:
            refused = True
    assert refused
    root.enableClient(client_id)
    assert root.client(client_id)["disabled"] is False


def test_reset_token_retires_the_old_one(
    root: taskcluster.Auth, make_client: Callable[..., Any], queue_service: RunningService
) -> None:
    client_id, old = make_client(["queue:b"])
    fresh = root.resetAccessToken(client_id)["accessToken"]
    new = taskcluster.Auth(queue_service.client_options(clientId=client_id, accessToken=fresh))
    assert "queue:b" in new.currentScopes()["scopes"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            old.currentScopes()
            time.sleep(0.2)
        except TaskclusterAuthFailure:
            return
    pytest.fail("the old access token still works 5 s after a reset")


def test_temporary_credentials_and_authorized_scopes(
    make_client: Callable[..., Any], root: taskcluster.Auth, queue_service: RunningService
) -> None:
    client_id = f"test/{uuid.uuid4().hex[:10]}"
    token = root.createClient(
        client_id,
        {
            "expires": in_days(1),
            "description": "d",
            "scopes": ["queue:c:*", "auth:create-client:tmp/*"],
        },
    )["accessToken"]
    now = datetime.datetime.now(datetime.UTC)
    unnamed = taskcluster.createTemporaryCredentials(
        client_id, token, now - datetime.timedelta(minutes=1), in_days(0.1), ["queue:c:1"]
    )
    named = taskcluster.createTemporaryCredentials(
        client_id, token, now, in_days(0.1), ["queue:c:2"], name="tmp/worker"
    )
    for creds, expected in ((unnamed, "queue:c:1"), (named, "queue:c:2")):
        options = {"rootUrl": queue_service.root_url, "credentials": creds, "maxRetries": 0}
        scopes = taskcluster.Auth(options).currentScopes()["scopes"]
        assert expected in scopes and "queue:c:*" not in scopes
    narrowed = taskcluster.Auth(
        {
            **queue_service.client_options(clientId=client_id, accessToken=token),
            "authorizedScopes": ["queue:c:3"],
        }
    )
    assert "queue:c:3" in narrowed.currentScopes()["scopes"]
    too_wide = taskcluster.Auth(
        {
            **queue_service.client_options(clientId=client_id, accessToken=token),
            "authorizedScopes": ["queue:d"],
        }
    )
    with pytest.raises(TaskclusterAuthFailure):
        too_wide.currentScopes()


def test_signed_url_works_and_tampering_fails(
    make_client: Callable[..., Any],
) -> None:
    _, auth = make_client(["queue:e"])
    url = auth.buildSignedUrl("currentScopes", expiration=60)
    with urllib.request.urlopen(url, timeout=5) as response:
        assert "queue:e" in json.loads(response.read())["scopes"]
    # The same bewit presented for another resource must fail its MAC check.
    tampered = url.replace("/scopes/current?", "/clients/?")
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(tampered, timeout=5)
    failure.value.close()
    assert failure.value.code == 401


def test_bad_signature_gets_401_in_protocol_shape(queue_service: RunningService) -> None:
    auth = taskcluster.Auth(
        queue_service.client_options(clientId=queue_service.root_client_id, accessToken="x" * 44)
    )
    with pytest.raises(TaskclusterAuthFailure) as failure:
        auth.currentScopes()
    assert failure.value.status_code == 401
    body = failure.value.body
    assert body["code"] == "AuthenticationFailed"
    assert body["requestInfo"]["method"] == "currentScopes"
    assert "* errorCode:  AuthenticationFailed" in body["message"]


def raw(
    service: RunningService,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = None,
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(service.root_url + path, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read() or b"null")


def test_protocol_errors_for_bad_requests(queue_service: RunningService) -> None:
    status, headers, body = raw(queue_service, "GET", "/api/queue/v1/no-such-thing")
    assert (status, body["code"]) == (404, "ResourceNotFound")
    assert headers["Cache-Control"] == "no-store, no-cache, must-revalidate"
    assert headers["Access-Control-Allow-Origin"] == "*"

    status, _, body = raw(queue_service, "GET", "/api/auth/v1/clients/?colour=red")
    assert (status, body["code"]) == (400, "InvalidRequestArguments")

    status, _, body = raw(
        queue_service, "POST", "/api/auth/v1/scopes/expand", b"{nope", "application/json"
    )
    assert (status, body["code"]) == (400, "MalformedPayload")

    status, _, body = raw(queue_service, "POST", "/api/auth/v1/scopes/expand", b"{}", "text/plain")
    assert (status, body["code"]) == (400, "MalformedPayload")

    status, _, body = raw(
        queue_service, "POST", "/api/auth/v1/scopes/expand", b'{"scopes": [1]}', "application/json"
    )
    assert (status, body["code"]) == (400, "InputValidationError")
    assert "scopes[0]" in body["message"]

    status, _, body = raw(
        queue_service,
        "PUT",
        "/api/auth/v1/roles/x",
        b'{"scopes": [], "description": "d"}',
        "application/json",
    )
    assert (status, body["code"]) == (403, "InsufficientScopes")

    status, _, body = raw(
        queue_service,
        "POST",
        "/api/auth/v1/scopes/expand",
        b"[" + b"1," * (6 * 1024 * 1024) + b"1]",
        "application/json",
    )
    assert (status, body["code"]) == (413, "InputTooLarge")


def test_static_root_client_cannot_be_changed(
    root: taskcluster.Auth, queue_service: RunningService
) -> None:
    code, body = status_of(lambda: root.disableClient(queue_service.root_client_id))
    assert (code, body["code"]) == (400, "InputError")  # upstream's answer


# --- upstream's request schemas (issue 18, finding 3) ---------------------------------------


def test_client_and_role_requests_follow_upstream_schemas(root: taskcluster.Auth) -> None:
    name = f"test/{uuid.uuid4().hex[:10]}"
    good = {"expires": in_days(1), "description": "d", "scopes": ["queue:a"]}
    bad_clients = [
        {**good, "scopes": ["queue:**"]},
        {**good, "scopes": ["**"]},
        {key: value for key, value in good.items() if key != "description"},
        {**good, "scopes": ["queue:a", "queue:a"]},
        {**good, "deleteOnExpiration": "yes"},
        {**good, "deleteOnExpiration": 1},
        {**good, "expires": "2030-01-02"},  # a date-time with a UTC offset, as upstream
        {**good, "expires": "2030-01-02T03:04:05"},
    ]
    for body in bad_clients:
        code, error = status_of(lambda body=body: root.createClient(name, body))
        assert (code, error["code"]) == (400, "InputValidationError"), body
    assert status_of(lambda: root.client(name))[0] == 404  # nothing was stored
    root.createClient(name, {**good, "deleteOnExpiration": True})
    for body in bad_clients:
        code, error = status_of(lambda body=body: root.updateClient(name, body))
        assert (code, error["code"]) == (400, "InputValidationError"), body
    stored = root.client(name)
    assert (stored["scopes"], stored["deleteOnExpiration"]) == (["queue:a"], True)

    role = f"test-role/{uuid.uuid4().hex[:10]}"
    for body in (
        {"scopes": ["queue:**"], "description": "d"},
        {"scopes": ["queue:a"]},
        {"scopes": ["queue:a", "queue:a"], "description": "d"},
    ):
        code, error = status_of(lambda body=body: root.createRole(role, body))
        assert (code, error["code"]) == (400, "InputValidationError"), body
        assert status_of(lambda: root.role(role))[0] == 404
    # a single trailing star stays the ordinary wildcard
    assert root.createRole(role, {"scopes": ["queue:*"], "description": "d"})["scopes"] == [
        "queue:*"
    ]


def test_update_and_delete_a_client(
    root: taskcluster.Auth, make_client: Callable[..., Any]
) -> None:
    client_id, auth = make_client(["queue:before"])
    updated = root.updateClient(
        client_id,
        {"expires": in_days(2), "description": "after", "scopes": ["queue:after"]},
    )
    assert (updated["description"], updated["scopes"]) == ("after", ["queue:after"])
    assert root.client(client_id)["scopes"] == ["queue:after"]
    deadline = time.monotonic() + 5  # every replica's cache follows within its TTL
    while "queue:after" not in auth.currentScopes()["scopes"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "queue:before" not in auth.currentScopes()["scopes"]
    root.deleteClient(client_id)
    assert status_of(lambda: root.client(client_id))[0] == 404
    root.deleteClient(client_id)  # deleting again succeeds: safe to repeat
    with pytest.raises(TaskclusterAuthFailure):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            auth.currentScopes()
            time.sleep(0.2)
    assert (
        status_of(
            lambda: root.updateClient(client_id, {"expires": in_days(1), "description": "d"})
        )[0]
        == 404
    )


def test_read_and_delete_a_role(root: taskcluster.Auth) -> None:
    role_id = f"test-role/{uuid.uuid4().hex[:10]}"
    root.createRole(role_id, {"scopes": ["queue:r"], "description": "a role"})
    role = root.role(role_id)
    assert (role["roleId"], role["scopes"], role["description"]) == (role_id, ["queue:r"], "a role")
    assert "queue:r" in role["expandedScopes"]
    root.deleteRole(role_id)
    assert status_of(lambda: root.role(role_id))[0] == 404
    root.deleteRole(role_id)  # safe to repeat
    assert "queue:r" not in root.expandScopes({"scopes": [f"assume:{role_id}"]})["scopes"]
