"""Hostile and careless input against the running queue, over raw HTTP: every refusal is
a 4xx in the protocol's `{code, message, requestInfo}` format and changes nothing."""

from __future__ import annotations

import base64
import json
import re
import socket
import urllib.parse
from typing import Any

import pymongo
import pytest
import requests
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from shared.config import load_settings
from shared.taskstore import TASKS
from tests.conftest import RunningService
from tests.integration.queue_support import new_task_queue_id, root_queue, task_definition

HEADERS = {"Content-Type": "application/json"}


def refused(call: Any, *args: Any, **kwargs: Any) -> TaskclusterRestFailure:
    with pytest.raises(TaskclusterRestFailure) as excinfo:
        call(*args, **kwargs)
    return excinfo.value


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def assert_protocol_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "requestInfo"}, body
    assert body["code"] == code, body
    return body


# --- finding 1: nesting depth ------------------------------------------------------------


def test_deeply_nested_json_is_a_400_on_any_endpoint(queue_service: RunningService) -> None:
    url = f"{queue_service.root_url}/api/queue/v1/task/{taskcluster.slugId()}"
    for levels in (100, 2000, 100_000):
        response = requests.put(url, data=deep(levels), headers=HEADERS, timeout=30)
        assert_protocol_error(response, 400, "MalformedPayload")
    # a deep payload inside an otherwise valid task
    payload: Any = {}
    for _ in range(200):
        payload = {"a": payload}
    body = json.dumps(task_definition(new_task_queue_id(), payload=payload))
    response = requests.put(url, data=body, headers=HEADERS, timeout=30)
    assert_protocol_error(response, 400, "MalformedPayload")
    auth = f"{queue_service.root_url}/api/auth/v1/clients/x%2Fy"
    response = requests.put(auth, data=deep(5000), headers=HEADERS, timeout=30)
    assert_protocol_error(response, 400, "MalformedPayload")


def test_deeply_nested_hawk_ext_is_a_400_before_authentication(
    queue_service: RunningService,
) -> None:
    ext = base64.b64encode(('{"a":' + deep(5000) + "}").encode()).decode()
    header = f'Hawk id="nobody", ts="1", nonce="n", mac="bWFj", ext="{ext}"'
    url = f"{queue_service.root_url}/api/queue/v1/task/{taskcluster.slugId()}"
    response = requests.get(url, headers={"Authorization": header}, timeout=30)
    assert_protocol_error(response, 400, "MalformedPayload")


def test_reasonable_nesting_still_works(queue_service: RunningService) -> None:
    payload: Any = {"leaf": True}
    for _ in range(30):
        payload = {"a": payload}
    task_id = taskcluster.slugId()
    queue = root_queue(queue_service)
    queue.createTask(task_id, task_definition(new_task_queue_id(), payload=payload))
    assert queue.task(task_id)["payload"] == payload


def test_a_deep_continuation_token_is_a_400(queue_service: RunningService) -> None:
    token = base64.urlsafe_b64encode(deep(1500).encode()).decode()
    queue = root_queue(queue_service)
    error = refused(queue.listProvisioners, query={"continuationToken": token})
    assert (error.status_code, error.body["code"]) == (400, "InputError")


# --- finding 2: lone surrogates and non-UTF-8 bodies -----------------------------------------


def test_lone_surrogates_are_refused_and_nothing_is_stored(queue_service: RunningService) -> None:
    queue = root_queue(queue_service)
    tq = new_task_queue_id()
    for overrides in (
        {"payload": {"s": "\ud800"}},
        {"extra": {"s": "x\udfffy"}},
        {"payload": {"\ud800key": 1}},
        {"tags": {"t": "\udc00"}},
    ):
        task_id = taskcluster.slugId()
        error = refused(queue.createTask, task_id, task_definition(tq, **overrides))
        assert (error.status_code, error.body["code"]) == (400, "MalformedPayload"), overrides
        assert "surrogate" in error.body["message"]
        assert refused(queue.task, task_id).status_code == 404
    # a proper pair (an emoji written as two escapes) is a character, not a surrogate
    task_id = taskcluster.slugId()
    queue.createTask(task_id, task_definition(tq, payload={"s": "\U0001f600"}))
    assert queue.task(task_id)["payload"] == {"s": "\U0001f600"}


