"""bench.charts: shaping result dicts into series (pure), and the PNGs drawn from them."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from bench import charts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_grouped_values_keeps_order_and_leaves_gaps() -> None:
    groups = {
        "W1 tasks/s": {"Flotilla": 310, "Celery": 420.5, "ceiling": 900},
        "W3 fan-in tasks/s": {"Celery": 270, "Flotilla": None},
        "W2 claims/s": {"Flotilla": "-", "ceiling": math.nan, "Celery": True},
    }
    group_labels, series, matrix = charts.grouped_values(groups)
    assert group_labels == ["W1 tasks/s", "W3 fan-in tasks/s", "W2 claims/s"]
    assert series == ["Flotilla", "Celery", "ceiling"]  # order of first appearance
    assert matrix == [
        [310.0, None, None],
        [420.5, 270.0, None],  # a bool is not a measurement
        [900.0, None, None],
    ]


def test_grouped_values_of_nothing() -> None:
    assert charts.grouped_values({}) == ([], [], [])
    assert charts.grouped_values({"g": {}}) == (["g"], [], [])


def test_percentile_values_accepts_summary_ms_and_plain_names() -> None:
    summary_ms = {
        "n": 100,
        "p50_ms": 12.5,
        "p90_ms": 30,
        "p99_ms": 80.25,
        "min_ms": 1,
        "max_ms": 95,
    }
    assert charts.percentile_values(summary_ms) == {
        "p50": 12.5,
        "p90": 30.0,
        "p99": 80.25,
        "max": 95.0,
    }
    plain = {"p50": 1, "p99": 3, "max": None}
    assert charts.percentile_values(plain) == {"p50": 1.0, "p90": None, "p99": 3.0, "max": None}


def test_percentile_groups_turns_series_into_groups_per_percentile() -> None:
    shaped = charts.percentile_groups(
        {"Flotilla": {"p50_ms": 5, "p90_ms": 9, "p99_ms": 20, "max_ms": 41}, "Celery": {"p50": 7}}
    )
    assert list(shaped) == ["p50", "p90", "p99", "max"]
    assert shaped["p50"] == {"Flotilla": 5.0, "Celery": 7.0}
    assert shaped["max"] == {"Flotilla": 41.0, "Celery": None}


def test_line_points_sorts_and_drops_unusable_points() -> None:
    assert charts.line_points({100000: 4.3, 1000: 4.1, 10000: None, 1000000: 5}) == (
        [1000.0, 100000.0, 1000000.0],
        [4.1, 4.3, 5.0],
    )
    assert charts.line_points([(3, 1), (1, 2), ("x", 3), (2, math.inf)]) == ([1.0, 3.0], [2.0, 1.0])
    assert charts.line_points([(0, 1), (1, 0), (2, 2)], log_x=True) == ([1.0, 2.0], [0.0, 2.0])
    assert charts.line_points([(0, 1), (1, 0), (2, 2)], log_y=True) == ([0.0, 2.0], [1.0, 2.0])


def test_loggable_colour_and_labels() -> None:
    assert charts.loggable([3.0, 0.0, -1.0, None, 0.5]) == [3.0, None, None, None, 0.5]
    assert charts.colour_for("Flotilla", 5) == charts.COLOURS["Flotilla"]
    assert charts.colour_for("other", 0) != charts.colour_for("other", 1)
    assert [charts.format_value(v) for v in (12345.6, 420.4, 12.34, 3.14159, 0.01234)] == [
        "12,346",
        "420",
        "12",
        "3.1",
        "0.012",
    ]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def matplotlib_present() -> None:
    # matplotlib is in the `test` extra: a missing one fails loudly, never skips.
    import matplotlib

    assert matplotlib.__version__


def test_bar_chart_writes_a_png(tmp_path: Path, matplotlib_present: None) -> None:
    path = charts.bar_chart(
        tmp_path / "nested" / "throughput.png",
        "No-op throughput",
        {
            "W1 tasks/s": {"Flotilla": 310, "Celery": 420, "ceiling": 9000},
            "W3 fan-in tasks/s": {"Flotilla": 250, "Celery": 0, "ceiling": None},
        },
        ylabel="tasks/s",
        log_scale=True,  # the zero and the None are gaps, not errors
    )
    assert path == tmp_path / "nested" / "throughput.png"
    width, height = png_size(path)
    assert (width, height) == (600, 450)
    assert path.stat().st_size > 10_000


def test_percentile_chart_writes_a_png(tmp_path: Path, matplotlib_present: None) -> None:
    path = charts.percentile_chart(
        tmp_path / "latency.png",
        "send → result",
        {
            "Flotilla": {"p50_ms": 12, "p90_ms": 30, "p99_ms": 80, "max_ms": 95},
            "Celery": {"p50": 13000, "p90": 14200, "p99": 14300, "max": 14400},
        },
    )
    assert png_size(path) == (700, 450)
    assert path.stat().st_size > 10_000


def test_line_chart_writes_a_png(tmp_path: Path, matplotlib_present: None) -> None:
    path = charts.line_chart(
        tmp_path / "depth.png",
        "claimWork latency against queue depth",
        {"claimWork p50": {1000: 4.1, 100000: 4.3, 1000000: 4.6}, "createTask p50": [(1000, 6)]},
        xlabel="pending tasks",
        ylabel="ms",
        log_x=True,
    )
    assert png_size(path) == (700, 450)
    assert path.stat().st_size > 10_000


def test_charts_of_nothing_still_draw(tmp_path: Path, matplotlib_present: None) -> None:
    # A workload that failed leaves empty series; the chart says so by being empty.
    bars = charts.bar_chart(
        tmp_path / "empty.png", "empty", {"W1": {"Flotilla": None}}, log_scale=True
    )
    lines = charts.line_chart(
        tmp_path / "l.png", "empty", {"a": {}}, xlabel="x", ylabel="y", log_y=True
    )
    assert png_size(bars)[0] > 0 and png_size(lines)[0] > 0
