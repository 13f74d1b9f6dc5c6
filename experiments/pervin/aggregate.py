"""Pervin et al. 2021: Table 1 (IoU over epochs) and Table 2 (IoU under FGSM, and under SEA, vs eps),
as CSV + markdown + PNG, from the run directories that ``make paper-pervin`` writes:

    <paper dir>/<model>/history.csv                        per-epoch val/iou of each training run
    <paper dir>/<model>/metrics.json                       its final test metrics
    <paper dir>/eps_sweep/<model>/<job>/metrics.json       advmed.evaluate -m attack=fgsm attack.eps=... jobs
    <paper dir>/eps_sweep_sea/<model>/<job>/metrics.json   advmed.evaluate -m attack=sea attack.eps=... jobs

with ``<model>`` in ``unet``, ``unet_fgsm``, ``unet_invfgsm``. Writes
``table1_iou_over_epochs.{csv,md,png}`` (columns ``model,epoch,iou``),
``table2_iou_vs_eps.{csv,md,png}`` (columns ``model,eps,iou,sea_iou``: ``iou`` under FGSM, the paper's
attack, as before; ``sea_iou`` under SEA, the segmentation ensemble DESIGN.md's contract 11 judges a
defence by; a cell is empty where that attack was not run at that eps) and ``summary.md``:

    python experiments/pervin/aggregate.py outputs/paper_pervin
    python experiments/pervin/aggregate.py outputs/paper_pervin --epochs 0,10,20,29

A folder from a run made before the SEA sweep (no ``eps_sweep_sea/``) still aggregates: ``sea_iou`` is
empty, and a message says so. IoU is the mean over the organs (background excluded) with the split's
pixels pooled per organ (``advmed.metrics.segmentation``); Table 1 uses the validation split, Table 2
the test split.
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
# Table 2's attacks: (sweep folder, CSV column, label); FGSM's column keeps the name ``iou`` it had
# before the SEA sweep, so that readers of older tables keep working.
ATTACKS = (("eps_sweep", "iou", "FGSM"), ("eps_sweep_sea", "sea_iou", "SEA"))
SELECT = {"pixel_acc": "the run with the lowest pixel accuracy", "miou": "greedy choice lowering the batch's mIoU"}


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


def _plot(path: Path, series: dict[str, list[tuple[float, float]]], xlabel: str, title: str,
          dashed: dict[str, list[tuple[float, float]]] | None = None) -> Path:
    """One line per model; ``dashed``: a second series per model (SEA), dashed in the model's colour."""
    fig = Figure(figsize=(5.0, 3.4))
    ax = fig.subplots()
    for model in dict.fromkeys([*series, *(dashed or {})]):
        color = None
        for points, style, suffix in ((series.get(model), "-", " (FGSM)"), ((dashed or {}).get(model), "--", " (SEA)")):
            if not points:
                continue
            label = LABELS.get(model, model) + (suffix if dashed else "")
            (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", markersize=3,
                              label=label, color=color)
            color = line.get_color()
    ax.set(xlabel=xlabel, ylabel="mean IoU (organs)", title=title, ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7 if dashed else 8)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def _pick(points: list[tuple[float, float]], wanted: list[int] | None) -> list[tuple[float, float]]:
    if not wanted:
        return points
    by_epoch = dict(points)
    return [(e, by_epoch[e]) for e in wanted if e in by_epoch]


def read_attack(sweep_dir: Path) -> tuple[dict, list[str]]:
    """The attack config of a sweep's first finished job and the notes of all its jobs (deduplicated), from
    their ``metrics.json``: what Table 2 names for each attack (DESIGN.md, contract 11)."""
    config, notes = {}, {}
    for job in find_jobs(sweep_dir):
        path = job / "metrics.json"
        if path.is_file():
            record = json.loads(path.read_text())
            config = config or record.get("attack") or {}
            notes.update(dict.fromkeys(record.get("notes") or []))
    return config, list(notes)


def describe(label: str, config: dict) -> str:
    """``SEA: L-inf, 300 iterations per loss (mask-ce-bal, mask-ce, js), ...`` from an attack config."""
    if label == "SEA":
        losses = ", ".join(config.get("losses") or [])
        schedule = config.get("schedule") or []
        prr = (" with progressive radius reduction (" + ", ".join(f"{f:g} of the steps at {r:g} eps" for f, r in schedule)
               + ")") if len(schedule) > 1 else ""
        return (f"SEA: L-inf APGD, {config.get('steps', '?')} iterations per loss ({losses}){prr}, one run per loss "
                f"(no restarts), per image the worst case ({SELECT.get(config.get('select'), config.get('select'))}); "
                f"seed {config.get('seed', '?')}")
    if label == "FGSM":
        return "FGSM: one signed-gradient step of size eps (L-inf), no random start, no restarts"
    return f"{label}: {config}"


