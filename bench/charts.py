"""PNG charts of benchmark results, from plain dicts of series (matplotlib, Agg backend).

The orchestration picks numbers out of bench/results/latest.json and hands them over in one
of three shapes:

- bar_chart(path, title, {"W1 tasks/s": {"Flotilla": 310, "Celery": 420, "ceiling": 900}})
  groups on the x axis, one bar per series in each group (a missing value leaves a gap);
- percentile_chart(path, title, {"Flotilla": {"p50_ms": 12, "p90_ms": 30, ...}, ...})
  p50/p90/p99/max per series, as grouped bars; accepts bench_queue.summary_ms() output
  ({"p50_ms": ...}) or plain {"p50": ...};
- line_chart(path, title, {"claimWork": {1000: 4.1, 100000: 4.3}}, xlabel=..., ylabel=...)
  x = depth or load, one line per series; points may also be [(x, y), ...].

The shaping functions (grouped_values, percentile_values, line_points) are pure and do the
checking; the drawing functions only draw. matplotlib is imported inside the drawing
functions, so importing this module (and testing the shaping) does not need it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

RESULTS = Path(__file__).resolve().parent / "results"
PERCENTILES = ("p50", "p90", "p99", "max")
# Fixed colours per well-known series, so Flotilla is the same colour on every chart.
COLOURS = {"Flotilla": "#1f77b4", "Celery": "#2ca02c", "ceiling": "#7f7f7f"}
FALLBACK_COLOURS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _number(value: Any) -> float | None:
    """A finite float, or None for anything that is not a usable measurement."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# --- shaping (pure) -------------------------------------------------------------------------


def grouped_values(
    groups: Mapping[str, Mapping[str, Any]],
) -> tuple[list[str], list[str], list[list[float | None]]]:
    """(group labels, series labels, values[series][group]) from {group: {series: value}}.

    Series keep the order in which they first appear; a series missing from a group, or a
    value that is not a finite number (None, "-", NaN), becomes None: a gap, not a zero."""
    group_labels = list(groups)
    series_labels: list[str] = []
    for values in groups.values():
        for series in values:
            if series not in series_labels:
                series_labels.append(series)
    matrix = [
        [_number(groups[group].get(series)) for group in group_labels] for series in series_labels
    ]
    return group_labels, series_labels, matrix


def percentile_values(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """{"p50": ..., "p90": ..., "p99": ..., "max": ...} from a summary that names them
    "p50_ms" (bench_queue.summary_ms) or "p50"."""
    out: dict[str, float | None] = {}
    for name in PERCENTILES:
        value = summary.get(f"{name}_ms", summary.get(name))
        out[name] = _number(value)
    return out


def percentile_groups(
    series: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, float | None]]:
    """{series: summary} → {percentile: {series: value}}, the shape bar charts draw."""
    shaped = {label: percentile_values(summary) for label, summary in series.items()}
    return {name: {label: shaped[label][name] for label in shaped} for name in PERCENTILES}


def line_points(
    points: Mapping[Any, Any] | Iterable[Sequence[Any]],
    *,
    log_x: bool = False,
    log_y: bool = False,
) -> tuple[list[float], list[float]]:
    """(xs, ys) sorted by x from {x: y} or [(x, y), ...]; points without a finite x and y
    are dropped (a failed measurement should not pull the line to zero), and so are
    points a log axis cannot show."""
    pairs = points.items() if isinstance(points, Mapping) else points
    kept: list[tuple[float, float]] = []
    for pair in pairs:
        x, y = _number(pair[0]), _number(pair[1])
        if x is None or y is None or (log_x and x <= 0) or (log_y and y <= 0):
            continue
        kept.append((x, y))
    kept.sort()
    return [x for x, _ in kept], [y for _, y in kept]


def loggable(values: Iterable[float | None]) -> list[float | None]:
    """Values a log axis can show: zero and negatives become gaps (None)."""
    return [v if v is not None and v > 0 else None for v in values]


def colour_for(series: str, index: int) -> str:
    return COLOURS.get(series, FALLBACK_COLOURS[index % len(FALLBACK_COLOURS)])


