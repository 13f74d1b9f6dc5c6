"""Figures of the PGD attack-success study (Wu & Kenney, Fig. 3a-c) from its tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from advmed.studies.pgd_study_settings import ConfidenceBins
from advmed.utils.files import atomic_write
from advmed.utils.tables import Table


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    return Path(path)


def _percent_axis(ax, xlabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("attack success rate (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)


def _by_eps(table: Table, x_column: str) -> dict[float, tuple[list, list]]:
    """Rows of a per-eps table grouped into one (x values, success rates in %) series per eps."""
    ix, ieps, irate = (table.columns.index(c) for c in (x_column, "eps", "success_rate"))
    series: dict[float, tuple[list, list]] = {}
    for row in table.rows:
        xs, ys = series.setdefault(row[ieps], ([], []))
        xs.append(row[ix])
        ys.append(100 * row[irate])
    return series


def plot_success_vs_eps(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str,
    legend_title: str | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Fig. 3a (PGD, and APGD-CE dashed) / 3d (one per training-set size): success rate
    (fractions) vs eps. ``styles``: matplotlib keyword args of some series by label (e.g.
    ``{"linestyle": "--", "color": "C0"}``); a label starting with ``_`` stays out of the legend."""
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    styles = styles or {}
    for label, (eps, rate) in series.items():
        ax.plot(eps, [100 * r for r in rate], **{"marker": "o", "label": label, **styles.get(label, {})})
    _percent_axis(ax, "epsilon (fraction of the intensity range)")
    ax.set_title(title, fontsize=9 if len(title) > 45 else None)
    if len(series) > 1:
        ax.legend(title=legend_title, fontsize=8, loc="lower right")  # rising curves leave it empty
    return _save(fig, path)


def plot_success_vs_iterations(table: Table, path: str | Path) -> Path:
    """Fig. 3b: success rate vs PGD iterations, one line per eps."""
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    series = _by_eps(table, "iteration")
    colors = colormaps["viridis"](torch.linspace(0, 0.9, len(series)).tolist())
    for color, (eps, (steps, rate)) in zip(colors, series.items()):
        ax.plot(steps, rate, marker=".", color=color, label=f"{eps:g}")
    _percent_axis(ax, "PGD iterations")
    ax.set_title("Attack success vs iterations")
    ax.legend(title="epsilon", fontsize=7, ncol=2)
    return _save(fig, path)


def plot_success_vs_confidence(table: Table, bins: ConfidenceBins, n_below: int, path: str | Path) -> Path:
    """Fig. 3c: success rate per clean-confidence bin, one line per eps; grey bars: images per bin."""
    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.subplots()
    edges = bins.edges().tolist()
    centres = [(lo + hi) / 2 for lo, hi in zip(edges[:-1], edges[1:])]
    counts = [row[table.columns.index("n_eligible")] for row in table.rows[: bins.n]]
    bars = ax.twinx()
    bars.bar(centres, counts, width=0.9 * (edges[1] - edges[0]), color="0.85", zorder=0)
    bars.set_ylabel("eligible images per bin")
    ax.set_zorder(bars.get_zorder() + 1)
    ax.patch.set_visible(False)
    series = _by_eps(table, "bin")
    colors = colormaps["viridis"](torch.linspace(0, 0.9, len(series)).tolist())
    for color, (eps, (_, rate)) in zip(colors, series.items()):
        ax.plot(centres, rate, marker="o", color=color, label=f"{eps:g}")
    _percent_axis(ax, "clean confidence (max softmax probability)")
    ax.set_xticks(edges)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.set_title(f"Attack success vs confidence ({n_below} eligible images below {bins.low:g}: no bin)", fontsize=9)
    ax.legend(title="epsilon", fontsize=7, ncol=2)
    return _save(fig, path)

