"""A metric of a sweep against one swept override (e.g. ``test/adv_acc`` vs ``attack.eps``), one line
per value of the other swept overrides. Same conventions as the study figures
(advmed/studies/pgd_study_figures.py): matplotlib's Figure API, markers on a light grid, viridis
lines, written atomically."""

from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from advmed.studies.sweep_table import JobRow
from advmed.studies.sweeps import sort_key
from advmed.utils.files import atomic_write

Series = dict[str, tuple[list, list[float]]]


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def metric_series(jobs: list[JobRow], metric: str, x_key: str, group_keys: list[str]) -> Series:
    """``{label: (x values, metric values)}``: one series per combination of ``group_keys`` values
    (label ``k=v, ...``; the metric's name when there are none), x in sweep order. Jobs without the
    metric (failed, unfinished) or without ``x_key`` give no point."""
    points: dict[tuple[str, ...], list[tuple[str, float]]] = {}
    for job in jobs:
        if metric in job.metrics and x_key in job.overrides:
            group = tuple(job.overrides.get(k, "") for k in group_keys)
            points.setdefault(group, []).append((job.overrides[x_key], job.metrics[metric]))
    numeric = all(_is_number(x) for pts in points.values() for x, _ in pts)
    series: Series = {}
    for group in sorted(points, key=lambda values: [sort_key(v) for v in values]):
        label = ", ".join(f"{k}={v}" for k, v in zip(group_keys, group)) or metric
        ordered = sorted(points[group], key=lambda p: sort_key(p[0]))
        series[label] = ([float(x) if numeric else x for x, _ in ordered], [y for _, y in ordered])
    return series


def plot_metric(series: Series, path: str | Path, metric: str, x_key: str, missing: int = 0) -> Path:
    """Write the PNG of ``series``; ``missing`` (jobs without the metric) is stated in the title."""
    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.subplots()
    categories = sorted({x for xs, _ in series.values() for x in xs if isinstance(x, str)}, key=sort_key)
    colours = colormaps["viridis"]([i / max(len(series) - 1, 1) * 0.9 for i in range(len(series))])
    for colour, (label, (xs, ys)) in zip(colours, series.items()):
        # a non-numeric override (a model name, a data set) is placed by rank, labelled on the axis
        positions = [categories.index(x) for x in xs] if categories else xs
        ax.plot(positions, ys, marker="o", color=colour, label=label)
    if categories:
        ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel(x_key)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.set_title(f"{metric} vs {x_key}" + (f" ({missing} jobs without it not shown)" if missing else ""), fontsize=9)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    return Path(path)
