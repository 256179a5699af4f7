"""The ingress config (deploy/ingress/render.py) and how services read forwarded hosts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from shared.auth.http import signed_host

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("render", REPO / "deploy/ingress/render.py")
assert _spec and _spec.loader
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)


def _local(upstreams: dict[str, list[str]]) -> str:
    return render.render(
        upstreams, listen="8080", pid="/p", error_log="/e", access_log="/a", temp_dir="/t"
    )


def test_each_replica_is_a_server_of_its_service_s_upstream() -> None:
    text = _local({"queue": ["10.0.0.1:8180", "10.0.0.2:8180"], "worker-manager": ["w:8181"]})
    assert "server 10.0.0.1:8180;\n    server 10.0.0.2:8180;" in text
    for prefix in ("/api/queue/", "/api/auth/", "/artifact-bytes/"):
        assert f"location ^~ {prefix} {{\n      set $flotilla_service queue;" in text
    assert "location = /api/queue {\n      set $flotilla_service queue;" in text
    assert "proxy_pass http://flotilla_worker_manager;" in text
    assert "Served here: queue, auth, worker-manager." in text
    assert "/api/index/" not in text  # not run: answered by the catch-all 404


def test_bad_upstreams_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown services"):
        _local({"secrets": ["a:1"]})
    with pytest.raises(ValueError, match="HOST:PORT"):
        _local({"queue": ["a b;"]})


def test_with_a_resolver_each_service_is_a_name_looked_up_again() -> None:
    # compose restarts give services new addresses; fixed upstreams would keep the old
    text = render.render_compose()
    assert "resolver 127.0.0.11 valid=5s ipv6=off;" in text
    assert "upstream flotilla_" not in text
    assert "set $flotilla_backend queue:8180;\n      proxy_pass http://$flotilla_backend;" in text
    with pytest.raises(ValueError, match="share one name"):
        render.render(
            {"queue": ["a:1", "b:1"]},
            listen="80",
            pid="/p",
            error_log="/e",
            access_log="/a",
            temp_dir="/t",
            resolver="127.0.0.11",
        )


def test_the_compose_config_is_the_rendered_one() -> None:
    committed = (REPO / "deploy/ingress/compose.nginx.conf").read_text()
    assert committed == render.render_compose(), (
        "regenerate: python3 deploy/ingress/render.py --compose > deploy/ingress/compose.nginx.conf"
    )


def test_every_service_the_compose_file_exposes_is_routed_by_its_ingress() -> None:
    compose = yaml.safe_load((REPO / "deploy/compose.yaml").read_text())
    exposed = {
        f"{name}:{port}"
        for name, service in compose["services"].items()
        for port in service.get("expose", [])
    }
    routed = {server for servers in render.COMPOSE_UPSTREAMS.values() for server in servers}
    assert exposed - routed == set()  # an API behind no route would answer 404


@pytest.mark.parametrize(
    ("forwarded", "host", "expected"),
    [
        (None, "127.0.0.1:8180", "127.0.0.1:8180"),
        ("tc.example:8080", "127.0.0.1:8180", "tc.example:8080"),
        ("tc.example, inner:80", "127.0.0.1:8180", "tc.example"),
        ("", "q:1", "q:1"),
        (None, None, ""),
    ],
)
def test_the_signed_host_is_the_first_forwarded_one(
    forwarded: str | None, host: str | None, expected: str
) -> None:
    assert signed_host(forwarded, host) == expected
