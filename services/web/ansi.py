"""Log text to HTML: ANSI colour escapes become spans, everything else is escaped. Pure.

A log is rendered line by line with one `AnsiLines` per log, because a colour set on one
line stays on until reset (a live log arrives in arbitrary chunks, so the state is kept).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

# CSI sequences: `ESC [ params intermediates final`. SGR (final `m`) sets colours; the
# rest (cursor moves, erase line) mean nothing in a log viewer and are dropped.
_CSI = re.compile(r"\x1b\[([0-9;?]*)[ -/]*([@-~])")
# Other escapes and control characters (keep tab) would show as garbage.
_OTHER_CONTROL = re.compile(r"\x1b[@-Z\\-_]?|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass
class AnsiLines:
    fg: int | None = None  # 0-7 normal, 8-15 bright
    bg: int | None = None
    bold: bool = False
    italic: bool = False
    underline: bool = False
    _number: int = field(default=0)

    def classes(self) -> list[str]:
        names = []
        if self.fg is not None:
            names.append(f"fg{self.fg}")
        if self.bg is not None:
            names.append(f"bg{self.bg}")
        if self.bold:
            names.append("b")
        if self.italic:
            names.append("i")
        if self.underline:
            names.append("u")
        return names

    def _apply(self, params: str) -> None:
        codes = [int(p) if p.isdigit() else 0 for p in params.split(";")] if params else [0]
        i = 0
        while i < len(codes):
            code = codes[i]
            if code == 0:
                self.fg = self.bg = None
                self.bold = self.italic = self.underline = False
            elif code == 1:
                self.bold = True
            elif code == 3:
                self.italic = True
            elif code == 4:
                self.underline = True
            elif code == 22:
                self.bold = False
            elif code == 23:
                self.italic = False
            elif code == 24:
                self.underline = False
            elif 30 <= code <= 37:
                self.fg = code - 30
            elif code == 39:
                self.fg = None
            elif 40 <= code <= 47:
                self.bg = code - 40
            elif code == 49:
                self.bg = None
            elif 90 <= code <= 97:
                self.fg = code - 90 + 8
            elif 100 <= code <= 107:
                self.bg = code - 100 + 8
            elif code in (38, 48) and i + 1 < len(codes):
                # 256-colour / truecolour: map the 16 basic ones, skip the rest's arguments
                if codes[i + 1] == 5 and i + 2 < len(codes):
                    colour = codes[i + 2] if codes[i + 2] < 16 else None
                    if code == 38:
                        self.fg = colour
                    else:
                        self.bg = colour
                    i += 2
                elif codes[i + 1] == 2:
                    i += 4
            i += 1

    def render(self, text: str) -> str:
        """One line (without its newline) as escaped HTML with colour spans."""
        out: list[str] = []
        position = 0
        for match in _CSI.finditer(text):
            out.append(self._segment(text[position : match.start()]))
            if match.group(2) == "m":
                self._apply(match.group(1))
            position = match.end()
        out.append(self._segment(text[position:]))
        return "".join(out)

    def _segment(self, text: str) -> str:
        text = _OTHER_CONTROL.sub("", text)
        if not text:
            return ""
        escaped = html.escape(text, quote=False)
        classes = self.classes()
        if not classes:
            return escaped
        return f'<span class="{" ".join(classes)}">{escaped}</span>'

    def line(self, text: str) -> str:
        """A numbered line with its anchor: `<span class=line id=L7>…</span>`."""
        self._number += 1
        n = self._number
        return (
            f'<span class="line" id="L{n}"><a class="ln" href="#L{n}">{n}</a>'
            f"{self.render(text.rstrip(chr(13)))}</span>"
        )


class LineSplitter:
    """Bytes in arbitrary chunks → complete decoded lines (a live log's chunks split lines
    and even UTF-8 characters)."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[str]:
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        return [line.decode("utf-8", errors="replace") for line in lines]

    def flush(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return [rest.decode("utf-8", errors="replace")] if rest else []


def render_log(data: bytes) -> str:
    """A whole log as HTML lines."""
    renderer = AnsiLines()
    splitter = LineSplitter()
    lines = splitter.feed(data) + splitter.flush()
    return "".join(renderer.line(line) for line in lines)
