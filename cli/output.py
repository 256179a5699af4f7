"""Where output goes: rich tables for people, one JSON document (or line) for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

STATE_STYLES = {
    "completed": "green",
    "failed": "red",
    "exception": "magenta",
    "running": "cyan",
    "pending": "yellow",
    "unscheduled": "dim",
    "blocked": "red dim",
}


@dataclass
class Output:
    json_mode: bool = False
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(
        default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True)
    )

    def json(self, value: Any) -> None:
        """One document (or one line of a stream) on stdout, flushed at once."""
        sys.stdout.write(json.dumps(value, separators=(",", ":"), sort_keys=True) + "\n")
        sys.stdout.flush()

    def line(self, text: str) -> None:
        self.out.print(text, markup=False)

    def note(self, text: str) -> None:
        """Progress and hints for people: stderr, never mixed into the data on stdout."""
        self.err.print(text, markup=False)

    def table(
        self, columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
    ) -> None:
        self.out.print(make_table(columns, rows, title))


def make_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(styled(cell) for cell in row))
    return table


def styled(cell: Any) -> str:
    text = "" if cell is None else str(cell)
    style = STATE_STYLES.get(text)
    return f"[{style}]{text}[/]" if style else text.replace("[", r"\[")
