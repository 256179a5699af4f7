"""Logs are events: one JSON object per line on stdout, with any `extra` fields kept."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# A task's lifecycle, one event per step, declared here so every service logs (and every
# test looks for) the same words. Each carries `taskId`, and `runId` where a run is meant:
#     log.info(logs.TASK_RESOLVED, extra=logs.task_fields(task_id, run_id, reason=...))
TASK_CREATED = "task created"
TASK_PENDING = "task pending"
TASK_CLAIMED = "task claimed"
TASK_RESOLVED = "task resolved"
TASK_EXPIRED = "task expired"


def task_fields(task_id: str, run_id: int | None = None, **more: object) -> dict[str, object]:
    fields: dict[str, object] = {"taskId": task_id, **more}
    if run_id is not None:
        fields["runId"] = run_id
    return fields


# Attributes every LogRecord has; anything else came in through `extra=` and is kept.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", service: str = "flotilla") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger(service).info("logging configured", extra={"service": service})
