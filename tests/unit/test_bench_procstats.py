"""bench.procstats: parsing /proc/<pid>/stat and status, finding a process tree, and
counting CPU-seconds per window (on this process and a child it starts)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench import procstats
from bench.procstats import ProcessSampler, ProcStat, TreeSampler, parse_stat, parse_status

# A made-up line whose command name holds spaces and a ')' (allowed: it is the executable's
# name, up to 15 bytes); fields from proc(5), numbered from 1.
STAT_LINE = (
    "4242 (we ird) x) S 17 4242 4242 0 -1 4194560 1000 0 0 0 "
    "250 75 12 3 20 0 4 0 987654 123456789 2048 18446744073709551615 "
    "1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
)

STATUS_TEXT = """Name:\tpython3
Umask:\t0022
State:\tS (sleeping)
Pid:\t4242
Uid:\t0\t0\t0\t0
VmPeak:\t  300000 kB
VmHWM:\t   51200 kB
VmRSS:\t   40960 kB
Threads:\t3
voluntary_ctxt_switches:\t17
"""


def test_parse_stat_finds_fields_after_the_last_parenthesis() -> None:
    stat = parse_stat(STAT_LINE)
    assert stat == ProcStat(
        pid=4242,
        comm="we ird) x",
        state="S",
        ppid=17,
        utime_ticks=250,
        stime_ticks=75,
        cutime_ticks=12,
        cstime_ticks=3,
        starttime_ticks=987654,
        rss_pages=2048,
    )
    assert stat.cpu_s == pytest.approx(325 / procstats.CLOCK_TICKS_PER_S)
    assert stat.rss_bytes == 2048 * procstats.PAGE_BYTES


def test_parse_stat_of_this_process() -> None:
    stat = procstats.read_stat(os.getpid())
    assert stat is not None
    assert stat.pid == os.getpid()
    assert stat.ppid == os.getppid()
    assert stat.comm  # "python" or "pytest", whatever the launcher
    assert stat.state in "RSD"
    assert stat.cpu_s > 0  # importing pytest alone costs CPU
    assert stat.rss_bytes > 1024 * 1024
    assert stat.starttime_ticks > 0


def test_parse_status_converts_kilobytes_and_skips_non_quantities() -> None:
    fields = parse_status(STATUS_TEXT)
    assert fields["VmRSS"] == 40960 * 1024
    assert fields["VmHWM"] == 51200 * 1024
    assert fields["Threads"] == 3
    assert fields["voluntary_ctxt_switches"] == 17
    assert fields["Pid"] == 4242
    for absent in ("Name", "State", "Uid"):  # text, or several numbers
        assert absent not in fields
    assert fields["Umask"] == 22  # octal text reads as a number; nobody uses it


def test_read_status_of_this_process() -> None:
    fields = procstats.read_status(os.getpid())
    assert fields is not None
    assert fields["VmRSS"] > 1024 * 1024
    assert fields["VmHWM"] >= fields["VmRSS"]
    stat = procstats.read_stat(os.getpid())
    assert stat is not None
    # Both files describe the same memory; allow for growth between the two reads.
    assert abs(fields["VmRSS"] - stat.rss_bytes) < 16 * 1024 * 1024


def test_read_of_a_missing_process_is_none() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert procstats.read_stat(gone.pid) is None
    assert procstats.read_status(gone.pid) is None


def _stat(pid: int, ppid: int, comm: str = "p", start: int = 1) -> ProcStat:
    return ProcStat(pid, comm, "S", ppid, 0, 0, 0, 0, start, 0)


def test_descendants_and_names() -> None:
    stats = {
        s.pid: s
        for s in (
            _stat(1, 0, "init"),
            _stat(10, 1, "worker", start=5),
            _stat(11, 10),
            _stat(12, 11),
            _stat(20, 1, "worker", start=3),
            _stat(21, 20),
        )
    }
    assert procstats.descendants(10, stats) == {11, 12}
    assert procstats.descendants(12, stats) == set()
    assert procstats.descendants(99, stats) == set()
    assert procstats.pids_by_name("worker", stats) == [20, 10]  # oldest first


def test_this_process_is_found_by_a_scan() -> None:
    stats = procstats.all_stats()
    assert os.getpid() in stats
    assert os.getpid() in procstats.descendants(os.getppid(), stats)


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[str]]:
    """A child that, once told "go", burns 0.3 CPU-seconds, says so, and waits for its stdin
    to close. Idle until then, so samplers that read /proc one after the other all see
    the same CPU time before the burn."""
    code = (
        "import sys, time\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "start = time.process_time()\n"
        "while time.process_time() - start < 0.3: pass\n"
        "print('burned', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:  # leaving the block closes the pipes and waits
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        yield child
        child.kill()


def go(burner: subprocess.Popen[str]) -> None:
    """Start the burn and wait for its end."""
    assert burner.stdin is not None and burner.stdout is not None
    burner.stdin.write("go\n")
    burner.stdin.flush()
    assert burner.stdout.readline().strip() == "burned"


def test_tree_sampler_counts_children_in_the_window(burner: subprocess.Popen[str]) -> None:
    # The burner is its own root in one label and a child in another; it started before
    # the first sample, so only what it burns in the window counts.
    with_children = TreeSampler({"me": os.getpid()}, include_children=True)
    without = TreeSampler({"me": os.getpid()}, include_children=False)
    alone = TreeSampler({"burner": burner.pid})
    for sampler in (with_children, without, alone):
        sampler.sample()
    go(burner)
    for sampler in (with_children, without, alone):
        sampler.sample()
    mine, theirs = with_children.usage()["me"], alone.usage()["burner"]
    own_only = without.usage()["me"]
    assert mine.processes_seen >= 2
    assert own_only.processes_seen == 1
    assert 0.28 <= theirs.cpu_s <= 0.4
    # This process's own share differs between the labels by the time one /proc scan takes.
    assert mine.cpu_s == pytest.approx(own_only.cpu_s + theirs.cpu_s, abs=0.05)
    assert mine.peak_rss_bytes > own_only.peak_rss_bytes
    assert theirs.alive_at_end and theirs.comm.startswith("python")


def test_tree_sampler_counts_from_the_first_sample_not_from_process_start() -> None:
    sampler = TreeSampler({"me": os.getpid()}, include_children=False, pss=False)
    sampler.sample()
    start = time.process_time()
    while time.process_time() - start < 0.2:
        pass
    sampler.sample()
    usage = sampler.usage()["me"]
    own = procstats.read_stat(os.getpid())
    assert own is not None
    assert 0.15 <= usage.cpu_s < own.cpu_s
    assert usage.peak_pss_bytes is None
    assert usage.hwm_rss_bytes is not None and usage.hwm_rss_bytes >= usage.peak_rss_bytes / 2
    assert procstats.cpu_s_per_1000(usage.cpu_s, 2000) == pytest.approx(usage.cpu_s / 2, abs=1e-3)
    assert procstats.cpu_s_per_1000(1.0, 0) is None


def test_process_sampler_runs_in_a_child_and_reports(burner: subprocess.Popen[str]) -> None:
    sampler = ProcessSampler({"burner": burner.pid}, interval_s=0.02)
    with sampler:
        go(burner)
    usage = sampler.usage()["burner"]
    assert sampler.samples >= 2
    assert sampler.window_s is not None and sampler.window_s > 0
    assert 0.28 <= usage.cpu_s <= 0.4
    assert usage.pid == burner.pid
    assert usage.peak_rss_bytes > 0
    assert usage.as_dict()["peak_rss_mb"] > 0
