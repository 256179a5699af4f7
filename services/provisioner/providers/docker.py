"""The `docker` provider, process form: each worker is `python -m services.docker_worker`
started as a local process (the worker runs its tasks on the local Docker engine).

The provisioner hands the worker its identity as flags and its credentials (the ones
registerWorker would return) through the environment, so they never show in `ps`. The
pool's `workerConfig` becomes the worker's YAML config file (upstream spellings such as
`afterIdleSeconds` work); `afterIdleSeconds` (default 300) is passed as the idle-shutdown
flag, so workers stop themselves when the queue has nothing for them.

A watcher awaits each process and reports its exit at once (`on_exit`). Processes are
children of the provisioner that launched them: on shutdown it sends them SIGTERM (each
reports its running tasks as `worker-shutdown`) and waits. A standby that takes over
checks the pids it finds recorded (same host).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from services.provisioner import credentials
from services.provisioner.pools import PoolConfig
from services.provisioner.providers import Launched, Pool
from services.provisioner.store import RUNNING

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_AFTER_IDLE_S = 300.0
WORKER_GROUP = "docker"
_OWN_ENV_PREFIXES = ("FLOTILLA_WORKER_", "TASKCLUSTER_")


@dataclass(frozen=True)
class Issuer:
    client_id: str
    access_token: str


def worker_command(
    python: str,
    pool: Pool,
    worker: dict[str, Any],
    directory: Path,
    config_file: Path | None,
) -> list[str]:
    """The docker-worker's command line (identity only; no secrets). Pure."""
    idle = after_idle_s(pool.config.workerConfig)
    command = [
        python,
        "-m",
        "services.docker_worker",
        f"--task-queue-id={pool.pool_id}",
        f"--worker-group={worker['workerGroup']}",
        f"--worker-id={worker['workerId']}",
        f"--capacity={worker['capacity']}",
        f"--after-idle-s={idle:g}",
        f"--cache-root={directory.parent / 'caches'}",
        f"--work-root={directory / 'work'}",
    ]
    if config_file is not None:
        command.append(f"--config={config_file}")
    return command


def after_idle_s(worker_config: dict[str, Any]) -> float:
    shutdown = worker_config.get("shutdown")
    nested = shutdown.get("afterIdleSeconds") if isinstance(shutdown, dict) else None
    value = worker_config.get("afterIdleSeconds", nested)
    return float(value) if value is not None else DEFAULT_AFTER_IDLE_S


def file_config(worker_config: dict[str, Any]) -> dict[str, Any]:
    """workerConfig minus what the provisioner passes as flags."""
    return {k: v for k, v in worker_config.items() if k not in ("afterIdleSeconds", "shutdown")}


class DockerProvider:
    provider_id = "docker"
    boot_s = 3.0  # a local process is claiming within a few seconds

    def __init__(
        self,
        *,
        root_url: str,
        issuer: Issuer,
        work_root: Path,
        on_exit: Callable[[str, int], Awaitable[None]],
        python: str = sys.executable,
        grace_s: float = 30.0,
    ) -> None:
        self.root_url = root_url
        self.issuer = issuer
        self.work_root = work_root
        self.on_exit = on_exit
        self.python = python
        self.grace_s = grace_s
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    def validate(self, config: PoolConfig) -> None:
        if config.launchConfigs:
            raise ValueError("launchConfigs are for the aws provider")
        after_idle_s(config.workerConfig)  # a number, or a clear error now

    def worker_extra(self, pool: Pool) -> dict[str, Any]:
        return {}

    def _environment(self, creds: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_ENV_PREFIXES)}
        env.update(
            {
                "FLOTILLA_WORKER_ROOT_URL": self.root_url,
                "FLOTILLA_WORKER_CLIENT_ID": creds["clientId"],
                "FLOTILLA_WORKER_ACCESS_TOKEN": creds["accessToken"],
                "FLOTILLA_WORKER_CERTIFICATE": creds["certificate"],
            }
        )
        return env

    async def launch(self, pool: Pool, worker: dict[str, Any]) -> Launched:
        now: datetime = worker["created"]
        lifecycle = pool.config.lifecycle
        lifetime = min(lifecycle.reregistrationTimeout, lifecycle.maxLifetime)
        creds = credentials.for_worker(
            issuer_id=self.issuer.client_id,
            issuer_token=self.issuer.access_token,
            provider_id=self.provider_id,
            pool_id=pool.pool_id,
            group=worker["workerGroup"],
            worker_id=worker["workerId"],
            now=now,
            expires=now + timedelta(seconds=lifetime),
        )
        directory = self.work_root / worker["workerId"]
        directory.mkdir(parents=True, exist_ok=True)
        extra = file_config(pool.config.workerConfig)
        config_file = None
        if extra:
            config_file = directory / "worker.yml"
            config_file.write_text(yaml.safe_dump(extra))
        command = worker_command(self.python, pool, worker, directory, config_file)
        log_path = directory / "worker.log"
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *command,
                env=self._environment(creds),
                cwd=REPO_ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the provisioner is not theirs
            )
        key = worker["_id"]
        self.processes[key] = process
        watcher = asyncio.create_task(self._watch(key, process), name=f"watch {key}")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return Launched({"pid": process.pid, "log": str(log_path)}, RUNNING)

    async def _watch(self, key: str, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self.processes.pop(key, None)
        try:
            await self.on_exit(key, code)
        except Exception:
            log.exception("handling a worker exit failed", extra={"worker": key})

    async def gone(self, pool: Pool, workers: list[dict[str, Any]]) -> dict[str, str]:
        found: dict[str, str] = {}
        for worker in workers:
            key = worker["_id"]
            if key in self.processes:
                continue
            pid = worker.get("providerData", {}).get("pid")
            if pid is None:
                if worker["state"] != "requested":
                    found[key] = "no process recorded"
                continue
            if not _pid_alive(int(pid)):
                found[key] = "worker process gone"
        return found

    async def terminate(self, worker: dict[str, Any]) -> None:
        process = self.processes.get(worker["_id"])
        pid = process.pid if process else worker.get("providerData", {}).get("pid")
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signal.SIGTERM)

    def verify_registration(self, worker: dict[str, Any], proof: dict[str, Any]) -> bool:
        return False  # registered by the provisioner when it starts the process

    async def close(self) -> None:
        """SIGTERM every worker this process started; wait out the grace period."""
        for process in list(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        if self._watchers:
            _, late = await asyncio.wait(set(self._watchers), timeout=self.grace_s)
            for process in list(self.processes.values()):
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            if late:
                await asyncio.wait(late, timeout=5)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
