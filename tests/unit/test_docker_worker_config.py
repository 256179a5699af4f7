"""Worker configuration: precedence flags > env > YAML > defaults, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.docker_worker.config import ConfigError, load_config

BASE_ENV = {
    "TASKCLUSTER_ROOT_URL": "http://queue",
    "TASKCLUSTER_CLIENT_ID": "c",
    "TASKCLUSTER_ACCESS_TOKEN": "t",
}
BASE_ARGS = ["--task-queue-id=prov/wt", "--worker-group=g", "--worker-id=w"]


def test_flags_beat_environment_beat_yaml(tmp_path: Path) -> None:
    config_file = tmp_path / "worker.yml"
    config_file.write_text(
        "provisionerId: yprov\nworkerType: ywt\ncapacity: 2\nafterIdleSeconds: 30\n"
        "workerGroup: yg\nworkerId: yw\nfeatures: [localLiveLog]\n"
    )
    env = {**BASE_ENV, "FLOTILLA_WORKER_CAPACITY": "3", "FLOTILLA_WORKER_WORKER_ID": "ew"}
    config = load_config(["--config", str(config_file), "--worker-id=fw"], env)
    assert config.task_queue_id == "yprov/ywt"
    assert (config.capacity, config.worker_id, config.worker_group) == (3, "fw", "yg")
    assert config.after_idle_s == 30 and config.features == ("localLiveLog",)
    assert config.root_url == "http://queue" and config.credentials() == {
        "clientId": "c",
        "accessToken": "t",
    }


def test_defaults_and_the_flotilla_root_url_fallback() -> None:
    env = {
        "FLOTILLA_ROOT_URL": "http://flotilla",
        "TASKCLUSTER_CLIENT_ID": "c",
        "TASKCLUSTER_ACCESS_TOKEN": "t",
    }
    config = load_config(BASE_ARGS, env)
    assert config.root_url == "http://flotilla"
    assert (config.capacity, config.after_idle_s, config.allow_privileged) == (1, None, False)
    assert config.features == ("localLiveLog", "artifacts")
    assert config.worker_key == "g/w" and config.provisioner_id == "prov"


def test_missing_settings_say_where_to_set_them() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(["--worker-group=g"], {})
    message = str(raised.value)
    assert "worker_id: Field required (set --worker-id, FLOTILLA_WORKER_WORKER_ID" in message
    assert "root_url" in message and "access_token" in message


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--capacity=0"], "capacity"),
        (["--capacity=lots"], "capacity"),
        (["--task-queue-id=no-slash"], "task_queue_id"),
        (["--features=localLiveLog,dind"], "unsupported features ['dind']"),
        (["--provisioner-id=p"], "provisioner_id and worker_type must be given together"),
        (["--provisioner-id=p", "--worker-type=x"], "contradicts"),
        (["--after-idle-s=-1"], "after_idle_s"),
    ],
)
def test_bad_values_are_reported(args: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match="invalid worker configuration") as raised:
        load_config([*BASE_ARGS, *args], BASE_ENV)
    assert fragment in str(raised.value)


def test_yaml_problems_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("capacity: [\n")
    with pytest.raises(ConfigError, match="cannot read worker config file"):
        load_config(["--config", str(bad)], BASE_ENV)
    unknown = tmp_path / "unknown.yml"
    unknown.write_text("capacty: 3\n")
    with pytest.raises(ConfigError, match="unknown settings in .*: capacty"):
        load_config(["--config", str(unknown), *BASE_ARGS], BASE_ENV)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(["--config", str(tmp_path / "absent.yml")], BASE_ENV)


def test_help_describes_every_flag_with_its_default_and_variable() -> None:
    """issue 20: `--help` used to list flag names only."""
    import re
    import subprocess
    import sys

    from services.docker_worker.config import _SETTABLE

    shown = subprocess.run(
        [sys.executable, "-m", "services.docker_worker", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "1000", "PATH": ""},
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    lines: dict[str, str] = {}  # flag -> its whole entry on one line
    flag = ""
    for line in shown.split("options:", 1)[1].splitlines():
        if line.strip().startswith("--"):
            flag = line.split()[0]
            lines[flag] = line
        elif flag:
            lines[flag] += " " + line.strip()
    for field in _SETTABLE:
        line = lines["--" + field.replace("_", "-")]
        assert f"env FLOTILLA_WORKER_{field.upper()})" in line, line
        assert re.search(r"\((default: .+|required|unset|no default);", line), line
        described = line.split(None, 2)[2]
        assert len(described.split("(")[0].strip()) > 8, line  # a description, not just a name
    assert "(default: 1; env FLOTILLA_WORKER_CAPACITY)" in lines["--capacity"]
    assert "default: localLiveLog,artifacts" in lines["--features"]
