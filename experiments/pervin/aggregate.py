"""Pervin et al. 2021: Table 1 (IoU over epochs) and Table 2 (IoU under FGSM vs eps), as CSV +
markdown + PNG, from the run directories that ``make paper-pervin`` writes:

    <paper dir>/<model>/history.csv                    per-epoch val/iou of each training run
    <paper dir>/<model>/metrics.json                   its final test metrics
    <paper dir>/eps_sweep/<model>/<job>/metrics.json   advmed.evaluate -m attack.eps=... jobs

with ``<model>`` in ``unet``, ``unet_fgsm``, ``unet_invfgsm``. Writes
``table1_iou_over_epochs.{csv,md,png}`` (columns ``model,epoch,iou``),
``table2_iou_vs_eps.{csv,md,png}`` (columns ``model,eps,iou``) and ``summary.md``:

    python experiments/pervin/aggregate.py outputs/paper_pervin
    python experiments/pervin/aggregate.py outputs/paper_pervin --epochs 0,10,20,29

IoU is the mean over the organs (background excluded) with the split's pixels pooled per organ
(``advmed.metrics.segmentation``); Table 1 uses the validation split, Table 2 the test split.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from matplotlib.figure import Figure

from advmed.studies.sweeps import find_jobs, job_override, sort_key
from advmed.utils.files import atomic_write, write_text
from advmed.utils.loggers import markdown_table
from advmed.utils.tables import Table, write_csv

MODELS = ("unet", "unet_fgsm", "unet_invfgsm")
LABELS = {"unet": "UNet", "unet_fgsm": "UNet + FGSM", "unet_invfgsm": "UNet + Inverse-FGSM"}


def read_history(run_dir: Path, metric: str = "val/iou") -> list[tuple[int, float]]:
    """``(epoch, value)`` of ``metric`` per epoch from a run's ``history.csv``."""
    path = run_dir / "history.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train the model first (make paper-pervin runs every step)")
    with path.open(newline="") as f:
        rows = [(int(row["epoch"]), float(row[metric])) for row in csv.DictReader(f) if row.get(metric)]
    if not rows:
        raise ValueError(f"{path} has no {metric} column values: was the run validated each epoch?")
    return rows


def read_sweep(sweep_dir: Path, metric: str = "test/adv_iou") -> list[tuple[float, float]]:
    """``(eps, value)`` per finished job of an eps sweep, in eps order."""
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no Hydra multirun jobs under {sweep_dir}: run the eps sweep first")
    found = []
    for job in sorted(jobs, key=lambda j: sort_key(job_override(j, "attack.eps"))):
        path = job / "metrics.json"
        if not path.is_file():
            print(f"skipping {job}: no metrics.json (failed or still running)", file=sys.stderr)
            continue
        found.append((float(job_override(job, "attack.eps")), float(json.loads(path.read_text())["metrics"][metric])))
    return found


def _plot(path: Path, series: dict[str, list[tuple[float, float]]], xlabel: str, title: str) -> Path:
    fig = Figure(figsize=(5.0, 3.4))
    ax = fig.subplots()
    for model, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=LABELS.get(model, model))
    ax.set(xlabel=xlabel, ylabel="mean IoU (organs)", title=title, ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def _pick(points: list[tuple[float, float]], wanted: list[int] | None) -> list[tuple[float, float]]:
    if not wanted:
        return points
    by_epoch = dict(points)
    return [(e, by_epoch[e]) for e in wanted if e in by_epoch]


def aggregate(paper_dir: str | Path, epochs: list[int] | None = None, output_dir: str | Path | None = None) -> list[Path]:
    """Write both tables and the summary; returns the written paths."""
    paper_dir = Path(paper_dir)
    out = Path(output_dir) if output_dir else paper_dir
    models = [m for m in MODELS if (paper_dir / m).is_dir()]
    if not models:
        raise FileNotFoundError(f"none of the runs {MODELS} is under {paper_dir}")
    history = {m: read_history(paper_dir / m) for m in models}
    sweeps = {m: read_sweep(paper_dir / "eps_sweep" / m) for m in models if (paper_dir / "eps_sweep" / m).is_dir()}

    t1 = Table(["model", "epoch", "iou"], [[m, int(e), v] for m in models for e, v in history[m]])
    t2 = Table(["model", "eps", "iou"], [[m, eps, v] for m, points in sweeps.items() for eps, v in points])
    written = [write_csv(out / "table1_iou_over_epochs.csv", t1), write_csv(out / "table2_iou_vs_eps.csv", t2)]

    shown = sorted({int(e) for m in models for e, _ in _pick(history[m], epochs)})
    rows1 = [[LABELS[m], *(_fmt(dict(history[m]).get(e)) for e in shown)] for m in models]
    written.append(write_text(out / "table1_iou_over_epochs.md", markdown_table(["model", *(f"epoch {e}" for e in shown)], rows1)))
    eps_values = sorted({eps for points in sweeps.values() for eps, _ in points})
    rows2 = [[LABELS[m], *(_fmt(dict(points).get(eps)) for eps in eps_values)] for m, points in sweeps.items()]
    written.append(write_text(out / "table2_iou_vs_eps.md", markdown_table(["model", *(f"eps {e:g}" for e in eps_values)], rows2)))
    written.append(_plot(out / "table1_iou_over_epochs.png", {m: _pick(history[m], None) for m in models}, "epoch", "Table 1: validation IoU over epochs"))
    if sweeps:
        written.append(_plot(out / "table2_iou_vs_eps.png", sweeps, "FGSM eps", "Table 2: test IoU under FGSM"))
    written.append(write_text(out / "summary.md", _summary(paper_dir, models, rows1, rows2, shown, eps_values)))
    return written


def _fmt(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def _summary(paper_dir: Path, models: list[str], rows1, rows2, shown, eps_values) -> str:
    lines = ["# Pervin et al. 2021 on this run", "", "## Table 1: validation IoU over epochs", "",
             markdown_table(["model", *(f"epoch {e}" for e in shown)], rows1), ""]
    if rows2:
        lines += ["## Table 2: test IoU under FGSM", "", markdown_table(["model", *(f"eps {e:g}" for e in eps_values)], rows2), ""]
    final = []
    for m in models:
        path = paper_dir / m / "metrics.json"
        if path.is_file():
            metrics = json.loads(path.read_text())["metrics"]
            final.append([LABELS[m], *(_fmt(metrics.get(k)) for k in ("test/dice", "test/iou", "test/adv_dice", "test/adv_iou"))])
    if final:
        lines += ["## Final test scores (best checkpoint; adversarial = the run's test attack)", "",
                  markdown_table(["model", "dice", "iou", "adv dice", "adv iou"], final), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paper_dir", help="folder holding unet/, unet_fgsm/, unet_invfgsm/ and eps_sweep/")
    parser.add_argument("--epochs", default="", help="comma-separated epochs for the markdown Table 1 (default: all)")
    parser.add_argument("--output-dir", default=None, help="where to write the tables (default: paper_dir)")
    args = parser.parse_args(argv)
    epochs = [int(e) for e in args.epochs.split(",") if e.strip()] or None
    for path in aggregate(args.paper_dir, epochs, args.output_dir):
        print(f"wrote {path}")
    print((Path(args.output_dir or args.paper_dir) / "summary.md").read_text())


if __name__ == "__main__":
    main()
