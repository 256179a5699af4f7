"""docker-worker payload checks (reference §1): schema, features, scopes, names."""

from __future__ import annotations

import pytest

from services.docker_worker.payload import (
    Payload,
    TaskImage,
    backing_log_name,
    feature_errors,
    parse_payload,
    scope_errors,
)

ENABLED = ("localLiveLog", "artifacts")


def parsed(raw: dict) -> Payload:
    result = parse_payload(raw)
    assert isinstance(result, Payload), result
    return result


def test_a_minimal_payload_gets_upstreams_defaults() -> None:
    payload = parsed({"image": "flotilla/busybox", "maxRunTime": 5})
    assert payload.command == [] and payload.env == {} and payload.artifacts == {}
    assert payload.log == "public/logs/live.log"
    assert payload.image_name() == "flotilla/busybox:latest"
    assert payload.uses("localLiveLog", ENABLED) and payload.uses("artifacts", ENABLED)
    assert not payload.uses("chainOfTrust", ENABLED)


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("busybox:1.36", "busybox:1.36"),
        ("registry:5000/team/img", "registry:5000/team/img:latest"),
        ("img@sha256:abc", "img@sha256:abc"),
        ({"type": "docker-image", "name": "a/b"}, "a/b:latest"),
    ],
)
def test_image_names_default_the_tag_to_latest(image: object, name: str) -> None:
    assert parsed({"image": image, "maxRunTime": 1}).image_name() == name


def test_task_image_is_accepted_and_indexed_image_is_refused() -> None:
    task_image = {"type": "task-image", "taskId": "R1rbDMVJRGCoLBaSjh_AmQ", "path": "public/i.tar"}
    assert isinstance(parsed({"image": task_image, "maxRunTime": 1}).image, TaskImage)
    refused = parse_payload(
        {"image": {"type": "indexed-image", "namespace": "n", "path": "p"}, "maxRunTime": 1}
    )
    assert refused == ["image: indexed-image is not supported by this worker (no index service)"]


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"maxRunTime": 5}, "image"),
        ({"image": "x"}, "maxRunTime"),
        ({"image": "x", "maxRunTime": 0}, "maxRunTime"),
        ({"image": "x", "maxRunTime": "5"}, "maxRunTime"),
        ({"image": "x", "maxRunTime": 1.5}, "maxRunTime"),
        ({"image": "x", "maxRunTime": 5, "command": "echo"}, "command"),
        ({"image": "x", "maxRunTime": 5, "env": {"A": 1}}, "env.A"),
        ({"image": "x", "maxRunTime": 5, "surprise": True}, "surprise"),
        (
            {"image": "x", "maxRunTime": 5, "artifacts": {"a": {"type": "volume", "path": "/"}}},
            "artifacts",
        ),
        ({"image": "x", "maxRunTime": 5, "artifacts": {"a": {"type": "file"}}}, "artifacts.a.path"),
        ({"image": "x", "maxRunTime": 5, "cache": {"../up": "/c"}}, "cache"),
        ({"image": "x", "maxRunTime": 5, "cache": {"a::b": "/c"}}, "cache"),
        ({"image": "x", "maxRunTime": 5, "cache": {"ok": "relative"}}, "cache"),
        ({"image": "x", "maxRunTime": 5, "onExitStatus": {"retry": ["1"]}}, "onExitStatus"),
        ({"image": "", "maxRunTime": 5}, "image"),
        ("not an object", "payload"),
    ],
)
def test_schema_errors_name_the_field(raw: object, where: str) -> None:
    errors = parse_payload(raw)
    assert isinstance(errors, list) and errors
    assert any(error.startswith(where) for error in errors), errors


def test_features_unknown_or_disabled_fail_before_the_schema() -> None:
    raw = {"features": {"teleport": True, "dind": True, "chainOfTrust": False, "artifacts": True}}
    assert feature_errors(raw, ENABLED) == [
        "teleport is not part of valid features",
        "dind is not enabled on this worker",
    ]
    assert feature_errors({"features": "junk"}, ENABLED) == []
    assert feature_errors(None, ENABLED) == []


def test_a_feature_turned_off_by_the_task_or_the_worker_is_not_used() -> None:
    payload = parsed({"image": "x", "maxRunTime": 1, "features": {"localLiveLog": False}})
    assert not payload.uses("localLiveLog", ENABLED)
    assert not parsed({"image": "x", "maxRunTime": 1}).uses("artifacts", ("localLiveLog",))


def test_caches_and_privileged_need_scopes() -> None:
    payload = parsed(
        {
            "image": "x",
            "maxRunTime": 1,
            "cache": {"a": "/a", "b": "/b", "c": "/c"},
            "capabilities": {"privileged": True},
        }
    )
    scopes = ["docker-worker:cache:a", "docker-worker:cache:b:prov/wt", "other"]
    errors = scope_errors(payload, scopes, "prov/wt", allow_privileged=True)
    assert errors == [
        "Insufficient scopes to attach cache 'c': need docker-worker:cache:c",
        "Insufficient scopes to run a privileged container: need "
        "docker-worker:capability:privileged",
    ]
    everything = ["docker-worker:*"]
    assert scope_errors(payload, everything, "prov/wt", allow_privileged=True) == []
    assert scope_errors(payload, everything, "prov/wt", allow_privileged=False) == [
        "Privileged containers are not allowed on this worker"
    ]


def test_devices_are_refused() -> None:
    payload = parsed({"image": "x", "maxRunTime": 1, "capabilities": {"devices": {"kvm": True}}})
    assert scope_errors(payload, ["*"], "p/w", allow_privileged=True) == [
        "Device 'kvm' is not available on this worker"
    ]


@pytest.mark.parametrize(
    ("live", "backing"),
    [
        ("public/logs/live.log", "public/logs/live_backing.log"),
        ("apple/banana.log.txt", "apple/banana.log_backing.txt"),
        ("public/noext", "public/noext_backing"),
    ],
)
def test_backing_log_names(live: str, backing: str) -> None:
    assert backing_log_name(live) == backing
