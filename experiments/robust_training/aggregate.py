"""Robust training objectives compared: one table of each method's clean accuracy, its accuracy under FGSM,
PGD-20 and AutoAttack at the training eps, and its training time per epoch, from the runs that
``make paper-robust-training`` leaves in ``<out>``:

    <out>/train/<method>/                 python -m advmed.train experiment=robust_training/<method>
    <out>/{fgsm,pgd,autoattack}/<method>/ python -m advmed.evaluate experiment=robust_training/base method=<method>
                                          ckpt_path=<out>/train/<method>/checkpoints/best.ckpt attack=...

    python experiments/robust_training/aggregate.py outputs/paper_robust_training

Writes ``<out>/table.csv`` (columns ``method,clean_acc,fgsm_acc,pgd_acc,autoattack_acc,train_s_per_epoch``,
accuracies in [0, 1], one row per method trained, in the order ``standard, mixed_fgsm, pgd_at, trades, mart,
fgsm_rs``), ``table.md`` (the same with each method's time as a multiple of the standard model's, which
method wins at which cost, the attacks exactly as they ran, AutoAttack's accuracy after each of its attacks,
and the provenance) and ``clean_vs_robust.png`` (accuracies per method; clean against AutoAttack accuracy).

``clean_acc`` is the accuracy on the evaluated test tiles (every evaluation scores the same tiles; a
disagreement is reported). ``train_s_per_epoch`` is the wall time of the fit loop divided by the epochs it
ran: Lightning's ``Timer`` callback (``callbacks.timer`` of conf/experiment/robust_training/base.yaml) keeps
it in every checkpoint, and ``last.ckpt`` holds it at the end of the last epoch. It counts everything the fit
loop does in an epoch: the training steps with their inner maximisations, the clean validation pass (the
same for every method), checkpoint writes, and for ``fgsm_rs`` the catastrophic-overfitting guard's PGD
check (conf/objective/fgsm_rs.yaml switches it on). Data rendering, the sanity check and the test are
not counted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import yaml
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from advmed.utils.files import atomic_write, file_sha256, write_text  # noqa: E402
from advmed.utils.loggers import markdown_table  # noqa: E402
from advmed.utils.tables import Table, write_csv  # noqa: E402

METHODS = ("standard", "mixed_fgsm", "pgd_at", "trades", "mart", "fgsm_rs")
SINGLE_STEP = ("mixed_fgsm", "fgsm_rs")
# evaluation folder -> table column, in the table's order
ATTACKS = {"fgsm": "fgsm_acc", "pgd": "pgd_acc", "autoattack": "autoattack_acc"}
COLUMNS = ["method", "clean_acc", *ATTACKS.values(), "train_s_per_epoch"]
AUTOATTACK_STAGES = ("apgd_ce", "apgd_dlr", "apgd_t", "fab", "fab_t", "square")
LABELS = {"clean_acc": "clean", "fgsm_acc": "FGSM", "pgd_acc": "PGD-20", "autoattack_acc": "AutoAttack"}


def methods_trained(out: Path) -> list[str]:
    """The methods with a training run under ``<out>/train/`` (a folder holding ``.hydra/``), the six
    known ones first in their order, then any other in name order."""
    train = out / "train"
    found = sorted(p.name for p in train.iterdir() if (p / ".hydra").is_dir()) if train.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no training runs under '{train}' (<method>/.hydra/): run "
                                f"python -m advmed.train -m experiment=robust_training/<method>,... "
                                f"hydra.sweep.dir={train} 'hydra.sweep.subdir=${{method}}' first (make paper-robust-training)")
    return [m for m in METHODS if m in found] + [m for m in found if m not in METHODS]


def read_evaluation(out: Path, attack: str, method: str) -> dict:
    """``<out>/<attack>/<method>/metrics.json`` (``metrics``, ``attack``, ``notes``) and the attack as the
    report names it."""
    folder = out / attack / method
    path = folder / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no {attack} evaluation of '{method}': {path} is missing (the evaluation failed or did not run). "
            f"Run python -m advmed.evaluate experiment=robust_training/base method={method} "
            f"ckpt_path={out}/train/{method}/checkpoints/best.ckpt attack={attack} hydra.run.dir={folder}, "
            f"or make paper-robust-training")
    record = json.loads(path.read_text())
    record["description"] = _report_attack(folder / "report.md") or attack
    record["test_images"] = _test_images(folder / ".hydra" / "config.yaml")
    return record


def _report_attack(report: Path) -> str | None:
    """The attack as the evaluation's report names it: ``AutoAttack(eps=8/255, norm=Linf, ...)``."""
    if not report.is_file():
        return None
    for line in report.read_text().splitlines():
        if line.startswith("- attack: "):
            return line.removeprefix("- attack: ").strip("` ")
    return None


