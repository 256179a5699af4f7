"""`.flotilla/env` as `make up` writes it (deploy/local/write-env.sh): sourcing it in a
fresh shell must give a working `flotilla` and official-client environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cli.envfile import parse_env_file

REPO = Path(__file__).resolve().parents[2]
WRITE_ENV = REPO / "deploy" / "local" / "write-env.sh"


def write_env(home: Path) -> Path:
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(home), "FLOTILLA_HOME": str(home)}
    subprocess.run(["bash", str(WRITE_ENV)], env=environ, check=True, capture_output=True)
    return home / "env"


def sourced(env_file: Path, command: str) -> str:
    script = f"source {env_file} && {command}"
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent)}
    return subprocess.run(
        ["bash", "-c", script], env=environ, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_sourcing_the_env_file_puts_the_virtualenv_first_on_path(tmp_path: Path) -> None:
    env_file = write_env(tmp_path)
    path = sourced(env_file, 'echo "$PATH"').split(":")
    assert path[0] == str(REPO / ".venv" / "bin")
    assert path[1:] == ["/usr/bin", "/bin"]  # the shell's own PATH is kept after it
    # `flotilla` then resolves to the virtualenv's console script
    bin_dir = REPO / ".venv" / "bin"
    if (bin_dir / "flotilla").exists():
        assert sourced(env_file, "command -v flotilla") == str(bin_dir / "flotilla")


def test_the_env_file_still_parses_for_the_cli(tmp_path: Path) -> None:
    values = parse_env_file(write_env(tmp_path).read_text())
    assert values["TASKCLUSTER_CLIENT_ID"] == "static/flotilla/root"
    assert values["PATH"].startswith(str(REPO / ".venv" / "bin") + ":")
