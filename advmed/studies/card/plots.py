"""The card's figures: the metric against severity per corruption (and stain shift), against eps
per attack, and a one-figure summary. matplotlib's Figure API, as the other study figures; each
PNG written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from advmed.studies.card.summary import primary_metric
from advmed.utils.files import atomic_write


def eps_label(eps: float) -> str:
    """``0.0313725`` -> ``8/255``: the budgets of the card's default list read as grey levels; others as numbers."""
    levels = eps * 255
    return f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-4 and levels >= 0.5 else f"{eps:.4g}"


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    return path


def _lines(card: dict[str, Any], kind: str, x_key: str, metric: str) -> dict[str, tuple[list[float], list[float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for c in card["conditions"]:
        if c["kind"] == kind and c["metrics"].get(metric) is not None:
            series.setdefault(c["name"], []).append((c[x_key], c["metrics"][metric]))
    return {name: ([x for x, _ in sorted(pts)], [y for _, y in sorted(pts)]) for name, pts in series.items()}


def _plot_against(card: dict[str, Any], kinds: tuple[str, ...], x_key: str, xlabel: str, path: Path) -> Path | None:
    """One panel per metric (accuracy; Dice and IoU for segmentation), one line per shift or attack,
    the clean value as a dashed line."""
    task = card["model"]["task"]
    metrics = ["acc"] if task == "classification" else ["dice", "iou"]
    if not any(c["kind"] in kinds for c in card["conditions"]):
        return None
    fig = Figure(figsize=(5.2 * len(metrics), 4.0))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        series = {f"{name}" + (f" ({kind})" if len(kinds) > 1 and kind != kinds[0] else ""): xy
                  for kind in kinds for name, xy in _lines(card, kind, x_key, metric).items()}
        colours = colormaps["tab20"]([i % 20 / 20 for i in range(len(series))])
        for colour, (label, (xs, ys)) in zip(colours, series.items()):
            ax.plot(xs, ys, marker="o", markersize=3, color=colour, label=label)
        clean = (card["summary"].get("clean") or {}).get(metric)
        if clean is not None:
            ax.axhline(clean, color="black", linestyle="--", linewidth=1, label="clean")
        if x_key == "severity":
            ax.set_xticks([1, 2, 3, 4, 5])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"{card['model']['module']} on {card['data']['name']}", fontsize=9)
    return _save(fig, path)


def plot_summary(card: dict[str, Any], path: Path) -> Path:
    """One horizontal bar per headline figure: clean, mean under corruption, worst corruption,
    stain mean, and the worst-case robust value at each eps."""
    s, metric = card["summary"], primary_metric(card["model"]["task"])
    bars: list[tuple[str, float]] = []
    if s.get("clean"):
        bars.append(("clean", s["clean"][metric]))
    if "corruption_mean" in s:
        bars.append(("mean under corruption", s["corruption_mean"][metric]))
        bars.append((f"worst corruption ({s['worst_corruption']['name']})", s["worst_corruption"][metric]))
    if "stain_mean" in s:
        bars.append(("mean under stain shift", s["stain_mean"][metric]))
    for eps, value in (s.get("robust_worst") or {}).items():
        bars.append((f"robust, eps {eps_label(float(eps))}", value))
    fig = Figure(figsize=(6.4, 0.45 * len(bars) + 1.2))
    ax = fig.subplots()
    labels, values = [b[0] for b in bars][::-1], [b[1] for b in bars][::-1]
    ax.barh(range(len(bars)), values, color=colormaps["viridis"]([0.25 + 0.5 * v for v in values]))
    ax.set_yticks(range(len(bars)), labels, fontsize=8)
    for i, v in enumerate(values):
        ax.text(min(v + 0.01, 0.9), i, f"{v:.3f}", va="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel(metric)
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(f"Robustness card: {card['model']['module']} on {card['data']['name']}", fontsize=9)
    return _save(fig, path)


def plot_card(card: dict[str, Any], out: Path) -> list[Path]:
    """Write the card's PNGs into ``out``; return the paths written."""
    written = [
        _plot_against(card, ("corruption", "stain"), "severity", "severity", out / "card_severity.png"),
        _plot_against(card, ("attack",), "eps", "eps", out / "card_eps.png"),
        plot_summary(card, out / "card_summary.png"),
    ]
    return [p for p in written if p is not None]