def test_json_bodies_must_be_utf8(queue_service: RunningService) -> None:
    url = f"{queue_service.root_url}/api/queue/v1/task/{taskcluster.slugId()}"
    body = json.dumps(task_definition(new_task_queue_id()))
    for encoded in (body.encode("utf-16"), body.encode("utf-16-le"), body.encode("utf-32")):
        response = requests.put(url, data=encoded, headers=HEADERS, timeout=30)
        assert_protocol_error(response, 400, "MalformedPayload")
    response = requests.put(url, data=b"\xff" + body.encode(), headers=HEADERS, timeout=30)
    assert_protocol_error(response, 400, "MalformedPayload")


# --- finding 8: every refusal in the protocol's format ---------------------------------------


def raw_request(service: RunningService, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send bytes as they are (no client library would send these) and parse the answer."""
    parts = urllib.parse.urlsplit(service.root_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head, answer[:500]
    return status, json.loads(body)


def test_unmatched_routes_get_a_protocol_404(queue_service: RunningService) -> None:
    for method, path in (
        ("GET", "/api/queue/v1/no-such-thing"),
        ("GET", "/"),
        ("DELETE", "/api/queue/v1/ping"),
        ("PATCH", "/api/auth/v1/clients/"),
    ):
        response = requests.request(method, queue_service.root_url + path, timeout=30)
        body = assert_protocol_error(response, 404, "ResourceNotFound")
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert body["requestInfo"]["method"] == "unknown"


def test_over_long_urls_and_headers_get_a_protocol_400(queue_service: RunningService) -> None:
    long_path = "/api/queue/v1/task/" + "a" * 20_000
    status, body = raw_request(
        queue_service, f"GET {long_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    assert (status, set(body)) == (400, {"code", "message", "requestInfo"})
    assert body["code"] == "InvalidRequestArguments"
    header = "X-Big: " + "b" * 100_000
    status, body = raw_request(
        queue_service, f"GET /api/queue/v1/ping HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode()
    )
    assert (status, body["code"]) == (400, "InvalidRequestArguments")
    status, body = raw_request(queue_service, b"NOT-HTTP\r\n\r\n")
    assert (status, body["code"]) == (400, "InvalidRequestArguments")
    assert requests.get(f"{queue_service.root_url}/api/queue/v1/ping", timeout=30).ok


def test_the_static_client_guard_is_a_400(queue_service: RunningService) -> None:
    auth = taskcluster.Auth(queue_service.client_options())
    for call in (auth.disableClient, auth.deleteClient, auth.resetAccessToken):
        error = refused(call, queue_service.root_client_id)
        assert (error.status_code, error.body["code"]) == (400, "InputError")


# --- the one error boundary: anything unexpected is a logged 500 with an incident id -------


def test_an_unexpected_failure_is_a_500_with_an_incident_id_in_the_log(
    queue_service: RunningService,
) -> None:
    task_id = taskcluster.slugId()
    # a task document no code can read (what a bug or a hand edit could leave)
    with pymongo.MongoClient(load_settings().mongo_url) as client:
        tasks = client[queue_service.mongo_db][TASKS]
        tasks.insert_one({"_id": task_id, "definition": 1})
        try:
            error = refused(root_queue(queue_service).status, task_id)
        finally:  # the session's queue is shared: leave no poison behind
            tasks.delete_one({"_id": task_id})
    assert (error.status_code, error.body["code"]) == (500, "InternalServerError")
    assert set(error.body) == {"code", "message", "requestInfo"}
    incident = re.search(r"incidentId ([0-9a-f-]{36})", error.body["message"])
    assert incident is not None, error.body["message"]
    logged = [
        json.loads(line)
        for line in queue_service.log_path.read_text().splitlines()
        if incident.group(1) in line
    ]
    assert len(logged) == 1 and logged[0]["level"] == "error"
    assert "Traceback" in logged[0]["exception"]
