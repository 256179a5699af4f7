"""The `docker` provider: each worker is a docker-worker on this host, in one of two forms
(pool `config.launch`; by default `container` when the worker image is present, else
`process`):

- container: a container of the docker-worker image (providers.docker_container);
- process: `python -m services.docker_worker` from this checkout as a local process.

A pool whose `workerConfig.engine` is `process` runs the process engine instead
(`python -m services.process_worker`: tasks as native processes, generic-worker
payloads), always in process form; the rest of its workerConfig is that worker's config.

Either way the provisioner hands the worker its credentials (the ones registerWorker
would return) through the environment, so they never show in `ps`. The pool's
`workerConfig` becomes the worker's YAML config file (upstream spellings such as
`afterIdleSeconds` work); `afterIdleSeconds` (default 300) is passed as the idle-shutdown
setting, so workers stop themselves when the queue has nothing for them.

A watcher per worker reports its exit at once (`on_exit`): the provisioner marks it
stopped and has the queue resolve its runs as worker-shutdown. `terminate` sends SIGTERM
(the worker reports its running tasks as `worker-shutdown`) and SIGKILL after the grace
period, so a hung worker goes too. On shutdown the provisioner stops the workers it
watches the same way. A replica that takes over checks recorded pids (same host) and
adopts recorded containers that still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from services.provisioner import credentials
from services.provisioner.pools import PoolConfig
from services.provisioner.providers import Launched, Pool, ProviderError
from services.provisioner.providers.docker_container import (
    GONE_STATUSES,
    Containers,
    choose_form,
    container_spec,
)
from services.provisioner.store import RUNNING

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_AFTER_IDLE_S = 300.0
WORKER_GROUP = "docker"
IMAGE_CHECK_S = 10.0  # how long "is the worker image present?" is remembered
_OWN_ENV_PREFIXES = ("FLOTILLA_WORKER_", "TASKCLUSTER_")
ENGINES = {"docker": "services.docker_worker", "process": "services.process_worker"}


def engine_of(worker_config: dict[str, Any]) -> str:
    """The pool's worker engine (`workerConfig.engine`, default docker). Pure."""
    engine = worker_config.get("engine", "docker")
    if engine not in ENGINES:
        raise ValueError(f"workerConfig.engine must be one of {sorted(ENGINES)}, not {engine!r}")
    return str(engine)


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
    """The process form's command line (identity only; no secrets). Pure."""
    idle = after_idle_s(pool.config.workerConfig)
    command = [
        python,
        "-m",
        ENGINES[engine_of(pool.config.workerConfig)],
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


def worker_environment(
    root_url: str,
    pool: Pool,
    worker: dict[str, Any],
    creds: dict[str, str],
    directory: Path,
    config_file: Path | None,
) -> dict[str, str]:
    """The container form's `FLOTILLA_WORKER_*` variables: identity and credentials. Pure."""
    env = {
        "FLOTILLA_WORKER_ROOT_URL": root_url,
        "FLOTILLA_WORKER_CLIENT_ID": creds["clientId"],
        "FLOTILLA_WORKER_ACCESS_TOKEN": creds["accessToken"],
        "FLOTILLA_WORKER_CERTIFICATE": creds["certificate"],
        "FLOTILLA_WORKER_TASK_QUEUE_ID": pool.pool_id,
        "FLOTILLA_WORKER_WORKER_GROUP": worker["workerGroup"],
        "FLOTILLA_WORKER_WORKER_ID": worker["workerId"],
        "FLOTILLA_WORKER_CAPACITY": str(worker["capacity"]),
        "FLOTILLA_WORKER_AFTER_IDLE_S": f"{after_idle_s(pool.config.workerConfig):g}",
        "FLOTILLA_WORKER_CACHE_ROOT": str(directory.parent / "caches"),
        "FLOTILLA_WORKER_WORK_ROOT": str(directory / "work"),
        # Host network: an ephemeral port on the host's loopback, like the process form
        # (the image's defaults, 0.0.0.0:60023, would collide between workers).
        "FLOTILLA_WORKER_LIVE_LOG_BIND_HOST": "127.0.0.1",
        "FLOTILLA_WORKER_LIVE_LOG_PORT": "0",
    }
    if config_file is not None:
        env["FLOTILLA_WORKER_CONFIG"] = str(config_file)
    return env


def after_idle_s(worker_config: dict[str, Any]) -> float:
    shutdown = worker_config.get("shutdown")
    nested = shutdown.get("afterIdleSeconds") if isinstance(shutdown, dict) else None
    value = worker_config.get("afterIdleSeconds", nested)
    return float(value) if value is not None else DEFAULT_AFTER_IDLE_S


def file_config(worker_config: dict[str, Any]) -> dict[str, Any]:
    """workerConfig minus what the provisioner passes as flags."""
    flags = ("afterIdleSeconds", "shutdown", "engine")
    return {k: v for k, v in worker_config.items() if k not in flags}


class DockerProvider:
    provider_id = "docker"
    boot_s = 3.0  # a local process or container is claiming within a few seconds
    launches_workers = True
    registers_from: tuple[str, ...] = ()  # started with its credentials: never registers

    def __init__(
        self,
        *,
        root_url: str,
        issuer: Issuer,
        work_root: Path,
        on_exit: Callable[[str, int], Awaitable[None]],
        python: str = sys.executable,
        grace_s: float = 30.0,
        image: str = "flotilla/docker-worker:latest",
        docker_url: str = "unix:///var/run/docker.sock",
    ) -> None:
        self.root_url = root_url
        self.issuer = issuer
        self.work_root = work_root
        self.on_exit = on_exit
        self.python = python
        self.grace_s = grace_s
        self.image = image
        self.containers = Containers(docker_url)
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.watched_containers: dict[str, str] = {}  # worker _id -> container id
        self._image_seen: tuple[float, bool] = (-IMAGE_CHECK_S, False)
        self._tasks: set[asyncio.Task[None]] = set()

    def validate(self, config: PoolConfig) -> None:
        if config.maxCapacity is None:
            raise ValueError("a docker pool needs maxCapacity")
        if config.launchConfigs:
            raise ValueError("launchConfigs are for the aws provider")
        after_idle_s(config.workerConfig)  # a number, or a clear error now
        if engine_of(config.workerConfig) == "process" and config.launch == "container":
            raise ValueError("the process engine runs in process form only")

    def worker_extra(self, pool: Pool) -> dict[str, Any]:
        return {}

    def worker_from_api(self, provider_info: dict[str, Any]) -> dict[str, Any]:
        raise ProviderError("the docker provider launches its own workers")

    async def _image_present(self) -> bool:
        checked_at, present = self._image_seen
        if time.monotonic() - checked_at > IMAGE_CHECK_S:
            present = await asyncio.to_thread(self.containers.image_present, self.image)
            self._image_seen = (time.monotonic(), present)
        return present

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
        (directory / "work").mkdir(parents=True, exist_ok=True)
        (directory.parent / "caches").mkdir(parents=True, exist_ok=True)
        extra = file_config(pool.config.workerConfig)
        config_file = None
        if extra:
            config_file = directory / "worker.yml"
            config_file.write_text(yaml.safe_dump(extra))
        form = choose_form(pool.config.launch, await self._image_present())
        if engine_of(pool.config.workerConfig) == "process":
            form = "process"
        if form == "container":
            return await self._launch_container(pool, worker, creds, directory, config_file)
        return await self._launch_process(pool, worker, creds, directory, config_file)

    # --- process form ---------------------------------------------------------------------

    def _process_environment(self, creds: dict[str, str]) -> dict[str, str]:
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

    async def _launch_process(
        self,
        pool: Pool,
        worker: dict[str, Any],
        creds: dict[str, str],
        directory: Path,
        config_file: Path | None,
    ) -> Launched:
        command = worker_command(self.python, pool, worker, directory, config_file)
        log_path = directory / "worker.log"
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                *command,
                env=self._process_environment(creds),
                cwd=REPO_ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the provisioner is not theirs
            )
        key = worker["_id"]
        self.processes[key] = process
        self._spawn(self._watch_process(key, process), f"watch {key}")
        return Launched({"form": "process", "pid": process.pid, "log": str(log_path)}, RUNNING)

    async def _watch_process(self, key: str, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self.processes.pop(key, None)
        await self._report_exit(key, code)

    # --- container form -------------------------------------------------------------------

    async def _launch_container(
        self,
        pool: Pool,
        worker: dict[str, Any],
        creds: dict[str, str],
        directory: Path,
        config_file: Path | None,
    ) -> Launched:
        spec = container_spec(
            image=self.image,
            pool_id=pool.pool_id,
            worker=worker,
            environment=worker_environment(
                self.root_url, pool, worker, creds, directory, config_file
            ),
            directory=directory,
            cache_root=directory.parent / "caches",
            docker_url=self.containers.docker_url,
        )
        container_id = await asyncio.to_thread(self.containers.run, spec)
        log_path = directory / "worker.log"
        self._watch_container(worker["_id"], container_id, log_path)
        return Launched(
            {"form": "container", "containerId": container_id, "log": str(log_path)}, RUNNING
        )

    def _watch_container(self, key: str, container_id: str, log_path: Path) -> None:
        """Report the container's exit once it stops; reap it first (log saved, removed)."""
        if key in self.watched_containers:
            return
        self.watched_containers[key] = container_id
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[int] = loop.create_future()

        def done(code: int) -> None:
            loop.call_soon_threadsafe(lambda: exited.done() or exited.set_result(code))

        async def reap_and_report() -> None:
            code = await exited
            await asyncio.to_thread(self.containers.reap, container_id, log_path)
            self.watched_containers.pop(key, None)
            await self._report_exit(key, code)

        self.containers.wait_in_thread(container_id, done)
        self._spawn(reap_and_report(), f"watch {key}")

    # --- both forms -----------------------------------------------------------------------

    def _spawn(self, body: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(body)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report_exit(self, key: str, code: int) -> None:
        try:
            await self.on_exit(key, code)
        except Exception:
            log.exception("handling a worker exit failed", extra={"worker": key})

    async def gone(self, pool: Pool, workers: list[dict[str, Any]]) -> dict[str, str]:
        found: dict[str, str] = {}
        for worker in workers:
            key = worker["_id"]
            if key in self.processes or key in self.watched_containers:
                continue  # a watcher reports its exit
            data = worker.get("providerData", {})
            if data.get("containerId"):
                reason = await self._container_gone(key, data)
            elif data.get("pid") is not None:
                reason = None if _pid_alive(int(data["pid"])) else "worker process gone"
            else:
                reason = None if worker["state"] == "requested" else "no worker recorded"
            if reason is not None:
                found[key] = reason
        return found

    async def _container_gone(self, key: str, data: dict[str, Any]) -> str | None:
        """A container this replica does not watch (launched by another): adopt it if it
        runs, reap it if it stopped."""
        container_id = data["containerId"]
        state = await asyncio.to_thread(self.containers.state, container_id)
        if state is None:
            return "worker container gone"
        status, code = state
        if status in GONE_STATUSES:
            log_path = Path(data.get("log") or self.work_root / "orphans.log")
            await asyncio.to_thread(self.containers.reap, container_id, log_path)
            return f"container exited with {code}"
        self._watch_container(key, container_id, Path(data.get("log") or "/dev/null"))
        return None

    async def terminate(self, worker: dict[str, Any]) -> None:
        """SIGTERM now, SIGKILL after the grace period (a hung worker ignores SIGTERM)."""
        key = worker["_id"]
        data = worker.get("providerData", {})
        container_id = self.watched_containers.get(key) or data.get("containerId")
        if container_id:
            await asyncio.to_thread(self.containers.signal, container_id, "SIGTERM")
            self._spawn(self._kill_later(container=container_id), f"kill {key}")
            return
        process = self.processes.get(key)
        pid = process.pid if process else data.get("pid")
        if pid is not None:
            _signal_pid(int(pid), signal.SIGTERM)
            self._spawn(self._kill_later(key=key, pid=int(pid)), f"kill {key}")

    async def _kill_later(
        self, *, container: str | None = None, key: str = "", pid: int | None = None
    ) -> None:
        await asyncio.sleep(self.grace_s)
        if container is not None:
            await asyncio.to_thread(self.containers.signal, container, "SIGKILL")
            return
        process = self.processes.get(key)
        if process is not None:  # our child, not yet exited: its pid cannot be reused
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        elif pid is not None and _pid_alive(pid):  # another replica's, by pid
            _signal_pid(pid, signal.SIGKILL)

    def verify_registration(self, worker: dict[str, Any], proof: dict[str, Any]) -> bool:
        return False  # started with its credentials by the provisioner

    async def close(self) -> None:
        """Stop every worker this process watches; wait out the grace period."""
        watchers = {t for t in self._tasks if t.get_name().startswith("watch ")}
        for process in list(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for container_id in list(self.watched_containers.values()):
            await asyncio.to_thread(self.containers.signal, container_id, "SIGTERM")
        if watchers:
            _, late = await asyncio.wait(watchers, timeout=self.grace_s)
            for process in list(self.processes.values()):
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            for container_id in list(self.watched_containers.values()):
                await asyncio.to_thread(self.containers.signal, container_id, "SIGKILL")
            if late:
                await asyncio.wait(late, timeout=5)
        for task in self._tasks:
            task.cancel()
        self.containers.close()


def _signal_pid(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
