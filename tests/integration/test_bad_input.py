"""Hostile and careless input against the running queue, over raw HTTP: every refusal is
a 4xx in the protocol's `{code, message, requestInfo}` format and changes nothing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

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
