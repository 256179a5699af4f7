"""`flotilla group watch GROUPID`: a live table of a task group, refreshed by the queue's
events (a private binding on the group) with a periodic listing as the safety net. Once
bound and listed it says so on stderr ("watching GROUPID (live, ...)"): no change after
that line is missed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.text import Text

from cli.bindings import group_pattern, task_pattern
from cli.config import CliConfig
from cli.events import Event, Subscription, subscribe
from cli.groupstate import BLOCKED, RESOLVED, GroupState, summary_line
from cli.output import Output, make_table
from cli.session import Clients
from shared.broker import Binding, BrokerError

WATCHED_EVENTS = (
    "task-defined",
    "task-pending",
    "task-running",
    "task-completed",
    "task-failed",
    "task-exception",
)
BURST_S = 0.05  # events arriving together are drawn once
_ROW_ORDER = ("running", "pending", "failed", "exception", BLOCKED, "unscheduled", "completed")


def group_bindings(task_group_id: str) -> list[Binding]:
    bindings = [Binding(e, task_pattern(taskGroupId=task_group_id)) for e in WATCHED_EVENTS]
    return [*bindings, Binding("task-group-resolved", group_pattern(task_group_id))]


async def list_group(clients: Clients, task_group_id: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    query: dict[str, Any] = {}
    while True:
        page = await clients.queue.listTaskGroup(task_group_id, query=query)
        entries.extend(page["tasks"])
        if not page.get("continuationToken"):
            return entries
        query = {"continuationToken": page["continuationToken"]}


def render(state: GroupState, task_group_id: str, max_rows: int | None) -> Group:
    states = state.effective_states()
    views = sorted(
        state.tasks.values(),
        key=lambda v: (_ROW_ORDER.index(states[v.task_id]), v.name, v.task_id),
    )
    shown = views if max_rows is None else views[:max_rows]
    rows = [
        [v.name, v.task_id, states[v.task_id], len(v.status.get("runs") or []), v.reason]
        for v in shown
    ]
    if len(shown) < len(views):
        rows.append([f"... {len(views) - len(shown)} more", "", "", "", ""])
    table = make_table(
        ["task", "taskId", "state", "runs", "reason"], rows, f"group {task_group_id}"
    )
    counts = state.counts()
    done = sum(n for s, n in counts.items() if s in RESOLVED or s == BLOCKED)
    total = max(len(states), 1)
    bar = ProgressBar(total=total, completed=done, width=40)
    return Group(
        table, Group(bar, Text(f" {done}/{len(states)} resolved   {summary_line(counts)}"))
    )


@contextlib.asynccontextmanager
async def optional_subscription(
    config: CliConfig, out: Output, task_group_id: str, poll_s: float
) -> AsyncIterator[Subscription | None]:
    """Events when RabbitMQ can be reached; otherwise polling alone, with a note."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            subscription = await stack.enter_async_context(
                subscribe(config, group_bindings(task_group_id))
            )
        except BrokerError as exc:
            out.note(f"no events ({exc}); polling every {poll_s:g} s")
            subscription = None
        yield subscription


def apply_event(state: GroupState, event: Event) -> bool:
    """True when a listing is needed: a task we have not listed, or the group resolved."""
    status = event.body.get("status")
    if isinstance(status, dict) and "taskId" in status:
        return state.apply_status(status)
    return True


async def wait_for_events(
    state: GroupState, subscription: Subscription | None, timeout_s: float
) -> bool:
    """Apply what arrives within `timeout_s` (a burst at once); True if a listing is due."""
    if subscription is None:
        await asyncio.sleep(max(timeout_s, 0))
        return True
    try:
        first = await asyncio.wait_for(subscription.next(), max(timeout_s, 0.001))
    except TimeoutError:
        return True
    needs_listing = apply_event(state, first)
    await asyncio.sleep(BURST_S)
    while (event := subscription.next_nowait()) is not None:
        needs_listing = apply_event(state, event) or needs_listing
    return needs_listing


class ChangeLines:
    """Without a terminal (--json, or a log file): one line per task whose state changed
    (a JSON document with --json), no redrawing."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.seen: dict[str, str] = {}

    def update(self, state: GroupState) -> None:
        for task_id, effective in state.effective_states().items():
            if self.seen.get(task_id) == effective:
                continue
            self.seen[task_id] = effective
            name = state.tasks[task_id].name
            if self.out.json_mode:
                self.out.json({"taskId": task_id, "name": name, "state": effective})
            else:
                self.out.line(f"{effective:<11} {name} {task_id}")


async def watch_group(
    clients: Clients, out: Output, config: CliConfig, task_group_id: str, poll_s: float
) -> int:
    loop = asyncio.get_running_loop()
    state = GroupState()
    async with optional_subscription(config, out, task_group_id, poll_s) as subscription:
        state.apply_listing(await list_group(clients, task_group_id))  # after binding
        if subscription is not None:  # from here on, every change reaches the watch
            out.note(f"watching {task_group_id} (live, and listing every {poll_s:g} s)")
        listed_at = loop.time()
        with _display(out, state, task_group_id) as show:
            while not state.finished():
                due = await wait_for_events(state, subscription, poll_s - (loop.time() - listed_at))
                if due or loop.time() - listed_at >= poll_s:
                    state.apply_listing(await list_group(clients, task_group_id))
                    listed_at = loop.time()
                show()
    return _finish(out, state, task_group_id)


@contextlib.contextmanager
def _display(out: Output, state: GroupState, task_group_id: str) -> Iterator[Callable[[], None]]:
    console = out.out
    if out.json_mode or not console.is_terminal:
        lines = ChangeLines(out)
        lines.update(state)
        yield lambda: lines.update(state)
        if not out.json_mode:
            console.print(render(state, task_group_id, None))
        return
    max_rows = max(console.size.height - 8, 5)
    with Live(render(state, task_group_id, max_rows), console=console, auto_refresh=False) as live:
        live.refresh()
        yield lambda: live.update(render(state, task_group_id, max_rows), refresh=True)


def _finish(out: Output, state: GroupState, task_group_id: str) -> int:
    counts = state.counts()
    states = state.effective_states()
    unsuccessful = [
        {"taskId": v.task_id, "name": v.name, "state": states[v.task_id], "reason": v.reason}
        for v in state.tasks.values()
        if states[v.task_id] != "completed"
    ]
    ok = state.succeeded()
    if out.json_mode:
        out.json(
            {
                "taskGroupId": task_group_id,
                "ok": ok,
                "counts": dict(counts),
                "unsuccessful": unsuccessful,
            }
        )
    else:
        verdict = "all completed" if ok else "NOT all completed"
        out.line(f"group {task_group_id}: {summary_line(counts)} ({verdict})")
        for task in unsuccessful:
            reason = f" ({task['reason']})" if task["reason"] else ""
            out.line(f"  {task['state']:<11} {task['name']} {task['taskId']}{reason}")
    return 0 if ok else 1
