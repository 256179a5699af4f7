"""Provider request building and the worker lifecycle rules (pure parts of the provisioner)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.provisioner import credentials
from services.provisioner.pools import LaunchConfig, Lifecycle, PoolConfig
from services.provisioner.providers import Pool, ProviderError
from services.provisioner.providers.aws import AwsProvider, run_instances_request
from services.provisioner.providers.docker import (
    DockerProvider,
    after_idle_s,
    engine_of,
    file_config,
    worker_command,
    worker_environment,
)
from services.provisioner.providers.docker_container import (
    WORKER_LABEL,
    choose_form,
    container_spec,
    socket_path,
)
from services.provisioner.providers.static import StaticProvider, proof_matches, secret_hash
from services.provisioner.provisioner import lifecycle_reason

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LAUNCH = LaunchConfig(
    region="us-west-2",
    launchConfig={"ImageId": "ami-1234", "InstanceType": "m5.large"},
    additionalUserData={"extra": 1, "rootUrl": "overwritten"},
    workerConfig={"capacity": 2},
    launchConfigId="lc-1",
)


def request(**overrides: object) -> dict:
    args = {
        "root_url": "https://tc.example.com",
        "provider_id": "aws",
        "pool_id": "proj/builder",
        "launch": LAUNCH,
        "worker_id": "w-abc",
        "token": "secret-token",
        "worker_config": {"afterIdleSeconds": 900, "capacity": 1},
        **overrides,
    }
    return run_instances_request(**args)  # type: ignore[arg-type]


def test_run_instances_is_one_spot_instance_with_an_idempotency_token() -> None:
    req = request()
    assert (req["MinCount"], req["MaxCount"]) == (1, 1)
    assert req["ClientToken"] == "w-abc"
    assert req["ImageId"] == "ami-1234" and req["InstanceType"] == "m5.large"
    assert req["InstanceMarketOptions"]["MarketType"] == "spot"
    assert req["InstanceMarketOptions"]["SpotOptions"]["SpotInstanceType"] == "one-time"


def test_a_launch_config_may_choose_its_own_market_options() -> None:
    own = {"MarketType": "spot", "SpotOptions": {"MaxPrice": "0.05"}}
    launch = LAUNCH.model_copy(
        update={"launchConfig": {**LAUNCH.launchConfig, "InstanceMarketOptions": own}}
    )
    assert request(launch=launch)["InstanceMarketOptions"] == own


def test_user_data_carries_identity_and_the_registration_token() -> None:
    data = json.loads(request()["UserData"])
    assert data == {
        "extra": 1,
        "rootUrl": "https://tc.example.com",  # ours win over additionalUserData
        "workerPoolId": "proj/builder",
        "providerId": "aws",
        "workerGroup": "us-west-2",  # the region
        "workerId": "w-abc",
        "registrationToken": "secret-token",
        "workerConfig": {"afterIdleSeconds": 900, "capacity": 2},  # launch config wins
        "launchConfigId": "lc-1",
    }


def test_tags_on_instance_and_volume() -> None:
    specs = request()["TagSpecifications"]
    assert [s["ResourceType"] for s in specs] == ["instance", "volume"]
    tags = {t["Key"]: t["Value"] for t in specs[0]["Tags"]}
    assert tags["WorkerPoolId"] == "proj/builder" and tags["WorkerId"] == "w-abc"
    assert tags["ManagedBy"] == "flotilla"


def test_oversized_user_data_is_a_provider_error() -> None:
    big = LAUNCH.model_copy(update={"additionalUserData": {"blob": "x" * 20000}})
    with pytest.raises(ProviderError):
        request(launch=big)


@pytest.mark.parametrize(
    "launch_config",
    [
        {"InstanceType": "m5.large"},
        {"ImageId": "ami-1", "UserData": "x"},
        {"ImageId": "a", "MinCount": 2},
    ],
)
def test_aws_rejects_bad_launch_configs(launch_config: dict) -> None:
    config = PoolConfig(
        maxCapacity=1, launchConfigs=[LaunchConfig(region="us-east-1", launchConfig=launch_config)]
    )
    with pytest.raises(ValueError):
        AwsProvider(root_url="x").validate(config)


def test_aws_worker_extra_round_robins_and_stores_only_the_token_hash() -> None:
    second = LAUNCH.model_copy(update={"region": "eu-west-1"})
    pool = Pool("p/w", "aws", PoolConfig(maxCapacity=3, launchConfigs=[LAUNCH, second]))
    provider = AwsProvider(root_url="x")
    extras = [provider.worker_extra(pool) for _ in range(3)]
    assert [e["workerGroup"] for e in extras] == ["us-west-2", "eu-west-1", "us-west-2"]
    for extra in extras:
        assert extra["registrationTokenHash"] == credentials.token_hash(extra["_token"])
        assert provider.verify_registration(extra, {"registrationToken": extra["_token"]})
        assert not provider.verify_registration(extra, {"registrationToken": "guess"})


def test_docker_worker_command_has_identity_and_idle_shutdown_but_no_secrets(
    tmp_path: Path,
) -> None:
    pool = Pool("p/w", "docker", PoolConfig(maxCapacity=2, workerConfig={"afterIdleSeconds": 15}))
    worker = {"workerGroup": "docker", "workerId": "w-1", "capacity": 2}
    command = worker_command("python", pool, worker, tmp_path / "w-1", None)
    assert command[:3] == ["python", "-m", "services.docker_worker"]
    assert "--task-queue-id=p/w" in command and "--worker-id=w-1" in command
    assert "--capacity=2" in command and "--after-idle-s=15" in command
    assert not any("token" in part.lower() for part in command)


def test_a_process_engine_pool_runs_the_process_worker(tmp_path: Path) -> None:
    config = PoolConfig(maxCapacity=1, workerConfig={"engine": "process", "capacity": 2})
    pool = Pool("p/w", "docker", config)
    worker = {"workerGroup": "docker", "workerId": "w-1", "capacity": 1}
    command = worker_command("python", pool, worker, tmp_path / "w-1", None)
    assert command[:3] == ["python", "-m", "services.process_worker"]
    assert file_config(config.workerConfig) == {"capacity": 2}
    with pytest.raises(ValueError, match="engine"):
        engine_of({"engine": "vm"})


def test_idle_shutdown_setting_forms() -> None:
    assert after_idle_s({}) == 300
    assert after_idle_s({"shutdown": {"afterIdleSeconds": 20}}) == 20
    assert after_idle_s({"afterIdleSeconds": 5}) == 5
    with pytest.raises(ValueError):
        DockerProvider.validate(
            DockerProvider.__new__(DockerProvider),
            PoolConfig(maxCapacity=1, workerConfig={"afterIdleSeconds": "soon"}),
        )


def test_worker_credentials_are_named_and_scoped_as_upstream() -> None:
    creds = credentials.for_worker(
        issuer_id="static/root",
        issuer_token="t" * 44,
        provider_id="aws",
        pool_id="p/w",
        group="us-east-1",
        worker_id="w-1",
        now=NOW,
        expires=NOW + timedelta(days=4),
    )
    assert creds["clientId"] == "worker/aws/p/w/us-east-1/w-1"
    cert = json.loads(creds["certificate"])
    assert "queue:claim-work:p/w" in cert["scopes"]
    assert "queue:worker-id:us-east-1/w-1" in cert["scopes"]
    assert "worker-manager:remove-worker:p/w/us-east-1/w-1" in cert["scopes"]
    assert cert["start"] == int((NOW - timedelta(minutes=15)).timestamp() * 1000)


LIFECYCLE = Lifecycle(registrationTimeout=60, maxLifetime=3600)


@pytest.mark.parametrize(
    ("state", "age_s", "verdict"),
    [
        ("requested", 30, None),
        ("requested", 61, "registrationTimeout"),
        ("running", 61, None),
        ("running", 3601, "maxLifetime"),
        ("stopping", 3601, "maxLifetime"),
    ],
)
def test_lifecycle_reasons(state: str, age_s: int, verdict: str | None) -> None:
    worker = {"state": state, "created": NOW - timedelta(seconds=age_s)}
    reason = lifecycle_reason(worker, LIFECYCLE, NOW)
    assert (reason is None) if verdict is None else (verdict in (reason or ""))


# --- docker provider, container form ------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "present", "form"),
    [
        (None, True, "container"),
        (None, False, "process"),
        ("process", True, "process"),
        ("container", False, "container"),  # asked for: a launch error names the image
    ],
)
def test_launch_form(requested: str | None, present: bool, form: str) -> None:
    assert choose_form(requested, present) == form


def test_container_spec_host_network_socket_same_path_mounts_secrets_in_env_only(
    tmp_path: Path,
) -> None:
    pool = Pool("p/w", "docker", PoolConfig(maxCapacity=2, workerConfig={"afterIdleSeconds": 7}))
    worker = {"_id": "p/w/docker/w-1", "workerGroup": "docker", "workerId": "w-1", "capacity": 2}
    creds = {"clientId": "worker/docker/p/w/docker/w-1", "accessToken": "tok", "certificate": "{}"}
    directory = tmp_path / "w-1"
    env = worker_environment("http://127.0.0.1:8080", pool, worker, creds, directory, None)
    spec = container_spec(
        image="flotilla/docker-worker:latest",
        pool_id="p/w",
        worker=worker,
        environment=env,
        directory=directory,
        cache_root=tmp_path / "caches",
        docker_url="unix:///run/docker.sock",
    )
    assert spec["network_mode"] == "host" and spec["detach"] is True
    assert spec["labels"][WORKER_LABEL] == "p/w/docker/w-1"
    assert spec["volumes"]["/run/docker.sock"]["bind"] == "/var/run/docker.sock"
    for path in (directory, tmp_path / "caches"):  # same path inside as on the host
        assert spec["volumes"][str(path)]["bind"] == str(path)
    e = spec["environment"]
    assert e["FLOTILLA_WORKER_ACCESS_TOKEN"] == "tok" and e["FLOTILLA_WORKER_WORKER_ID"] == "w-1"
    assert e["FLOTILLA_WORKER_TASK_QUEUE_ID"] == "p/w" and e["FLOTILLA_WORKER_CAPACITY"] == "2"
    assert e["FLOTILLA_WORKER_AFTER_IDLE_S"] == "7" and e["FLOTILLA_WORKER_LIVE_LOG_PORT"] == "0"
    assert e["FLOTILLA_WORKER_DOCKER_URL"] == "unix:///var/run/docker.sock"
    assert "command" not in spec  # the image's own entry point; nothing secret in argv
    assert socket_path("tcp://10.0.0.1:2375") is None


# --- static provider -----------------------------------------------------------------------


def test_static_secret_is_stored_hashed_and_checked_under_either_proof_key() -> None:
    secret = "s" * 44
    stored = StaticProvider().worker_from_api({"staticSecret": secret})
    assert stored == {"staticSecretHash": secret_hash({"staticSecret": secret})}
    assert secret not in json.dumps(stored)
    worker = {"state": "running", **stored}
    assert StaticProvider().verify_registration(worker, {"staticSecret": secret})
    assert proof_matches({"secret": secret}, stored["staticSecretHash"])
    for proof in ({"staticSecret": "t" * 44}, {}, {"staticSecret": None}):
        assert not StaticProvider().verify_registration(worker, proof)


@pytest.mark.parametrize("info", [{}, {"staticSecret": "short"}, {"staticSecret": 5}])
def test_static_workers_need_a_usable_secret(info: dict) -> None:
    with pytest.raises(ProviderError):
        StaticProvider().worker_from_api(info)


def test_only_static_takes_api_made_workers_and_it_never_launches() -> None:
    for provider in (AwsProvider(root_url="x"), DockerProvider.__new__(DockerProvider)):
        assert provider.launches_workers
        with pytest.raises(ProviderError):
            provider.worker_from_api({"staticSecret": "s" * 44})
    static = StaticProvider()
    assert not static.launches_workers and static.registers_from == ("running",)
    static.validate(PoolConfig())  # no maxCapacity needed
    with pytest.raises(ValueError):
        DockerProvider.validate(DockerProvider.__new__(DockerProvider), PoolConfig())
