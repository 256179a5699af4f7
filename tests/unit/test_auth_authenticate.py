"""The whole decision, fed by the official client over a real (local, recording) socket."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import mohawk
import pytest
import taskcluster

from shared import errors
from shared.api import Call, Endpoint
from shared.auth.authenticate import (
    AuthResult,
    ClientRecord,
    anonymous,
    authenticate,
    client_ids_needed,
)
from shared.auth.errors import AuthenticationFailed, InsufficientScopes
from shared.auth.hawk import HawkRequest, request_port, split_host_header
from shared.auth.http import Principal
from shared.auth.roles import RoleResolver
from shared.auth.scopes import expand_template
from shared.timeutil import utcnow

TASK_ID = "fN1SbArXTPSVFNUvaOlinQ"
WORKER_TOKEN = "workerAccessToken-0123456789abcdefABCDEF01"
ROOT_TOKEN = "rootAccessToken-0123456789abcdefABCDEF0123"
ROLES = {
    "anonymous": ["queue:ping", "queue:get-artifact:public/*"],
    "worker-pool:prov/*": ["queue:claim-work:prov/<..>", "queue:worker-id:<..>/*"],
    "project:ci": ["queue:create-task:project:ci", "queue:route:index.ci.*"],
}


class RecordingServer:
    """Answers every request with `{}` and keeps each one as the auth middleware will
    describe it: raw request target, Host-derived host and port, raw body."""

    def __init__(self) -> None:
        self.requests: list[HawkRequest] = []
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                host_header = self.headers.get("Host", "")
                recorded.append(
                    HawkRequest(
                        method=self.command,
                        resource=self.path,
                        host=split_host_header(host_header)[0],
                        port=request_port(host_header, None, None, tls=False),
                        authorization=self.headers.get("Authorization"),
                        content_type=self.headers.get("Content-Type"),
                        body=self.rfile.read(length) if length else b"",
                    )
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def last(self) -> HawkRequest:
        return self.requests[-1]


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer()
    recording.thread.start()
    try:
        yield recording
    finally:
        recording.server.shutdown()
        recording.server.server_close()
        recording.thread.join()


@pytest.fixture
def resolver() -> RoleResolver:
    return RoleResolver(ROLES)


def record(client_id: str, token: str, *scopes: str, **changes: Any) -> ClientRecord:
    changes.setdefault("expires", utcnow() + timedelta(days=1))
    return ClientRecord(clientId=client_id, accessToken=token, scopes=scopes, **changes)


CLIENTS = {
    "worker/w1": record(
        "worker/w1", WORKER_TOKEN, "assume:worker-pool:prov/wt", "queue:create-artifact:*"
    ),
    "static/root": record("static/root", ROOT_TOKEN, "*"),
}


def queue(server: RecordingServer, client_id: str, token: str, **options: Any) -> taskcluster.Queue:
    credentials: dict[str, Any] = {"clientId": client_id, "accessToken": token}
    if "certificate" in options:
        credentials["certificate"] = options.pop("certificate")
    return taskcluster.Queue({"rootUrl": server.root_url, "credentials": credentials, **options})


def temp_credentials(
    scopes: list[str],
    name: str | None = None,
    *,
    issuer: str = "static/root",
    token: str = ROOT_TOKEN,
    **span: Any,
) -> dict[str, str]:
    """Temporary credentials made by the official client (its accessToken is bytes)."""
    start = span.pop("start", utcnow() - timedelta(minutes=1))
    expiry = start + timedelta(**(span or {"hours": 1}))
    creds = taskcluster.createTemporaryCredentials(issuer, token, start, expiry, scopes, name=name)
    return {**creds, "accessToken": creds["accessToken"].decode()}


def auth(request: HawkRequest, resolver: RoleResolver, **shift: float) -> AuthResult:
    return authenticate(request, CLIENTS, resolver, utcnow() + timedelta(**shift))


def rejected(request: HawkRequest, resolver: RoleResolver, **shift: float) -> str:
    with pytest.raises(AuthenticationFailed) as info:
        auth(request, resolver, **shift)
    return info.value.message


# --- accepted -----------------------------------------------------------------------------


def test_calls_of_every_shape_verify(server: RecordingServer, resolver: RoleResolver) -> None:
    q = queue(server, "worker/w1", WORKER_TOKEN)
    calls = [
        lambda: q.task(TASK_ID),  # GET
        lambda: q.listTaskGroup(TASK_ID, query={"limit": 10, "continuationToken": "a/b"}),
        lambda: q.createTask(TASK_ID, {"provisionerId": "prov"}),  # PUT with a body
        lambda: q.claimWork("prov/wt", {"workerGroup": "g", "workerId": "w", "tasks": 1}),
        lambda: q.reportCompleted(TASK_ID, "0"),  # POST without a body
        lambda: q.createArtifact(TASK_ID, "0", "public/logs/live.log", {"storageType": "s3"}),
    ]
    for call in calls:
        call()
        request = server.last()
        result = auth(request, resolver)
        assert result.client_id == "worker/w1" and result.scheme == "hawk"
        assert result.satisfies("queue:claim-work:prov/wt")
        assert result.satisfies("queue:worker-id:wt/w1")
        assert result.satisfies("queue:ping"), "anonymous is always merged in"
        assert not result.satisfies("queue:claim-work:prov/other")
        assert client_ids_needed(request) == {"worker/w1"}
    targets = [r.resource for r in server.requests[-len(calls) :]]
    assert "/api/queue/v1/claim-work/prov%2Fwt" in targets
    assert f"/api/queue/v1/task/{TASK_ID}/runs/0/artifacts/public%2Flogs%2Flive.log" in targets


def test_result_fields(server: RecordingServer, resolver: RoleResolver) -> None:
    queue(server, "worker/w1", WORKER_TOKEN).task(TASK_ID)
    result = auth(server.last(), resolver)
    assert result.expires == CLIENTS["worker/w1"].expires
    assert result.scopes == resolver.expand(
        ["assume:worker-pool:prov/wt", "queue:create-artifact:*", "assume:anonymous"]
    )
    # the 403 production answers: shared.api's Call.authorize with this principal
    principal = Principal(result.client_id, result.scopes, result.expires, result.scope_set)
    endpoint = Endpoint("task", "GET", "/task/<taskId>", _unused, scopes="queue:get-task:<taskId>")
    call = Call(endpoint, None, {"taskId": "x"}, {}, None, None, principal, expand_template)  # type: ignore[arg-type]
    call.authorize({"AllOf": ["queue:create-artifact:x", "queue:ping"]})
    with pytest.raises(errors.InsufficientScopes) as info:
        call.authorize()
    assert (info.value.status, info.value.code) == (403, "InsufficientScopes")
    assert "worker/w1" in info.value.message and '"queue:get-task:x"' in info.value.message


async def _unused(call: Call) -> None:
    raise AssertionError("not called")


def test_auth_errors_are_the_protocols_own() -> None:
    # Raising the auth package's AuthenticationFailed anywhere must give a 401, not a 500.
    assert issubclass(AuthenticationFailed, errors.ApiError)
    assert (AuthenticationFailed.status, InsufficientScopes.status) == (401, 403)
    assert AuthenticationFailed is errors.AuthenticationFailed


@pytest.mark.parametrize("name", [None, "task-client/abc"])
def test_temporary_credentials_verify(
    server: RecordingServer, resolver: RoleResolver, name: str | None
) -> None:
    creds = temp_credentials(["queue:get-task:*", "assume:project:ci"], name=name)
    q = queue(server, creds["clientId"], creds["accessToken"], certificate=creds["certificate"])
    q.claimWork("prov/wt", {"workerGroup": "g", "workerId": "w", "tasks": 1})
    request = server.last()
    assert client_ids_needed(request) == {"static/root"}
    result = auth(request, resolver)
    assert result.client_id == (name or "static/root")
    assert result.satisfies("queue:get-task:x") and result.satisfies("queue:route:index.ci.x")
    assert result.satisfies("queue:ping")
    assert not result.satisfies("queue:claim-work:prov/wt"), "the root's `*` is not inherited"
    expiry = json.loads(creds["certificate"])["expiry"]
    assert result.expires == datetime.fromtimestamp(expiry / 1000, result.expires.tzinfo)


def test_authorized_scopes_restrict(server: RecordingServer, resolver: RoleResolver) -> None:
    q = queue(server, "worker/w1", WORKER_TOKEN, authorizedScopes=["queue:claim-work:prov/wt"])
    q.task(TASK_ID)
    result = auth(server.last(), resolver)
    assert result.satisfies("queue:claim-work:prov/wt") and result.satisfies("queue:ping")
    assert not result.satisfies("queue:worker-id:wt/w1")
    assert not result.satisfies("queue:create-artifact:x")


def test_authorized_scopes_may_use_what_anonymous_grants(
    server: RecordingServer, resolver: RoleResolver
) -> None:
    queue(server, "worker/w1", WORKER_TOKEN, authorizedScopes=["queue:get-artifact:public/x"]).task(
        TASK_ID
    )
    assert auth(server.last(), resolver).satisfies("queue:get-artifact:public/x")


def test_certificate_with_authorized_scopes(
    server: RecordingServer, resolver: RoleResolver
) -> None:
    creds = temp_credentials(["queue:get-task:*", "queue:status:*"], name="temp/x")
    q = queue(
        server,
        creds["clientId"],
        creds["accessToken"],
        certificate=creds["certificate"],
        authorizedScopes=["queue:status:abc"],
    )
    q.status(TASK_ID)
    result = auth(server.last(), resolver)
    assert result.satisfies("queue:status:abc") and not result.satisfies("queue:get-task:x")


@pytest.mark.parametrize("with_certificate", [False, True])
def test_signed_urls_verify(
    server: RecordingServer, resolver: RoleResolver, with_certificate: bool
) -> None:
    if with_certificate:
        creds = temp_credentials(["queue:get-task:*"], name="temp/url")
        q = queue(server, creds["clientId"], creds["accessToken"], certificate=creds["certificate"])
    else:
        q = queue(server, "worker/w1", WORKER_TOKEN)
    url = q.buildSignedUrl("task", TASK_ID)
    parts = urlsplit(url)
    request = HawkRequest(
        "GET", f"{parts.path}?{parts.query}", parts.hostname or "", parts.port or 80
    )
    assert client_ids_needed(request) == {"static/root" if with_certificate else "worker/w1"}
    result = auth(request, resolver)
    assert result.scheme == "bewit"
    assert result.client_id == ("temp/url" if with_certificate else "worker/w1")
    assert result.satisfies("queue:ping")
    assert auth(dataclasses.replace(request, method="HEAD"), resolver).scheme == "bewit"
    assert rejected(dataclasses.replace(request, method="POST"), resolver) == "Invalid method"
    assert rejected(request, resolver, seconds=901) == "Access expired"


def test_no_credentials_is_anonymous(server: RecordingServer, resolver: RoleResolver) -> None:
    taskcluster.Queue({"rootUrl": server.root_url}).task(TASK_ID)
    request = server.last()
    assert request.authorization is None and client_ids_needed(request) == set()
    result = auth(request, resolver)
    assert (result.client_id, result.scheme) == (None, "none")
    assert result.scopes == ("assume:anonymous", "queue:get-artifact:public/*", "queue:ping")
    assert auth(dataclasses.replace(request, authorization=""), resolver).scheme == "none"
    assert anonymous(resolver, utcnow()).scopes == result.scopes


# --- rejected -------------------------------------------------------------------------


@pytest.fixture
def post(server: RecordingServer) -> HawkRequest:
    queue(server, "worker/w1", WORKER_TOKEN).claimWork(
        "prov/wt", {"workerGroup": "g", "workerId": "w", "tasks": 1}
    )
    return server.last()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"resource": "/api/queue/v1/claim-work/prov/wt"}, "Bad mac"),
        ({"method": "PUT"}, "Bad mac"),
        ({"host": "localhost"}, "Bad mac"),
        ({"port": 443}, "Bad mac"),
        ({"body": b'{"workerGroup":"g","workerId":"x","tasks":1}'}, "Bad payload hash"),
    ],
)
def test_tampered_requests(
    post: HawkRequest, resolver: RoleResolver, change: dict[str, Any], message: str
) -> None:
    assert rejected(dataclasses.replace(post, **change), resolver) == message


def test_tampered_mac(post: HawkRequest, resolver: RoleResolver) -> None:
    header = post.authorization or ""
    start = header.index('mac="') + 5
    flipped = header[:start] + ("B" if header[start] == "A" else "A") + header[start + 1 :]
    assert rejected(dataclasses.replace(post, authorization=flipped), resolver) == "Bad mac"


@pytest.mark.parametrize("minutes", [-16, 16])
def test_stale_timestamps(post: HawkRequest, resolver: RoleResolver, minutes: int) -> None:
    assert rejected(post, resolver, minutes=minutes) == "Stale timestamp"


@pytest.mark.parametrize(
    ("clients", "message"),
    [
        ({}, "Client with clientId 'worker/w1' not found"),
        (
            {"worker/w1": record("worker/w1", WORKER_TOKEN, disabled=True)},
            "Client with clientId 'worker/w1' is disabled",
        ),
        (
            {
                "worker/w1": record(
                    "worker/w1", WORKER_TOKEN, expires=utcnow() - timedelta(seconds=1)
                )
            },
            "Client with clientId 'worker/w1' has expired",
        ),
        ({"worker/w1": record("worker/w1", "another-token-0123456789abcdefABCD")}, "Bad mac"),
    ],
)
def test_client_problems(
    post: HawkRequest, resolver: RoleResolver, clients: dict[str, ClientRecord], message: str
) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        authenticate(post, clients, resolver, utcnow())
    assert info.value.message == message


def test_naive_expiry_from_the_database_is_utc(post: HawkRequest, resolver: RoleResolver) -> None:
    naive = (utcnow() + timedelta(hours=1)).replace(tzinfo=None)
    clients = {"worker/w1": record("worker/w1", WORKER_TOKEN, "x", expires=naive)}
    assert authenticate(post, clients, resolver, utcnow()).expires.tzinfo is not None


def cert_request(server: RecordingServer, creds: dict[str, str]) -> HawkRequest:
    queue(server, creds["clientId"], creds["accessToken"], certificate=creds["certificate"]).task(
        TASK_ID
    )
    return server.last()


def test_certificate_time_rules(server: RecordingServer, resolver: RoleResolver) -> None:
    later = temp_credentials(["queue:ping"], start=utcnow() + timedelta(minutes=10))
    assert rejected(cert_request(server, later), resolver) == "ext.certificate.start > now"
    expired = temp_credentials(["queue:ping"], start=utcnow() - timedelta(hours=2))
    assert rejected(cert_request(server, expired), resolver) == "ext.certificate.expiry < now"
    soon = temp_credentials(["queue:ping"], start=utcnow() - timedelta(hours=1, minutes=3))
    assert auth(cert_request(server, soon), resolver).expires < utcnow(), "5 min of grace"


def test_over_long_certificate(server: RecordingServer, resolver: RoleResolver) -> None:
    from shared.auth.certificates import sign, signature_text

    creds = temp_credentials(["queue:ping"], days=31)
    cert = json.loads(creds["certificate"])
    assert auth(cert_request(server, creds), resolver).client_id == "static/root"
    cert["expiry"] += 1
    cert["signature"] = sign(
        ROOT_TOKEN,
        signature_text(
            seed=cert["seed"], start=cert["start"], expiry=cert["expiry"], scopes=cert["scopes"]
        ),
    )
    creds["certificate"] = json.dumps(cert)
    message = rejected(cert_request(server, creds), resolver)
    assert message == "ext.certificate cannot last longer than 31 days!"


def test_certificate_issuer_rules(server: RecordingServer, resolver: RoleResolver) -> None:
    by_worker = {"issuer": "worker/w1", "token": WORKER_TOKEN}
    # An issuer without auth:create-client:<name>.
    weak = temp_credentials(["queue:ping"], name="t/x", **by_worker)
    assert rejected(cert_request(server, weak), resolver).startswith(
        "ext.certificate issuer `worker/w1` doesn't have `auth:create-client:t/x`"
    )
    # Scopes the issuer lacks.
    greedy = temp_credentials(["secrets:get:x"], **by_worker)
    message = rejected(cert_request(server, greedy), resolver)
    assert "doesn't satisfy all certificate scopes" in message
    # A certificate claiming an issuer (here the root) it was not signed by.
    forged = temp_credentials(["queue:ping"], name="t/y", **by_worker)
    forged["certificate"] = json.dumps(
        {**json.loads(forged["certificate"]), "issuer": "static/root"}
    )
    assert "signature is not valid" in rejected(cert_request(server, forged), resolver)


def test_bad_certificate_signature(server: RecordingServer, resolver: RoleResolver) -> None:
    creds = temp_credentials(["queue:ping"])
    cert = json.loads(creds["certificate"])
    creds["certificate"] = json.dumps({**cert, "scopes": ["queue:ping", "queue:get-task:*"]})
    message = rejected(cert_request(server, creds), resolver)
    assert message == "ext.certificate.signature is not valid"


def test_temporary_credentials_cannot_issue_more(
    server: RecordingServer, resolver: RoleResolver
) -> None:
    first = temp_credentials(["*"], name="temp/first")
    for name in [None, "temp/second"]:
        nested = temp_credentials(["x"], name, issuer="temp/first", token=first["accessToken"])
        assert "'temp/first' not found" in rejected(cert_request(server, nested), resolver)
    # Re-using the real issuer's name with the temporary token: the signature fails.
    nested = temp_credentials(["x"], token=first["accessToken"])
    message = rejected(cert_request(server, nested), resolver)
    assert message == "ext.certificate.signature is not valid"


def test_authorized_scopes_must_be_held(server: RecordingServer, resolver: RoleResolver) -> None:
    queue(server, "worker/w1", WORKER_TOKEN, authorizedScopes=["queue:get-task:x"]).task(TASK_ID)
    message = rejected(server.last(), resolver)
    assert message.startswith("Supplied credentials do not satisfy authorizedScopes")


@pytest.mark.parametrize(
    ("authorized", "message"),
    [
        ("queue:ping", "ext.authorizedScopes must be an array"),
        (["ok", 5], "ext.authorizedScopes must be an array of valid scopes"),
        (["bad\nscope"], "ext.authorizedScopes must be an array of valid scopes"),
    ],
)
def test_authorized_scopes_shape(
    server: RecordingServer, resolver: RoleResolver, authorized: Any, message: str
) -> None:
    queue(server, "worker/w1", WORKER_TOKEN, authorizedScopes=authorized).task(TASK_ID)
    assert rejected(server.last(), resolver) == message


def test_empty_authorized_scopes_leave_only_anonymous(
    server: RecordingServer, resolver: RoleResolver
) -> None:
    # [] is truthy in JavaScript: upstream restricts to nothing (plus anonymous).
    queue(server, "worker/w1", WORKER_TOKEN, authorizedScopes=[]).task(TASK_ID)
    assert auth(server.last(), resolver).scopes == anonymous(resolver, utcnow()).scopes


def sign_with_ext(ext: str) -> HawkRequest:
    sender = mohawk.Sender(
        credentials={"id": "worker/w1", "key": WORKER_TOKEN, "algorithm": "sha256"},
        ext=ext,
        url="http://127.0.0.1:8080/api/queue/v1/ping",
        content="",
        content_type="",
        method="GET",
    )
    return HawkRequest("GET", "/api/queue/v1/ping", "127.0.0.1", 8080, sender.request_header)


@pytest.mark.parametrize(
    ("ext", "message"),
    [
        ("bm90IGpzb24", "Failed to parse ext"),  # base64 of "not json"
        ("!!!!", "Failed to parse ext"),
        ("WzFd", "ext must be a JSON object"),  # [1]
        ("eyJjZXJ0aWZpY2F0ZSI6ImdhcmJhZ2UifQ", "ext.certificate must be a JSON object"),
    ],
)
def test_bad_ext(resolver: RoleResolver, ext: str, message: str) -> None:
    request = sign_with_ext(ext)
    assert rejected(request, resolver) == message
    assert client_ids_needed(request) == {"worker/w1"}


@pytest.mark.parametrize("ext", ["eyJjZXJ0aWZpY2F0ZSI6bnVsbH0", "eyJjZXJ0aWZpY2F0ZSI6IiJ9", ""])
def test_falsy_certificate_or_empty_ext_is_ignored(resolver: RoleResolver, ext: str) -> None:
    # {"certificate":null}, {"certificate":""}, and no ext at all.
    assert auth(sign_with_ext(ext), resolver).client_id == "worker/w1"


def test_header_and_bewit_together(server: RecordingServer, resolver: RoleResolver) -> None:
    q = queue(server, "worker/w1", WORKER_TOKEN)
    signed_url = urlsplit(q.buildSignedUrl("task", TASK_ID))
    q.task(TASK_ID)
    both = dataclasses.replace(server.last(), resource=f"{signed_url.path}?{signed_url.query}")
    assert client_ids_needed(both) == set()
    assert rejected(both, resolver) == "Multiple authentications"


def test_malformed_header_needs_no_lookup(resolver: RoleResolver) -> None:
    request = HawkRequest("GET", "/x", "h", 80, 'Hawk id="a"')
    assert client_ids_needed(request) == set()
    assert rejected(request, resolver) == "Missing attributes"
    assert rejected(dataclasses.replace(request, authorization="Bearer xyz"), resolver) == (
        "Unsupported authorization scheme"
    )
