"""CPU-seconds and peak memory of chosen processes (and their children) over a time window,
read from Linux's /proc while a benchmark runs.

    sampler = ProcessSampler({"queue": queue.pid, "rabbitmq": pid_by_name("beam.smp")})
    with sampler:
        ...  # the workload
    usage = sampler.usage()  # {"queue": ProcessUsage(cpu_s=..., peak_rss_bytes=...), ...}

How it counts, and why:

- CPU is each process's own utime+stime (all its threads) at the last sample minus at the
  first sample. A process that appears during the window counts from zero, since all of
  its life is inside the window. The children's cutime/cstime fields are NOT added: a
  child that we sampled and that was then reaped would be counted twice. The price is
  that a child that starts and exits between two samples is missed, and one that exits
  loses the CPU it used since its last sample (at most `interval_s`).
- "Children" are all descendants, found from the ppid of every process at each sample
  (a full scan of /proc: a few milliseconds on a box with a few hundred processes). A
  descendant seen once stays counted after it exits. Keys are (pid, start time), so a
  reused pid is a different process.
- Memory: `peak_rss_bytes` is the largest sum of RSS over the tree at one sample; it counts
  pages shared between forked children once per child, so `peak_pss_bytes` (proportional
  set size from /proc/<pid>/smaps_rollup) is also given: its sum over a tree is what the
  tree really holds. `hwm_rss_bytes` is the largest VmHWM (lifetime peak RSS of one
  process) at the end, which for a long-running shared process (RabbitMQ) may predate the
  window.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

PROC = Path("/proc")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat this module uses (times in clock ticks)."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime_ticks: int
    stime_ticks: int
    cutime_ticks: int
    cstime_ticks: int
    starttime_ticks: int
    rss_pages: int

    @property
    def cpu_s(self) -> float:
        """This process's own CPU time, user + system, all threads."""
        return (self.utime_ticks + self.stime_ticks) / CLOCK_TICKS_PER_S

    @property
    def rss_bytes(self) -> int:
        return self.rss_pages * PAGE_BYTES


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line (proc(5)). The command name sits in parentheses and
    may itself contain spaces and ')', so the fields after it are found from the LAST ')'."""
    open_paren, close_paren = text.index("("), text.rindex(")")
    pid = int(text[:open_paren].strip())
    comm = text[open_paren + 1 : close_paren]
    rest = text[close_paren + 1 :].split()
    # rest[0] is field 3 (state); field n of proc(5) is rest[n - 3].
    return ProcStat(
        pid=pid,
        comm=comm,
        state=rest[0],
        ppid=int(rest[1]),
        utime_ticks=int(rest[11]),
        stime_ticks=int(rest[12]),
        cutime_ticks=int(rest[13]),
        cstime_ticks=int(rest[14]),
        starttime_ticks=int(rest[19]),
        rss_pages=int(rest[21]),
    )


def parse_status(text: str) -> dict[str, int]:
    """The numeric fields of /proc/<pid>/status (or smaps_rollup): sizes given in kB are
    returned in bytes (VmRSS, VmHWM, Pss, ...), plain counts as they are (Threads, ...)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        parts = value.split()
        if not parts or not parts[0].isdigit():
            continue
        number = int(parts[0])
        if len(parts) == 2 and parts[1] == "kB":
            number *= 1024
        elif len(parts) != 1:
            continue  # e.g. "Uid: 0 0 0 0": several numbers, not one quantity
        out[key.strip()] = number
    return out


def read_stat(pid: int) -> ProcStat | None:
    """None when the process has gone (or /proc is not there)."""
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def read_status(pid: int) -> dict[str, int] | None:
    try:
        return parse_status((PROC / str(pid) / "status").read_text())
    except OSError:
        return None


def read_pss_bytes(pid: int) -> int | None:
    """Proportional set size; None where smaps_rollup is missing (old kernels) or unreadable
    (another user's process when not root)."""
    try:
        fields = parse_status((PROC / str(pid) / "smaps_rollup").read_text())
    except OSError:
        return None
    return fields.get("Pss")