def _test_images(config: Path) -> int | None:
    """How many test tiles a synthetic-data evaluation scored (per class x classes), when its config says."""
    if not config.is_file():
        return None
    data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    per_class, classes = data.get("test_per_class"), data.get("num_classes")
    return per_class * classes if isinstance(per_class, int) and isinstance(classes, int) else None


def train_seconds_per_epoch(run: Path) -> tuple[float, int]:
    """The fit loop's wall time per epoch and the epochs it ran, from the ``Timer`` state in
    ``<run>/checkpoints/last.ckpt``."""
    path = run / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the training run '{run}' did not finish an epoch")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    timers = [state for key, state in (checkpoint.get("callbacks") or {}).items() if str(key).startswith("Timer")]
    if not timers:
        raise ValueError(f"{path} holds no Timer state: train with experiment=robust_training/<method> "
                         f"(its callbacks.timer records the fit's wall time) to measure train_s_per_epoch")
    epochs = int(checkpoint["epoch"]) + 1
    return float(timers[0]["time_elapsed"]["train"]) / epochs, epochs


def collect(out: Path) -> tuple[Table, dict]:
    """The table, and what the markdown says beside it (evaluations, AutoAttack stages, provenance)."""
    rows, details = [], {"attacks": {}, "stages": {}, "runs": {}, "mismatch": [], "test_images": set()}
    for method in methods_trained(out):
        run = out / "train" / method
        evaluations = {attack: read_evaluation(out, attack, method) for attack in ATTACKS}
        clean = {attack: float(e["metrics"]["test/acc"]) for attack, e in evaluations.items()}
        if max(clean.values()) - min(clean.values()) > 1e-6:
            details["mismatch"].append(f"{method}: " + ", ".join(f"{a} {v:.4f}" for a, v in clean.items()))
        seconds, epochs = train_seconds_per_epoch(run)
        rows.append([method, clean["fgsm"], *(float(evaluations[a]["metrics"]["test/adv_acc"]) for a in ATTACKS), seconds])
        for attack, e in evaluations.items():
            details["attacks"].setdefault(attack, set()).add(e["description"])
            details["test_images"].add(e["test_images"])
        aa = evaluations["autoattack"]
        details["stages"][method] = {s: aa["metrics"].get(f"test/acc_after_{s}") for s in AUTOATTACK_STAGES}
        details["notes"] = sorted(set(details.get("notes", [])) | set(aa.get("notes") or []))
        ckpt = run / "checkpoints" / "best.ckpt"
        details["runs"][method] = {"run": str(run), "epochs": epochs, "seed": _seed(run),
                                   "best.ckpt sha256": file_sha256(ckpt)[:16] if ckpt.is_file() else "missing"}
    return Table(COLUMNS, rows), details


def _seed(run: Path):
    config = run / ".hydra" / "config.yaml"
    return (yaml.safe_load(config.read_text()) or {}).get("seed") if config.is_file() else None


def verdicts(table: Table) -> list[str]:
    """Which method wins at which cost, in sentences."""
    rows = [dict(zip(table.columns, row)) for row in table.rows]
    standard = next((r for r in rows if r["method"] == "standard"), None)
    robust = [r for r in rows if r["method"] != "standard"]
    if not robust:
        return []

    def cost(r: dict) -> str:
        ratio = f", {r['train_s_per_epoch'] / standard['train_s_per_epoch']:.1f}x the standard model's" if standard else ""
        return f"{r['train_s_per_epoch']:.1f} s per epoch{ratio}"

    best = max(robust, key=lambda r: r["autoattack_acc"])
    tied = [r["method"] for r in robust if r is not best and r["autoattack_acc"] == best["autoattack_acc"]]
    lines = [f"Highest AutoAttack accuracy: **{best['method']}**, {best['autoattack_acc']:.3f} "
             f"(clean {best['clean_acc']:.3f}), at {cost(best)}" + (f"; tied with {', '.join(tied)}." if tied else ".")]
    single = [r for r in robust if r["method"] in SINGLE_STEP]
    if single and best["method"] not in SINGLE_STEP:
        s = max(single, key=lambda r: r["autoattack_acc"])
        lines.append(f"Best single-step method: **{s['method']}**, AutoAttack {s['autoattack_acc']:.3f} "
                     f"(clean {s['clean_acc']:.3f}), at {cost(s)}.")
    cleanest = max(robust, key=lambda r: r["clean_acc"])
    if cleanest is not best:
        lines.append(f"Highest clean accuracy of the robust methods: **{cleanest['method']}**, {cleanest['clean_acc']:.3f} "
                     f"(AutoAttack {cleanest['autoattack_acc']:.3f}).")
    if standard:
        below = [r["method"] for r in robust if not r["autoattack_acc"] > standard["autoattack_acc"]]
        lines.append(f"Standard training: clean {standard['clean_acc']:.3f}, AutoAttack {standard['autoattack_acc']:.3f}; "
                     + (f"not above it under AutoAttack: {', '.join(below)}." if below
                        else "every robust method is above it under AutoAttack."))
    return lines


