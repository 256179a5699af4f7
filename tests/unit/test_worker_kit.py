"""The worker kit's pure parts: the gzip choice, settings from the environment, log names
and maxRunTime."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla_worker.artifacts import content_type_for, should_gzip
from flotilla_worker.run import backing_log_name, default_log_name, max_run_time_of
from flotilla_worker.settings import SettingsError, WorkerSettings


@pytest.mark.parametrize(
    ("name", "gzip"),
    [
        ("a.txt", True),
        ("a.log", True),
        ("a.json", True),
        ("a.html", True),
        ("a.svg", True),
        ("a.tar", True),
        ("a.bin", False),
        ("noext", False),
        ("a.so", False),
        ("a.gz", False),
        ("a.tar.gz", False),
        ("a.ZIP", False),
        ("a.png", False),
        ("a.jpeg", False),
        ("a.mp4", False),
        ("a.woff2", False),
    ],
)
def test_only_text_like_content_is_gzipped(name: str, gzip: bool) -> None:
    assert should_gzip(name) is gzip


def test_an_explicit_content_type_decides() -> None:
    assert should_gzip("report", "application/json; charset=utf-8")
    assert should_gzip("x.dat", "application/vnd.api+json")
    assert not should_gzip("x.txt", "application/octet-stream")
    assert content_type_for("a.yml") == "text/yaml"


def test_settings_from_the_environment() -> None:
    env = {
        "TASKCLUSTER_ROOT_URL": "http://tc",
        "TASKCLUSTER_CLIENT_ID": "me",
        "TASKCLUSTER_ACCESS_TOKEN": "secret",
        "FLOTILLA_WORKER_TASK_QUEUE_ID": "p/w",
        "FLOTILLA_WORKER_WORKER_GROUP": "g",
        "FLOTILLA_WORKER_WORKER_ID": "w1",
        "FLOTILLA_WORKER_CAPACITY": "3",
        "FLOTILLA_WORKER_AFTER_IDLE_S": "2.5",
        "FLOTILLA_WORKER_LIVE_LOG": "false",
        "FLOTILLA_WORKER_WORK_ROOT": "/tmp/x",
    }
    settings = WorkerSettings.from_env(env, worker_id="override")
    assert (settings.capacity, settings.after_idle_s, settings.live_log) == (3, 2.5, False)
    assert settings.work_root == Path("/tmp/x") and settings.worker_id == "override"
    assert settings.credentials() == {"clientId": "me", "accessToken": "secret"}
    assert (settings.provisioner_id, settings.worker_type, settings.pool_id) == ("p", "w", "p/w")
    assert "secret" not in repr(settings)


def test_settings_name_what_is_missing_or_wrong() -> None:
    with pytest.raises(SettingsError, match="FLOTILLA_WORKER_WORKER_ID"):
        WorkerSettings.from_env(
            {"FLOTILLA_WORKER_ROOT_URL": "http://tc"}, task_queue_id="p/w", worker_group="g"
        )
    with pytest.raises(SettingsError, match="provisionerId"):
        WorkerSettings("http://tc", "no-slash", "g", "w", client_id="c", access_token="t")
    with pytest.raises(SettingsError, match="client_id and access_token"):
        WorkerSettings("http://tc", "p/w", "g", "w")
    with pytest.raises(SettingsError, match="static_secret or registration_token"):
        WorkerSettings("http://tc", "p/w", "g", "w", provider_id="static")
    registering = WorkerSettings("http://tc", "p/w", "g", "w", provider_id="s", static_secret="x")
    assert registering.client_id == ""


def test_log_names_follow_both_upstream_workers() -> None:
    assert default_log_name({"payload": {}}) == "public/logs/live.log"
    assert default_log_name({"payload": "junk"}) == "public/logs/live.log"
    assert default_log_name({"payload": {"log": "a/b.log"}}) == "a/b.log"
    assert default_log_name({"payload": {"logs": {"live": "x/live.log"}}}) == "x/live.log"
    assert backing_log_name("public/logs/live.log") == "public/logs/live_backing.log"
    assert backing_log_name("apple/banana.log.txt") == "apple/banana.log_backing.txt"
    assert backing_log_name("noext") == "noext_backing"


def test_max_run_time_comes_from_the_payload() -> None:
    assert max_run_time_of({"payload": {"maxRunTime": 5}}, None) == 5
    assert max_run_time_of({"payload": {"maxRunTime": 0}}, 7) == 7
    assert max_run_time_of({"payload": {"maxRunTime": True}}, None) is None
    assert max_run_time_of({"payload": []}, 9) == 9
