"""Opt-in counts of the MongoDB commands and RabbitMQ operations one process sends, for the
benchmarks (`bench/`): how many database round trips and messages a task costs.

Enabled by the FLOTILLA_COMMAND_STATS_DIR setting. Then every client `shared.db.connect`
makes carries a PyMongo command listener, every AMQP channel counts its publishes, gets,
deliveries and acks, and the process writes its totals as JSON to
`<dir>/<process>-<pid>.json` every FLUSH_S seconds and at exit (replaced atomically, so a
reader never sees half a file). Unset, nothing is installed: no listener, no thread.

The setting is read once per process, through the settings model, on the first
`recorder()` call (from `connect`), rather than passed down from every composition root:
it is a measurement hook that must reach every client of every process alike.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from functools import wraps
from pathlib import Path
from typing import Any

from pymongo import monitoring

FLUSH_S = 0.5


class CommandCounter(monitoring.CommandListener):
    """Counts every command a client sends by name (failed ones also in `failures`)."""

    def __init__(self) -> None:
        self.commands: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.failures[event.command_name] += 1


class Recorder:
    """One process's counts and the file they are written to."""

    def __init__(self, directory: Path, process: str) -> None:
        self.path = directory / f"{process}-{os.getpid()}.json"
        self.process = process
        self.mongo = CommandCounter()
        self.amqp: Counter[str] = Counter()
        self.every_client = False  # the listener is registered globally (see configure)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        directory.mkdir(parents=True, exist_ok=True)

    def snapshot(self) -> dict[str, Any]:
        return {
            "process": self.process,
            "pid": os.getpid(),
            "commands": dict(self.mongo.commands),
            "failed": dict(self.mongo.failures),
            "amqp": dict(self.amqp),
        }

    def write(self) -> None:
        with self._lock:  # the flusher thread and atexit may race at exit
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.snapshot()))
            os.replace(temporary, self.path)

    def start(self) -> None:
        self.write()
        threading.Thread(target=self._flush, name="command-stats", daemon=True).start()
        atexit.register(self.stop)

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):  # as in _flush: the directory may be gone
            self.write()

    def _flush(self) -> None:
        while not self._stopped.wait(FLUSH_S):
            try:
                self.write()
            except OSError:  # the directory went away (a benchmark cleaned up): stop quietly
                return


_recorder: Recorder | None = None
_configured = False


def configure(
    directory: str | None, process: str | None = None, *, every_client: bool = False
) -> Recorder | None:
    """Start recording into `directory` (None: record nothing). Once per process.
    `every_client`: count the commands of every PyMongo client the process makes, not
    only those `shared.db.connect` makes (the benchmarks' own clients)."""
    global _recorder, _configured
    if _configured:
        return _recorder
    _configured = True
    if directory:
        _recorder = Recorder(Path(directory), process or process_name(sys.argv[0]))
        _recorder.every_client = every_client
        if every_client:
            monitoring.register(_recorder.mongo)
        _count_amqp(_recorder.amqp)
        _recorder.start()
    return _recorder


def recorder() -> Recorder | None:
    """This process's recorder, configured from the settings on first use."""
    if not _configured:
        from shared.config import load_settings

        configure(load_settings().command_stats_dir)
    return _recorder


def listeners() -> list[monitoring.CommandListener]:
    """The listeners a new MongoDB client should carry: none unless recording."""
    active = recorder()
    return [active.mongo] if active is not None and not active.every_client else []


def process_name(argv0: str) -> str:
    """The name a process's file gets, from its sys.argv[0]: `python -m services.queue` →
    "queue", `python -m bench` → "bench", `python -c ...` → "python"."""
    if not argv0 or argv0.startswith("-"):
        return "python"
    script = Path(argv0)
    return script.parent.name if script.stem == "__main__" else script.stem


def _count_amqp(counts: Counter[str]) -> None:
    """Count the AMQP operations of every channel of this process, whichever code path
    (Broker.publish, a consumer, a basic.get) sends them: at aiormq's channel, which all
    of aio-pika goes through."""
    import aiormq
    from pamqp import commands as spec

    channel = aiormq.Channel

    def counting(
        name: str, method: Callable[..., Any], classify: Callable[[Any], str] | None = None
    ) -> Callable[..., Any]:
        @wraps(method)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = await method(*args, **kwargs)
            counts[classify(result) if classify else name] += 1
            return result

        return wrapper

    def got(message: Any) -> str:
        return "get_empty" if isinstance(message.delivery, spec.Basic.GetEmpty) else "get"

    patches: Mapping[str, Callable[..., Any]] = {
        "basic_publish": counting("publish", channel.basic_publish),
        "basic_get": counting("get", channel.basic_get, got),
        "basic_ack": counting("ack", channel.basic_ack),
        "basic_nack": counting("nack", channel.basic_nack),
        "basic_reject": counting("reject", channel.basic_reject),
        "_on_deliver_frame": counting("deliver", channel._on_deliver_frame),
    }
    for name, replacement in patches.items():
        setattr(channel, name, replacement)
