"""`flotilla graph submit FILE`: plan the graph, then create every task once its
dependencies exist, with bounded concurrency."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from pathlib import Path

import slugid
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.config import CliConfig
from cli.documents import load_document
from cli.graph import GraphPlan, PlannedTask, plan_graph
from cli.output import Output
from cli.session import Clients
from cli.tasks import source_for


async def submit_plan(
    clients: Clients,
    plan: GraphPlan,
    *,
    concurrency: int,
    on_created: Callable[[PlannedTask], None],
) -> None:
    """Each task waits for its dependencies' createTask, then for a slot; the first failure
    cancels the rest (tasks created so far stay: a re-run of the same plan would adopt them)."""
    created = {task.name: asyncio.Event() for task in plan.tasks}
    slots = asyncio.Semaphore(concurrency)

    async def create(task: PlannedTask) -> None:
        for dependency in task.dependencies:
            await created[dependency].wait()
        async with slots:
            await clients.queue.createTask(task.task_id, task.definition)
        created[task.name].set()
        on_created(task)

    try:
        async with asyncio.TaskGroup() as group:
            for task in plan.tasks:
                group.create_task(create(task))
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None


async def submit_graph(
    clients: Clients,
    out: Output,
    config: CliConfig,
    path: Path,
    *,
    concurrency: int,
    task_group_id: str | None,
) -> GraphPlan:
    plan = plan_graph(
        load_document(path),
        now=datetime.datetime.now(datetime.UTC),
        new_id=slugid.nice,
        owner=config.owner,
        source=source_for(config, path),
        task_group_id=task_group_id,
    )
    if out.json_mode:
        await submit_plan(clients, plan, concurrency=concurrency, on_created=lambda _: None)
        out.json({"taskGroupId": plan.task_group_id, "tasks": plan.ids()})
        return plan
    if not out.err.is_terminal:  # a progress bar is for people; a log file gets none
        await submit_plan(clients, plan, concurrency=concurrency, on_created=lambda _: None)
        _print_plan(out, plan)
        return plan
    columns = (
        TextColumn("submitting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=out.err, transient=True) as progress:
        bar = progress.add_task("", total=len(plan.tasks))

        def advance(task: PlannedTask) -> None:
            progress.update(bar, advance=1, description=task.name)

        await submit_plan(clients, plan, concurrency=concurrency, on_created=advance)
    _print_plan(out, plan)
    return plan


def _print_plan(out: Output, plan: GraphPlan) -> None:
    """The name -> taskId table, then the task group id alone on the last line."""
    out.table(["task", "taskId"], [[t.name, t.task_id] for t in plan.tasks])
    out.line(plan.task_group_id)