def aggregate(paper_dir: str | Path, epochs: list[int] | None = None, output_dir: str | Path | None = None) -> list[Path]:
    """Write both tables and the summary; returns the written paths."""
    paper_dir = Path(paper_dir)
    out = Path(output_dir) if output_dir else paper_dir
    models = [m for m in MODELS if (paper_dir / m).is_dir()]
    if not models:
        raise FileNotFoundError(f"none of the runs {MODELS} is under {paper_dir}")
    history = {m: read_history(paper_dir / m) for m in models}
    # attack label -> model -> [(eps, iou)]
    sweeps = {label: {m: read_sweep(paper_dir / folder / m) for m in models if (paper_dir / folder / m).is_dir()}
              for folder, _, label in ATTACKS}
    attacks = {label: read_attack(paper_dir / folder) for folder, _, label in ATTACKS if sweeps[label]}
    without_sea = [m for m in sweeps["FGSM"] if m not in sweeps["SEA"]]
    if without_sea:
        print(f"{paper_dir}: no SEA sweep for {', '.join(without_sea)} (eps_sweep_sea/<model>; a run from before make "
              "paper-pervin had it?): Table 2's sea_iou is left empty there. To fill it, per model: python -m advmed.evaluate -m "
              f"experiment=pervin/unet <data> ckpt_path={paper_dir}/<model>/checkpoints/best.ckpt attack=sea "
              f"attack.eps=<eps list> hydra.sweep.dir={paper_dir}/eps_sweep_sea/<model>", file=sys.stderr)

    t1 = Table(["model", "epoch", "iou"], [[m, int(e), v] for m in models for e, v in history[m]])
    swept = [m for m in models if any(m in by_model for by_model in sweeps.values())]
    values = {(label, m, eps): v for label, by_model in sweeps.items() for m, points in by_model.items() for eps, v in points}
    rows = []
    for m in swept:
        for eps in sorted({eps for label, mm, eps in values if mm == m}):
            rows.append([m, eps, *(values.get((label, m, eps)) for _, _, label in ATTACKS)])
    t2 = Table(["model", "eps", *(column for _, column, _ in ATTACKS)], rows)
    written = [write_csv(out / "table1_iou_over_epochs.csv", t1), write_csv(out / "table2_iou_vs_eps.csv", t2)]

    shown = sorted({int(e) for m in models for e, _ in _pick(history[m], epochs)})
    rows1 = [[LABELS[m], *(_fmt(dict(history[m]).get(e)) for e in shown)] for m in models]
    written.append(write_text(out / "table1_iou_over_epochs.md", markdown_table(["model", *(f"epoch {e}" for e in shown)], rows1)))
    eps_values = sorted({eps for _, _, eps in values})
    rows2 = [[LABELS[m], label, *(_fmt(values.get((label, m, eps))) for eps in eps_values)]
             for m in swept for label in sweeps if m in sweeps[label]]
    columns2 = ["model", "attack", *(f"eps {e:g}" for e in eps_values)]
    written.append(write_text(out / "table2_iou_vs_eps.md", markdown_table(columns2, rows2)))
    written.append(_plot(out / "table1_iou_over_epochs.png", {m: _pick(history[m], None) for m in models}, "epoch", "Table 1: validation IoU over epochs"))
    if values:
        sea = sweeps["SEA"] or None
        title = "Table 2: test IoU under FGSM" + (" (solid) and SEA (dashed)" if sea else "")
        written.append(_plot(out / "table2_iou_vs_eps.png", sweeps["FGSM"], "eps (L-inf)", title, dashed=sea))
    described = [describe(label, config) for label, (config, _) in attacks.items()]
    notes = [f"{label}: {note}" for label, (_, found) in attacks.items() for note in found]
    written.append(write_text(out / "summary.md", _summary(paper_dir, models, rows1, (columns2, rows2), shown,
                                                           described, notes)))
    return written


def _fmt(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def _summary(paper_dir: Path, models: list[str], rows1, table2, shown, described: list[str], notes: list[str]) -> str:
    lines = ["# Pervin et al. 2021 on this run", "", "## Table 1: validation IoU over epochs", "",
             markdown_table(["model", *(f"epoch {e}" for e in shown)], rows1), ""]
    columns2, rows2 = table2
    if rows2:
        attacks = sorted({row[1] for row in rows2}, key=["FGSM", "SEA"].index)
        lines += [f"## Table 2: test IoU under {' and '.join(attacks)}", "", markdown_table(columns2, rows2), "",
                  *(f"- {text}" for text in described), ""]
        if "SEA" not in attacks:
            lines += ["No SEA sweep in this folder (eps_sweep_sea/): the strong evaluation of the three models is "
                      "missing.", ""]
        if notes:
            lines += ["Notes on the attacks (from the jobs' report.md):", "", *(f"- {note}" for note in notes), ""]
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
    parser.add_argument("paper_dir", help="folder holding unet/, unet_fgsm/, unet_invfgsm/, eps_sweep/ and eps_sweep_sea/")
    parser.add_argument("--epochs", default="", help="comma-separated epochs for the markdown Table 1 (default: all)")
    parser.add_argument("--output-dir", default=None, help="where to write the tables (default: paper_dir)")
    args = parser.parse_args(argv)
    epochs = [int(e) for e in args.epochs.split(",") if e.strip()] or None
    for path in aggregate(args.paper_dir, epochs, args.output_dir):
        print(f"wrote {path}")
    print((Path(args.output_dir or args.paper_dir) / "summary.md").read_text())


if __name__ == "__main__":
    main()
