"""Task files (YAML errors with line numbers) and `.flotilla/env` parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.config import config_from
from cli.documents import parse_document
from cli.envfile import find_env_file, load_environment, parse_env_file
from cli.errors import EXIT_USAGE, CliError


def error_of(call, *args) -> CliError:  # type: ignore[no-untyped-def]
    with pytest.raises(CliError) as raised:
        call(*args)
    return raised.value


def test_yaml_and_json_documents() -> None:
    assert parse_document("a: 1\nb: [x, y]\n", "t.yaml") == {"a": 1, "b": ["x", "y"]}
    assert parse_document('{"a": 1}', "t.json") == {"a": 1}
    assert parse_document('{"a": 1}', "t.yml") == {"a": 1}  # YAML reads JSON


def test_yaml_timestamps_stay_json_strings() -> None:
    document = parse_document("deadline: 2030-01-02T03:04:05Z\nday: 2030-01-02\n", "t.yaml")
    assert document == {"deadline": "2030-01-02T03:04:05.000Z", "day": "2030-01-02"}


def test_bad_yaml_names_the_line() -> None:
    text = "tasks:\n  a:\n    payload: {x: 1\n  b: {}\n"
    error = error_of(parse_document, text, "graph.yaml")
    assert error.exit_code == EXIT_USAGE
    assert error.message.startswith("graph.yaml:4: bad YAML: ")


def test_bad_yaml_mapping_line() -> None:
    error = error_of(parse_document, "a: 1\nb: c: d\n", "t.yaml")
    assert error.message == "t.yaml:2: bad YAML: mapping values are not allowed here"


def test_bad_json_names_the_line() -> None:
    error = error_of(parse_document, '{\n"a": 1,\n}', "t.json")
    assert error.message.startswith("t.json:3: bad JSON: ")


ENV_TEXT = """# Written by 'make up'. Use: source .flotilla/env
export TASKCLUSTER_ROOT_URL=http://127.0.0.1:8080
TASKCLUSTER_CLIENT_ID=static/flotilla/root

export TASKCLUSTER_ACCESS_TOKEN='a b#c'
export FLOTILLA_AMQP_URL="amqp://u:p@h:5672/"  # comment
"""


def test_env_file_lines() -> None:
    assert parse_env_file(ENV_TEXT) == {
        "TASKCLUSTER_ROOT_URL": "http://127.0.0.1:8080",
        "TASKCLUSTER_CLIENT_ID": "static/flotilla/root",
        "TASKCLUSTER_ACCESS_TOKEN": "a b#c",
        "FLOTILLA_AMQP_URL": "amqp://u:p@h:5672/",
    }


def test_env_file_errors_name_the_line() -> None:
    error = error_of(parse_env_file, "A=1\nnot a line\n", "x/env")
    assert error.message == "x/env:2: expected KEY=VALUE, got 'not a line'"
    assert error_of(parse_env_file, "A='open\n", "e").message.startswith("e:1: ")


def test_explicit_variables_win_over_the_file(tmp_path: Path) -> None:
    (tmp_path / ".flotilla").mkdir()
    (tmp_path / ".flotilla" / "env").write_text(ENV_TEXT)
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert find_env_file(nested, {}) == tmp_path / ".flotilla" / "env"
    merged = load_environment(nested, {"TASKCLUSTER_CLIENT_ID": "mine"})
    assert merged["TASKCLUSTER_CLIENT_ID"] == "mine"
    assert merged["TASKCLUSTER_ACCESS_TOKEN"] == "a b#c"
    config = config_from(merged)
    assert config.client_id == "mine" and config.amqp_url == "amqp://u:p@h:5672/"
    assert config.queue_options()["credentials"] == {"clientId": "mine", "accessToken": "a b#c"}


def test_env_file_variable_overrides_the_search(tmp_path: Path) -> None:
    assert find_env_file(tmp_path, {"FLOTILLA_ENV_FILE": ""}) is None
    assert find_env_file(tmp_path, {"FLOTILLA_ENV_FILE": "/x/env"}) == Path("/x/env")


def test_config_defaults() -> None:
    config = config_from({})
    assert config.root_url == "http://127.0.0.1:8080"
    assert config.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert "credentials" not in config.queue_options()
    assert config_from({"FLOTILLA_ROOT_URL": "http://q:1/"}).root_url == "http://q:1"
