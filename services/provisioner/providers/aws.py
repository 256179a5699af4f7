"""The `aws` provider: one EC2 spot instance per worker through boto3 (reference 5.5).

- The worker's record (with a hash of its one-time registration token) is stored before
  RunInstances is called; the call carries the worker id as its idempotency ClientToken,
  so a retried call never starts a second instance for the same worker.
- User data (JSON; boto3 base64-encodes it) carries what worker-runner reads: rootUrl,
  workerPoolId, providerId, workerGroup (= the region), workerId, the registration token
  and the launch config's workerConfig. `registerWorker` checks the token once.
- Spot: `InstanceMarketOptions` is set to a one-time spot request unless the launch config
  chose its own market options.
- State checks: DescribeInstances per region; terminated / stopped / unknown instances
  are gone (a stopped one is terminated first, upstream 7680). Zombies and instances past
  maxLifetime are terminated by the loop through `terminate`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from services.provisioner import credentials
from services.provisioner.pools import LaunchConfig, PoolConfig
from services.provisioner.providers import Launched, Pool, ProviderError
from services.provisioner.store import REQUESTED

log = logging.getLogger(__name__)

FORBIDDEN_KEYS = ("UserData", "MinCount", "MaxCount", "ClientToken")
SPOT = {
    "MarketType": "spot",
    "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
}
GONE_STATES = ("terminated", "stopped", "stopping")
MAX_USER_DATA = 16384


def user_data(
    *,
    root_url: str,
    provider_id: str,
    pool_id: str,
    launch: LaunchConfig,
    worker_id: str,
    token: str,
    worker_config: dict[str, Any],
) -> str:
    body = {
        **launch.additionalUserData,
        "rootUrl": root_url,
        "workerPoolId": pool_id,
        "providerId": provider_id,
        "workerGroup": launch.region,
        "workerId": worker_id,
        "registrationToken": token,
        "workerConfig": {**worker_config, **launch.workerConfig},
    }
    if launch.launchConfigId:
        body["launchConfigId"] = launch.launchConfigId
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    if len(text) > MAX_USER_DATA:
        raise ProviderError(f"user data is {len(text)} bytes; EC2 allows {MAX_USER_DATA}")
    return text


def run_instances_request(
    *,
    root_url: str,
    provider_id: str,
    pool_id: str,
    launch: LaunchConfig,
    worker_id: str,
    token: str,
    worker_config: dict[str, Any],
) -> dict[str, Any]:
    """RunInstances arguments for one worker. Pure."""
    tags = [
        {"Key": "CreatedBy", "Value": f"flotilla-{provider_id}"},
        {"Key": "ManagedBy", "Value": "flotilla"},
        {"Key": "Name", "Value": pool_id},
        {"Key": "WorkerPoolId", "Value": pool_id},
        {"Key": "WorkerId", "Value": worker_id},
    ]
    spec = launch.launchConfig
    return {
        **spec,
        "InstanceMarketOptions": spec.get("InstanceMarketOptions", SPOT),
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": worker_id,
        "UserData": user_data(
            root_url=root_url,
            provider_id=provider_id,
            pool_id=pool_id,
            launch=launch,
            worker_id=worker_id,
            token=token,
            worker_config=worker_config,
        ),
        "TagSpecifications": [
            *spec.get("TagSpecifications", []),
            {"ResourceType": "instance", "Tags": tags},
            {"ResourceType": "volume", "Tags": tags},
        ],
    }


class AwsProvider:
    provider_id = "aws"
    boot_s = 90.0  # a spot instance boots and registers in a minute or two
    launches_workers = True
    registers_from = (REQUESTED,)  # once, with the one-time token from its user data

    def __init__(
        self,
        *,
        root_url: str,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.root_url = root_url
        self._endpoint = endpoint_url
        self._keys = {
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
        }
        self._clients: dict[str, Any] = {}
        self._next_config: dict[str, int] = defaultdict(int)
        # Tokens only live between worker_extra and launch of the same worker.
        self._tokens: dict[str, str] = {}

    def _ec2(self, region: str) -> Any:
        if region not in self._clients:
            self._clients[region] = boto3.client(
                "ec2",
                region_name=region,
                endpoint_url=self._endpoint,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}, read_timeout=60),
                **{k: v for k, v in self._keys.items() if v},
            )
        return self._clients[region]

    def validate(self, config: PoolConfig) -> None:
        if config.maxCapacity is None:
            raise ValueError("an aws pool needs maxCapacity")
        if config.launch is not None:
            raise ValueError("launch is for the docker provider")
        if not config.launchConfigs:
            raise ValueError("an aws pool needs at least one entry in launchConfigs")
        for launch in config.launchConfigs:
            if "ImageId" not in launch.launchConfig:
                raise ValueError(f"launchConfig for {launch.region} must include ImageId")
            bad = [k for k in FORBIDDEN_KEYS if k in launch.launchConfig]
            if bad:
                raise ValueError(f"launchConfig must not set {', '.join(bad)}")

    def worker_extra(self, pool: Pool) -> dict[str, Any]:
        # Round-robin over the launch configs; the region is the worker group.
        index = self._next_config[pool.pool_id] % len(pool.config.launchConfigs)
        self._next_config[pool.pool_id] += 1
        token = credentials.new_token()
        launch = pool.config.launchConfigs[index]
        return {
            "workerGroup": launch.region,
            "registrationTokenHash": credentials.token_hash(token),
            "launchConfigIndex": index,
            "launchConfigId": launch.launchConfigId,
            "_token": token,  # dropped before storing; see launch()
        }

    async def launch(self, pool: Pool, worker: dict[str, Any]) -> Launched:
        launch = pool.config.launchConfigs[worker["launchConfigIndex"]]
        request = run_instances_request(
            root_url=self.root_url,
            provider_id=self.provider_id,
            pool_id=pool.pool_id,
            launch=launch,
            worker_id=worker["workerId"],
            token=worker["_token"],
            worker_config=pool.config.workerConfig,
        )
        try:
            answer = await asyncio.to_thread(self._ec2(launch.region).run_instances, **request)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise ProviderError(f"RunInstances in {launch.region} failed: {exc}") from exc
        instance = answer["Instances"][0]
        return Launched({"instanceId": instance["InstanceId"], "region": launch.region}, REQUESTED)

    async def gone(self, pool: Pool, workers: list[dict[str, Any]]) -> dict[str, str]:
        by_region: dict[str, dict[str, str]] = defaultdict(dict)
        for worker in workers:
            data = worker.get("providerData", {})
            if data.get("instanceId"):
                by_region[data["region"]][data["instanceId"]] = worker["_id"]
        found: dict[str, str] = {}
        for region, instances in by_region.items():
            states = await self._states(region, list(instances))
            for instance_id, key in instances.items():
                state = states.get(instance_id)
                if state is None:
                    found[key] = "instance not found"
                elif state in GONE_STATES:
                    if state != "terminated":
                        await self._terminate(region, [instance_id])
                    found[key] = f"instance {state}"
        return found

    async def _states(self, region: str, instance_ids: list[str]) -> dict[str, str]:
        ec2 = self._ec2(region)
        try:
            pages = await asyncio.to_thread(
                lambda: list(
                    ec2.get_paginator("describe_instances").paginate(InstanceIds=instance_ids)
                )
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidInstanceID.NotFound":
                # One unknown id fails the whole call: ask one by one.
                out: dict[str, str] = {}
                for instance_id in instance_ids:
                    with_one = await self._states_one(region, instance_id)
                    out.update(with_one)
                return out
            raise ProviderError(f"DescribeInstances in {region} failed: {exc}") from exc
        return {
            i["InstanceId"]: i["State"]["Name"]
            for page in pages
            for r in page["Reservations"]
            for i in r["Instances"]
        }

    async def _states_one(self, region: str, instance_id: str) -> dict[str, str]:
        try:
            answer = await asyncio.to_thread(
                self._ec2(region).describe_instances, InstanceIds=[instance_id]
            )
        except botocore.exceptions.ClientError:
            return {}
        return {
            i["InstanceId"]: i["State"]["Name"]
            for r in answer["Reservations"]
            for i in r["Instances"]
        }

    async def _terminate(self, region: str, instance_ids: list[str]) -> None:
        try:
            await asyncio.to_thread(self._ec2(region).terminate_instances, InstanceIds=instance_ids)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidInstanceID.NotFound":
                raise ProviderError(f"TerminateInstances in {region} failed: {exc}") from exc

    async def terminate(self, worker: dict[str, Any]) -> None:
        data = worker.get("providerData", {})
        if data.get("instanceId"):
            await self._terminate(data["region"], [data["instanceId"]])
            return
        # Launched but the answer was lost: find it by its tag.
        region = worker["workerGroup"]
        answer = await asyncio.to_thread(
            self._ec2(region).describe_instances,
            Filters=[{"Name": "tag:WorkerId", "Values": [worker["workerId"]]}],
        )
        ids = [i["InstanceId"] for r in answer["Reservations"] for i in r["Instances"]]
        if ids:
            await self._terminate(region, ids)

    def verify_registration(self, worker: dict[str, Any], proof: dict[str, Any]) -> bool:
        return credentials.token_matches(
            proof.get("registrationToken"), worker.get("registrationTokenHash")
        )

    def worker_from_api(self, provider_info: dict[str, Any]) -> dict[str, Any]:
        raise ProviderError("the aws provider launches its own workers")

    async def close(self) -> None:
        for client in self._clients.values():
            client.close()
