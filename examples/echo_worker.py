"""A whole worker in twenty lines: echoes `payload.message` into its log and into an
artifact. Run it with FLOTILLA_WORKER_TASK_QUEUE_ID, _WORKER_GROUP, _WORKER_ID and the
TASKCLUSTER_ROOT_URL / _CLIENT_ID / _ACCESS_TOKEN variables set (see README)."""

import asyncio
import os

from flotilla_worker import TaskContext, TaskFailed, WorkerSettings, run_worker


async def echo(task: TaskContext) -> None:
    message = task.payload.get("message")
    if not isinstance(message, str):
        raise TaskFailed("payload.message must be a string")
    task.log.line(message)
    (task.output_dir / "public").mkdir()
    (task.output_dir / "public" / "echo.txt").write_text(message + "\n")


if __name__ == "__main__":
    asyncio.run(run_worker(echo, WorkerSettings.from_env(os.environ)))