def format_value(value: float) -> str:
    """Bar labels: short, like the printed tables."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.2g}" if abs(value) < 1 else f"{value:.1f}"


# --- drawing --------------------------------------------------------------------------------


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(width, height), dpi=100)
    return figure, axes


def _plain_log_labels(axis: Any) -> None:
    """Log-axis ticks as 200, 3,000 instead of 2×10², 3×10³ (easier to read off); minor
    ticks are labelled only when the axis spans few decades."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    class PlainMinor(LogFormatter):
        # LogFormatter decides which minor ticks get a label; this only changes how it reads.
        def __call__(self, x: float, pos: int | None = None) -> str:
            return format_value(x) if super().__call__(x, pos) else ""

    axis.set_major_formatter(FuncFormatter(lambda value, _position: format_value(value)))
    axis.set_minor_formatter(PlainMinor(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _save(figure: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)  # pyplot keeps every open figure otherwise
    return path


def _draw_grouped_bars(
    axes: Axes,
    groups: Mapping[str, Mapping[str, Any]],
    *,
    log_scale: bool,
    value_labels: bool,
) -> None:
    group_labels, series_labels, matrix = grouped_values(groups)
    count = max(len(series_labels), 1)
    width = 0.8 / count
    drawn = 0
    for index, (series, values) in enumerate(zip(series_labels, matrix, strict=True)):
        shown = loggable(values) if log_scale else values
        offset = (index - (count - 1) / 2) * width
        xs = [g + offset for g, v in enumerate(shown) if v is not None]
        ys = [v for v in shown if v is not None]
        bars = axes.bar(xs, ys, width, label=series, color=colour_for(series, index))
        if value_labels and ys:
            axes.bar_label(bars, labels=[format_value(v) for v in ys], fontsize=7, padding=2)
        drawn += len(ys)
    axes.set_xticks(range(len(group_labels)), group_labels)
    if log_scale and drawn:  # a log axis with nothing on it makes matplotlib warn
        axes.set_yscale("log")
        _plain_log_labels(axes.yaxis)
    axes.grid(axis="y", alpha=0.3)
    if len(series_labels) > 1:
        axes.legend(fontsize=8)


def bar_chart(
    path: Path,
    title: str,
    groups: Mapping[str, Mapping[str, Any]],
    *,
    ylabel: str = "",
    log_scale: bool = False,
    value_labels: bool = True,
) -> Path:
    """Grouped bars: {group: {series: value}}, e.g. {"W1 tasks/s": {"Flotilla": 310,
    "Celery": 420, "ceiling": 900}}. log_scale for values spanning decades (a ceiling
    next to the system under test)."""
    figure, axes = _figure(max(6.0, 1.6 * len(groups) + 2), 4.5)
    _draw_grouped_bars(axes, groups, log_scale=log_scale, value_labels=value_labels)
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    return _save(figure, path)


def percentile_chart(
    path: Path,
    title: str,
    series: Mapping[str, Mapping[str, Any]],
    *,
    unit: str = "ms",
    log_scale: bool = True,
) -> Path:
    """Latency percentiles: {series: summary} with p50/p90/p99/max (see percentile_values);
    log scale by default, as max is often a decade above p50."""
    figure, axes = _figure(7.0, 4.5)
    _draw_grouped_bars(axes, percentile_groups(series), log_scale=log_scale, value_labels=True)
    axes.set_title(title)
    axes.set_ylabel(f"latency, {unit}")
    return _save(figure, path)


def line_chart(
    path: Path,
    title: str,
    series: Mapping[str, Mapping[Any, Any] | Iterable[Sequence[Any]]],
    *,
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
    log_y: bool = False,
) -> Path:
    """One line per series over x (depth, load): {series: {x: y}} or {series: [(x, y)]}."""
    figure, axes = _figure(7.0, 4.5)
    drawn = 0
    for index, (label, points) in enumerate(series.items()):
        xs, ys = line_points(points, log_x=log_x, log_y=log_y)
        axes.plot(xs, ys, marker="o", label=label, color=colour_for(label, index))
        drawn += len(xs)
    if log_x and drawn:  # a log axis with nothing on it makes matplotlib warn
        axes.set_xscale("log")
        _plain_log_labels(axes.xaxis)
    if log_y and drawn:
        axes.set_yscale("log")
        _plain_log_labels(axes.yaxis)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if len(series) > 1:
        axes.legend(fontsize=8)
    return _save(figure, path)