def all_stats() -> dict[int, ProcStat]:
    """Every process now on the machine; ones that exit during the scan are left out."""
    stats: dict[int, ProcStat] = {}
    try:
        entries = os.listdir(PROC)
    except OSError:
        return stats
    for entry in entries:
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None:
                stats[stat.pid] = stat
    return stats


def descendants(root: int, stats: Mapping[int, ProcStat]) -> set[int]:
    """Pids of all processes below `root` in `stats` (not root itself)."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    stack = list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


def pids_by_name(comm: str, stats: Mapping[int, ProcStat] | None = None) -> list[int]:
    """Pids whose command name (comm, at most 15 characters) is `comm`, oldest first."""
    stats = all_stats() if stats is None else stats
    matches = [s for s in stats.values() if s.comm == comm]
    return [s.pid for s in sorted(matches, key=lambda s: s.starttime_ticks)]


def pid_by_name(comm: str) -> int | None:
    """The oldest process called `comm` (e.g. "beam.smp", "redis-server"), or None."""
    pids = pids_by_name(comm)
    return pids[0] if pids else None


@dataclass
class ProcessUsage:
    """What one label (a process, with or without its descendants) used in the window."""

    label: str
    pid: int
    comm: str
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    peak_pss_bytes: int | None = None
    hwm_rss_bytes: int | None = None
    processes_seen: int = 0
    alive_at_end: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "comm": self.comm,
            "cpu_s": round(self.cpu_s, 3),
            "peak_rss_mb": _mb(self.peak_rss_bytes),
            "peak_pss_mb": _mb(self.peak_pss_bytes),
            "hwm_rss_mb": _mb(self.hwm_rss_bytes),
            "processes_seen": self.processes_seen,
            "alive_at_end": self.alive_at_end,
        }


def _mb(size_bytes: int | None) -> float | None:
    return None if size_bytes is None else round(size_bytes / (1024 * 1024), 1)


def cpu_s_per_1000(cpu_s: float, tasks: int) -> float | None:
    """CPU-seconds per 1,000 tasks, the unit the benchmark tables use."""
    return round(cpu_s * 1000 / tasks, 3) if tasks > 0 else None


@dataclass
class _Tracked:
    label: str
    root: int
    include_children: bool
    root_comm: str = "?"
    # (pid, starttime) -> (own CPU seconds at first sight, at last sight)
    cpu: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    members: set[tuple[int, int]] = field(default_factory=set)  # in the tree at the last sample
    peak_rss_bytes: int = 0
    peak_pss_bytes: int | None = None


class TreeSampler:
    """The counting, without a clock: each sample() reads /proc once and updates every label.
    ProcessSampler calls it on a timer in a separate process."""

    def __init__(
        self,
        roots: Mapping[str, int],
        *,
        include_children: bool | Iterable[str] = True,
        pss: bool = True,
    ) -> None:
        # include_children: True/False for all labels, or the labels that want children.
        if isinstance(include_children, bool):
            wanted = set(roots) if include_children else set()
        else:
            wanted = set(include_children)
        self._tracked = {
            label: _Tracked(label, pid, label in wanted) for label, pid in roots.items()
        }
        self._pss = pss
        self.samples = 0

    def sample(self) -> None:
        stats = all_stats()
        for tracked in self._tracked.values():
            self._sample_one(tracked, stats)
        self.samples += 1

    def _sample_one(self, tracked: _Tracked, stats: Mapping[int, ProcStat]) -> None:
        pids = {tracked.root} if tracked.root in stats else set()
        if tracked.include_children:
            pids |= descendants(tracked.root, stats)
        if tracked.root in stats:
            tracked.root_comm = stats[tracked.root].comm
        members: set[tuple[int, int]] = set()
        rss = 0
        pss: int | None = 0 if self._pss else None
        for pid in pids:
            stat = stats[pid]
            key = (pid, stat.starttime_ticks)
            members.add(key)
            if key in tracked.cpu:
                first = tracked.cpu[key][0]
            else:
                # Running before the window opened: count from now. Born inside it: from 0.
                first = stat.cpu_s if self.samples == 0 else 0.0
            tracked.cpu[key] = (first, stat.cpu_s)
            rss += stat.rss_bytes
            if pss is not None:
                value = read_pss_bytes(pid)
                pss = None if value is None else pss + value
        tracked.members = members
        tracked.peak_rss_bytes = max(tracked.peak_rss_bytes, rss)
        if pss is not None and members:
            tracked.peak_pss_bytes = max(tracked.peak_pss_bytes or 0, pss)

    def usage(self) -> dict[str, ProcessUsage]:
        out: dict[str, ProcessUsage] = {}
        for label, tracked in self._tracked.items():
            hwm = [(read_status(pid) or {}).get("VmHWM") for pid, _ in tracked.members]
            known = [value for value in hwm if value is not None]
            out[label] = ProcessUsage(
                label=label,
                pid=tracked.root,
                comm=tracked.root_comm,
                cpu_s=sum(last - first for first, last in tracked.cpu.values()),
                peak_rss_bytes=tracked.peak_rss_bytes,
                peak_pss_bytes=tracked.peak_pss_bytes,
                hwm_rss_bytes=max(known) if known else None,
                processes_seen=len(tracked.cpu),
                alive_at_end=any(pid == tracked.root for pid, _ in tracked.members),
            )
        return out


class ProcessSampler:
    """Runs a TreeSampler every `interval_s` between start() and stop() (or `with`) in a
    child process (`python -m bench.procstats`): on a thread of the benchmark itself,
    each of the few hundred small /proc reads would wait for the GIL behind the load
    generator's threads (a sample took 0.2 s instead of 5 ms), and would slow them too.
    The sampler's own CPU is about 1-2% of a core; it is no part of any label unless a
    root with children is its parent (pass include_children=[...] without that root)."""

    def __init__(
        self,
        roots: Mapping[str, int],
        *,
        interval_s: float = 0.25,
        include_children: bool | Iterable[str] = True,
        pss: bool = True,
    ) -> None:
        if isinstance(include_children, bool):
            wanted = list(roots) if include_children else []
        else:
            wanted = list(include_children)
        self._config = {
            "roots": dict(roots),
            "interval_s": interval_s,
            "include_children": wanted,
            "pss": pss,
        }
        self._process: subprocess.Popen[str] | None = None
        self._usage: dict[str, ProcessUsage] | None = None
        self.samples = 0
        self.window_s: float | None = None

    def start(self) -> ProcessSampler:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.procstats", json.dumps(self._config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self._process.stdout is not None
        ready = self._process.stdout.readline()  # the baseline sample has been taken
        if ready.strip() != "ready":
            self._discard()
            raise RuntimeError(f"procstats sampler did not start: {ready!r}")
        return self

    def _discard(self) -> None:
        """Kill the sampler and close its pipes; no numbers wanted."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._process is not None:
            self._process.communicate()

    def stop(self) -> dict[str, ProcessUsage]:
        if self._usage is not None:
            return self._usage
        if self._process is None:
            raise RuntimeError("ProcessSampler.stop() before start()")
        out, _ = self._process.communicate("stop\n", timeout=60)
        report = json.loads(out)
        self.samples = report["samples"]
        self.window_s = report["window_s"]
        self._usage = {label: ProcessUsage(**fields) for label, fields in report["usage"].items()}
        return self._usage

    def usage(self) -> dict[str, ProcessUsage]:
        return self.stop()

    def __enter__(self) -> ProcessSampler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.stop()
        else:
            self._discard()  # the workload failed: no numbers wanted, no process left


def _serve(config: dict[str, Any]) -> None:
    """The sampler process: sample until a line (or EOF) on stdin, then print the usage."""
    sampler = TreeSampler(
        {label: int(pid) for label, pid in config["roots"].items()},
        include_children=config["include_children"],
        pss=config["pss"],
    )
    started = time.monotonic()
    sampler.sample()
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], config["interval_s"])[0]:
        sampler.sample()
    sampler.sample()
    usage = {label: dataclasses.asdict(u) for label, u in sampler.usage().items()}
    report = {
        "samples": sampler.samples,
        "window_s": round(time.monotonic() - started, 3),
        "usage": usage,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
