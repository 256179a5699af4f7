"""Every endpoint is declared beside its handler (`shared.api.declare`); what is declared
matches upstream's API reference (the official client's own table of methods, routes,
query parameters and input schemas) for every method upstream has."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from services.index.api import IndexApi
from services.object.api import ObjectApi
from services.provisioner.api import WorkerManagerApi
from services.purge_cache.api import PurgeCacheApi
from services.queue.artifacts_api import ArtifactsApi
from services.queue.auth_api import AuthApi
from services.queue.claims_api import ClaimsApi
from services.queue.groups_api import GroupsApi
from services.queue.tasks_api import TasksApi
from services.queue.worker_shutdown_api import WorkerShutdownApi
from services.queue.workers_api import WorkersApi
from shared.api import Api, Call, Endpoint, declare, declared
from shared.models import TaskDefinition, TaskStatusResponse
from shared.monitoring import Monitoring

# (the handler classes served under one prefix, upstream's client module)
SERVICES: dict[str, tuple[list[type], str]] = {
    "queue": (
        [TasksApi, GroupsApi, ClaimsApi, WorkersApi, WorkerShutdownApi, ArtifactsApi],
        "queue",
    ),
    "auth": ([AuthApi], "auth"),
    "worker-manager": ([WorkerManagerApi], "workermanager"),
    "index": ([IndexApi], "index"),
    "purge-cache": ([PurgeCacheApi], "purgecache"),
    "object": ([ObjectApi], "object"),
}


# Our wire models and the upstream schema each stands for.
OUTPUT_SCHEMAS = {
    TaskDefinition: "v1/task.json#",
    TaskStatusResponse: "v1/task-status-response.json#",
}


def upstream_reference(module: str) -> dict[str, dict[str, Any]]:
    generated = importlib.import_module(f"taskcluster.generated.{module}")
    client = next(
        value
        for value in vars(generated).values()
        if isinstance(value, type) and hasattr(value, "funcinfo")
    )
    return client.funcinfo  # type: ignore[no-any-return]


def endpoints_of(service: str) -> list[Endpoint]:
    return [e for cls in [Monitoring, *SERVICES[service][0]] for e in declared(cls)]


@pytest.mark.parametrize("service", SERVICES)
def test_declarations_match_upstreams_reference(service: str) -> None:
    reference = upstream_reference(SERVICES[service][1])
    ours = endpoints_of(service)
    assert len({e.name for e in ours}) == len(ours), "a method name declared twice"
    checked = 0
    for endpoint in ours:
        assert endpoint.title.strip(), f"{endpoint.name} has no title"
        assert "\n" not in endpoint.title
        upstream = reference.get(endpoint.name)
        if upstream is None:
            continue  # ours alone (e.g. Dockerflow's endpoints): nothing to compare
        checked += 1
        assert endpoint.method == upstream["method"].upper(), endpoint.name
        assert endpoint.route == upstream["route"], endpoint.name
        assert set(endpoint.query) == set(upstream.get("query", [])), endpoint.name
        if "input" in upstream:
            assert endpoint.input is not None, f"{endpoint.name} takes no input model"
        if endpoint.output is not None:  # a modelled answer names upstream's schema
            assert upstream.get("output") == OUTPUT_SCHEMAS[endpoint.output], endpoint.name
    assert checked >= 5


def test_every_call_answering_a_task_status_declares_it() -> None:
    reference = upstream_reference("queue")
    declared_outputs = {e.name: e.output for e in endpoints_of("queue")}
    for name, info in reference.items():
        if info.get("output") in OUTPUT_SCHEMAS.values():
            assert OUTPUT_SCHEMAS.get(declared_outputs[name]) == info["output"], name


def test_the_queue_serves_every_method_of_upstreams_queue() -> None:
    served = {e.name for e in endpoints_of("queue")}
    missing = set(upstream_reference("queue")) - served
    assert not missing


async def _nothing(call: Call) -> None:
    return None


class _Handlers:
    @declare("second", "GET", "/b", title="Second, written first")
    async def b(self, call: Call) -> None:
        return None

    @declare("first", "POST", "/a/<id>", title="First", scopes="x:<id>", query=("limit",))
    async def a(self, call: Call) -> None:
        return None

    async def not_an_endpoint(self, call: Call) -> None:
        return None


class _More(_Handlers):
    @declare("second", "GET", "/b", title="Second, overridden")
    async def b(self, call: Call) -> None:
        return None


def test_declared_collects_in_source_order_and_binds_to_the_object() -> None:
    handlers = _Handlers()
    endpoints = declared(handlers)
    assert [e.name for e in endpoints] == ["second", "first"]
    first = endpoints[1]
    assert (first.method, first.route, first.scopes, tuple(first.query)) == (
        "POST",
        "/a/<id>",
        "x:<id>",
        ("limit",),
    )
    assert first.handler == handlers.a  # bound: serves this object's state
    assert first.checks_scopes_early()  # the scope uses only the route's parameters


def test_a_subclass_overrides_a_declaration_in_place() -> None:
    endpoints = declared(_More())
    assert [(e.name, e.title) for e in endpoints] == [
        ("second", "Second, overridden"),
        ("first", "First"),
    ]


def test_an_api_refuses_a_method_name_declared_twice() -> None:
    twice = Endpoint("first", "GET", "/elsewhere", _nothing, title="Again")
    with pytest.raises(ValueError, match="duplicate endpoint names"):
        Api("/api/x/v1", [_Handlers(), twice], authenticator=None, fill_scopes=None)  # type: ignore[arg-type]