def markdown(table: Table, details: dict) -> str:
    standard = next((r for r in table.rows if r[0] == "standard"), None)
    columns = [*COLUMNS, "time vs standard"]
    rows = [[r[0], *(f"{v:.3f}" for v in r[1:5]), f"{r[5]:.1f}",
             f"{r[5] / standard[5]:.1f}x" if standard else ""] for r in table.rows]
    images = sorted(n for n in details["test_images"] if n is not None)
    lines = ["# Robust training objectives: accuracy under attack and training cost", "",
             f"Accuracy on the same {images[0] if len(images) == 1 else 'evaluated'} test tiles, clean and under each "
             f"attack at the training eps; time: the fit loop's wall time per epoch.", "",
             markdown_table(columns, rows).rstrip("\n"), "", *verdicts(table), "", "## Evaluations", ""]
    for attack, column in ATTACKS.items():
        lines.append(f"- `{column}`: " + "; ".join(f"`{d}`" for d in sorted(details["attacks"].get(attack, ()))))
    if details["mismatch"]:
        lines += ["", "Clean accuracy differs between the evaluations of a method (different test tiles?): "
                  + "; ".join(details["mismatch"]) + ". The table's `clean_acc` is the FGSM evaluation's."]
    lines += ["", "## AutoAttack after each of its attacks", ""]
    stages = [s for s in AUTOATTACK_STAGES if any(v.get(s) is not None for v in details["stages"].values())]
    lines.append(markdown_table(["method", *stages], [
        [m, *(_cell(details["stages"][m].get(s)) for s in stages)] for m in details["stages"]]).rstrip("\n"))
    for note in details.get("notes", []):
        lines.append(f"\n- {note}")
    lines += ["", "## Provenance", ""]
    lines.append(markdown_table(["method", "run", "epochs", "seed", "best.ckpt sha256"], [
        [m, f"`{r['run']}`", r["epochs"], r["seed"], r["best.ckpt sha256"]] for m, r in details["runs"].items()]).rstrip("\n"))
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.3f}"


def plot(table: Table, path: Path, attacks: dict[str, set[str]] | None = None) -> Path:
    """Accuracies per method (grouped bars), and clean against AutoAttack accuracy with each method's cost;
    ``attacks`` (evaluation -> the attacks as they ran) are named under the panels."""
    rows = [dict(zip(table.columns, row)) for row in table.rows]
    fig = Figure(figsize=(11, 4.3))
    bars, scatter = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    columns = list(LABELS)
    width = 0.8 / len(columns)
    for i, column in enumerate(columns):
        bars.bar([j + (i - (len(columns) - 1) / 2) * width for j in range(len(rows))],
                 [100 * r[column] for r in rows], width, label=LABELS[column])
    bars.set_xticks(range(len(rows)), [r["method"] for r in rows], fontsize=8)
    bars.set_ylabel("accuracy (%)")
    bars.set_ylim(0, 100)
    bars.grid(axis="y", alpha=0.3)
    bars.legend(fontsize=8, ncols=4, loc="upper right")
    bars.set_title("Accuracy per training objective")
    for r in rows:
        scatter.scatter(100 * r["clean_acc"], 100 * r["autoattack_acc"], s=30)
        scatter.annotate(f"{r['method']} ({r['train_s_per_epoch']:.0f} s/ep)", (100 * r["clean_acc"], 100 * r["autoattack_acc"]),
                         textcoords="offset points", xytext=(4, 4), fontsize=7)
    scatter.set_xlabel("clean accuracy (%)")
    scatter.set_ylabel("AutoAttack accuracy (%)")
    scatter.set_xlim(0, 100)
    scatter.set_ylim(0, 100)
    scatter.grid(alpha=0.3)
    scatter.set_title("Clean against robust accuracy")
    footer = "; ".join(d for attack in ATTACKS for d in sorted((attacks or {}).get(attack, ())))
    fig.tight_layout(rect=(0, 0.05 if footer else 0, 1, 1))
    if footer:
        fig.text(0.5, 0.01, footer, ha="center", va="bottom", fontsize=7)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    return path


def aggregate(out: str | Path) -> list[Path]:
    """Write ``table.csv``, ``table.md`` and ``clean_vs_robust.png`` into ``out``; returns their paths."""
    out = Path(out)
    table, details = collect(out)
    return [write_csv(out / "table.csv", table), write_text(out / "table.md", markdown(table, details)),
            plot(table, out / "clean_vs_robust.png", details["attacks"])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the pipeline's folder (holds train/, fgsm/, pgd/, autoattack/)")
    args = parser.parse_args(argv)
    for path in aggregate(args.out):
        print(f"wrote {path}")
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
