"""`flotilla task artifacts TASKID` and `... artifacts get NAME [-o FILE]`."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cli.errors import CliError
from cli.output import Output
from cli.session import Clients
from cli.tasks import latest_run, short_time

CHUNK_BYTES = 64 * 1024


async def list_artifacts(clients: Clients, out: Output, task_id: str, run_id: int | None) -> int:
    if run_id is None:
        _, run_id = await latest_run(clients, task_id)
    artifacts: list[dict[str, Any]] = []
    query: dict[str, Any] = {}
    while True:
        page = await clients.queue.listArtifacts(task_id, str(run_id), query=query)
        artifacts.extend(page["artifacts"])
        if not page.get("continuationToken"):
            break
        query = {"continuationToken": page["continuationToken"]}
    if out.json_mode:
        out.json({"taskId": task_id, "runId": run_id, "artifacts": artifacts})
        return 0
    out.table(
        ["name", "storage", "content type", "expires"],
        [
            [a["name"], a["storageType"], a.get("contentType", ""), short_time(a.get("expires"))]
            for a in artifacts
        ],
        title=f"{task_id} run {run_id}: {len(artifacts)} artifacts",
    )
    return 0


async def artifact_url(clients: Clients, task_id: str, run_id: int, name: str) -> str:
    """The URL the queue redirects to (signed for s3; the target for reference/link)."""
    answer = await clients.queue.artifact(task_id, str(run_id), name)
    if not isinstance(answer, dict) or "url" not in answer:
        raise CliError(f"the queue gave no URL for artifact {name!r}")
    return answer["url"]


async def stream_url(clients: Clients, url: str) -> AsyncIterator[bytes]:
    """The body, decoded if it was sent with a Content-Encoding (gzip logs)."""
    async with clients.http.get(url) as response:
        if response.status >= 400:
            raise CliError(f"downloading {url.split('?')[0]} failed with HTTP {response.status}")
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            yield chunk


async def get_artifact(
    clients: Clients,
    out: Output,
    task_id: str,
    name: str,
    run_id: int | None,
    output: str | None,
) -> int:
    if run_id is None:
        _, run_id = await latest_run(clients, task_id)
    url = await artifact_url(clients, task_id, run_id, name)
    if output == "-":
        async for chunk in stream_url(clients, url):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return 0
    target = Path(output or name.rsplit("/", 1)[-1])
    partial = target.with_name(target.name + ".part")
    size = 0
    try:
        with partial.open("wb") as file:
            async for chunk in stream_url(clients, url):
                file.write(chunk)
                size += len(chunk)
        os.replace(partial, target)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    if out.json_mode:
        out.json(
            {"taskId": task_id, "runId": run_id, "name": name, "path": str(target), "bytes": size}
        )
    else:
        out.note(f"{name} ({size} bytes) -> {target}")
    return 0
