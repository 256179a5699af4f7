"""The process engine's pure parts: generic-worker payloads and the task environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.process_worker.engine import live_log_name, task_environment
from services.process_worker.mounts import MountError, inside
from services.process_worker.payload import (
    ArtifactContent,
    Payload,
    WritableDirectoryCache,
    parse_payload,
)


def test_a_generic_worker_payload_parses() -> None:
    payload = parse_payload(
        {
            "command": [["sh", "-c", "true"], ["echo", "x"]],
            "maxRunTime": 60,
            "env": {"A": "1"},
            "artifacts": [{"type": "directory", "path": "out", "name": "public/out"}],
            "mounts": [
                {"cacheName": "c", "directory": "cache"},
                {"file": "f", "content": {"taskId": "abc", "artifact": "public/x"}},
            ],
            "onExitStatus": {"retry": [36], "purgeCaches": [2]},
            "features": {"liveLog": True},
        },
        86400,
    )
    assert isinstance(payload, Payload)
    assert isinstance(payload.mounts[0], WritableDirectoryCache)
    assert isinstance(payload.mounts[1].content, ArtifactContent)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"command": [["true"]]}, "maxRunTime: Field required"),
        ({"command": [], "maxRunTime": 5}, "command"),
        ({"command": ["true"], "maxRunTime": 5}, "command.0"),
        ({"command": [["true"]], "maxRunTime": 90000}, "exceeds this worker's 86400"),
        ({"command": [["true"]], "maxRunTime": 5, "features": {"chainOfTrust": True}}, "chainOf"),
        ({"command": [["true"]], "maxRunTime": 5, "osGroups": ["a"]}, "osGroups"),
        ({"image": "x", "maxRunTime": 5}, "image: Extra inputs are not permitted"),
    ],
)
def test_what_is_not_supported_is_malformed(raw: dict, problem: str) -> None:
    problems = parse_payload(raw, 86400)
    assert isinstance(problems, list) and any(problem in p for p in problems), problems


def test_the_worker_s_variables_win_and_its_credentials_never_leak() -> None:
    worker_env = {"PATH": "/bin", "TASKCLUSTER_ACCESS_TOKEN": "secret", "HOME": "/root"}
    env = task_environment(worker_env, {"TASK_ID": "forged", "MINE": "1"}, {"TASK_ID": "T"})
    assert env == {"PATH": "/bin", "MINE": "1", "TASK_ID": "T"}


def test_mount_paths_stay_inside_the_task_directory(tmp_path: Path) -> None:
    assert inside(tmp_path, "a/b") == (tmp_path / "a" / "b").resolve()
    with pytest.raises(MountError):
        inside(tmp_path, "../escape")


def test_settings_come_from_flags_environment_and_a_yaml_file(tmp_path: Path) -> None:
    from flotilla_worker import cli
    from services.process_worker.__main__ import EXTRAS

    config = tmp_path / "worker.yml"
    config.write_text("capacity: 3\nmax_task_run_time_s: 600\nworker_group: from-yaml\n")
    env = {
        "TASKCLUSTER_ROOT_URL": "http://tc",
        "TASKCLUSTER_CLIENT_ID": "c",
        "TASKCLUSTER_ACCESS_TOKEN": "t",
        "FLOTILLA_WORKER_CAPACITY": "4",
    }
    argv = ["--task-queue-id=flotilla/process", "--worker-id=p1", f"--config={config}"]
    settings, extras = cli.load(argv, env, prog="p", description="d", extras=EXTRAS)
    assert (settings.capacity, settings.worker_group, settings.worker_id) == (4, "from-yaml", "p1")
    assert extras["max_task_run_time_s"] == 600 and extras["cache_root"] == EXTRAS["cache_root"][1]
    help_text = " ".join(cli.parser("p", "d", EXTRAS).format_help().split())
    assert "where caches live (default: " in help_text
    assert "env FLOTILLA_WORKER_CACHE_ROOT)" in help_text
    assert "(default: 86400; env FLOTILLA_WORKER_MAX_TASK_RUN_TIME_S)" in help_text


def test_the_live_log_follows_logs_live_and_features_live_log() -> None:
    assert live_log_name({"payload": {}}) == "public/logs/live.log"
    assert live_log_name({"payload": {"logs": {"live": "x/l.log"}}}) == "x/l.log"
    assert live_log_name({"payload": {"features": {"liveLog": False}}}) is None
    assert live_log_name({"payload": "junk"}) == "public/logs/live.log"
