"""report.md / metrics.json of a clean-vs-attacked evaluation, and the table printed by `make demo`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from advmed.utils.files import write_json, write_text
from advmed.utils.loggers import markdown_table

# (metric key, row label) in the order the report lists them.
ROBUSTNESS_METRICS = [
    ("test/acc", "clean accuracy"),
    ("test/adv_acc", "adversarial accuracy"),
    ("test/attack_success_rate", "attack success rate (correct -> fooled; targeted: -> target)"),
    ("test/dice", "clean mean Dice (organs)"),
    ("test/adv_dice", "adversarial mean Dice"),
    ("test/dice_drop", "Dice drop (clean - adversarial)"),
    ("test/iou", "clean mean IoU (organs)"),
    ("test/adv_iou", "adversarial mean IoU"),
    ("test/pixel_acc", "clean pixel accuracy"),
    ("test/adv_pixel_acc", "adversarial pixel accuracy"),
    ("test/linf", "mean L-inf of perturbation"),
    ("test/l2", "mean L2 of perturbation"),
    ("test/area_fraction", "mean area fraction covered (patch attacks)"),
    ("test/steps", "mean attack steps per image"),
]


# Per-class segmentation scores, ``test/<score>_<class>``: one table row per class instead.
PER_CLASS_SCORES = ("dice", "adv_dice", "dice_drop", "iou", "adv_iou")


def per_class_keys(metrics: dict[str, float]) -> dict[str, dict[str, str]]:
    """``{class: {score: metric key}}`` of the per-class segmentation scores in ``metrics``."""
    classes = [k[len("test/dice_"):] for k in metrics if k.startswith("test/dice_") and not k.startswith("test/dice_drop")]
    return {c: {s: f"test/{s}_{c}" for s in PER_CLASS_SCORES if f"test/{s}_{c}" in metrics} for c in sorted(classes)}


def robustness_rows(metrics: dict[str, float]) -> list[list[Any]]:
    """``[label, value]`` rows: the metrics above in their order, then any other ``test/*`` metric
    a module reports (under its own key), so a new model family needs no change here. Per-class
    segmentation scores are left to :func:`per_class_rows`."""
    known = dict(ROBUSTNESS_METRICS)
    known.update({key: "" for scores in per_class_keys(metrics).values() for key in scores.values()})
    rows = [[label, float(metrics[key])] for key, label in ROBUSTNESS_METRICS if key in metrics]
    rows += [[key, float(metrics[key])] for key in sorted(metrics) if key.startswith("test/") and key not in known]
    return rows


def per_class_rows(metrics: dict[str, float]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the per-class table (class | dice | adv_dice | ...); no rows when none."""
    table = per_class_keys(metrics)
    scores = [s for s in PER_CLASS_SCORES if any(s in keys for keys in table.values())]
    rows = [[c, *(float(metrics[keys[s]]) if s in keys else "" for s in scores)] for c, keys in table.items()]
    return ["class", *scores], rows


# What a reader needs to judge the attack behind a figure (DESIGN.md, contract 11): the budget and its norm, the
# iterations / queries / restarts, the loss(es), the ensemble's version and members, EOT draws. The rest stays in
# metrics.json.
_ATTACK_KEYS = ("eps", "norm", "version", "attacks", "alpha", "steps", "n_queries", "n_restarts", "binary_search_steps",
                "kappa", "multi_targeted", "eot_iter", "random_start", "targeted", "target_class", "loss", "losses",
                "loss_classes", "early_stop", "area_fraction", "num_blobs", "placement", "patch_path", "ckpt_path",
                "fields", "sample")
# Settings left at the value that means "nothing special" are not shown: the description stays short.
_UNREMARKABLE = {"n_restarts": 1, "eot_iter": 1, "kappa": 0.0}


def describe_attack(attack_cfg: dict | None) -> str:
    """``PGD(eps=0.03, steps=10, random_start=True)`` from an attack config; ``none`` for no attack."""
    if not attack_cfg:
        return "none"
    name = str(attack_cfg.get("_target_", "?")).rsplit(".", 1)[-1]
    shown = {k: attack_cfg[k] for k in _ATTACK_KEYS
             if attack_cfg.get(k) not in (None, False) and (k not in _UNREMARKABLE or attack_cfg[k] != _UNREMARKABLE[k])}
    if "patch_path" in shown:  # a saved patch brings its own mask: the optimisation settings are unused
        shown = {k: v for k, v in shown.items() if k in ("patch_path", "targeted", "target_class")}
    if shown.get("loss") == "ce":
        del shown["loss"]
    return f"{name}({', '.join(f'{k}={v}' for k, v in shown.items())})"


def overfitting_guard_lines(metrics: dict[str, float]) -> list[str]:
    """What the catastrophic-overfitting guard found during training (``guard/*`` metrics of
    :class:`~advmed.callbacks.overfitting_guard.CatastrophicOverfittingGuard`), as report lines; none
    when it did not run."""
    if "guard/catastrophic_overfitting" not in metrics:
        return []
    m = metrics
    check = (f"PGD(eps={m['guard/eps']:.4g}, alpha={m['guard/alpha']:.4g}, steps={int(m['guard/steps'])}, random start) "
             "accuracy on the guard's held training images")
    if m["guard/catastrophic_overfitting"]:
        then = "training stopped" if m.get("guard/stopped") else "training continued from them"
        more = int(m.get("guard/detections", 1)) - 1
        then += f" (and {more} later detection(s))" if more else ""
        line = (f"**Catastrophic overfitting detected** at epoch {int(m['guard/detected_at_epoch'])} (step "
                f"{int(m['guard/detected_at_step'])}): {check} fell from {m['guard/restored_pgd_acc']:.4f} (epoch "
                f"{int(m['guard/restored_epoch'])}) to {m['guard/pgd_acc_at_detection']:.4f}, more than the margin of "
                f"{m['guard/margin']:g}; the weights of epoch {int(m['guard/restored_epoch'])} were restored and {then}.")
    else:
        line = (f"Catastrophic-overfitting guard: no drop of more than {m['guard/margin']:g} in {check} over "
                f"{int(m['guard/checks'])} checks (best {m['guard/best_pgd_acc']:.4f}, epoch {int(m['guard/best_epoch'])}).")
    return ["## Training", "", f"- {line}", ""]


def write_report(
    output_dir: str | Path,
    metrics: dict[str, float],
    attack_cfg: dict | None,
    ckpt_path: str | None,
    data_name: str,
    image_file: str | None = "adversarial_examples.png",
    notes: list[str] | None = None,
) -> Path:
    """Write ``report.md`` and ``metrics.json`` into ``output_dir`` (atomically) and return the report
    path. ``notes``: what the attack says a reader must know (``Attack.report_notes``: losses it
    substituted, signs of gradient masking), listed under the table and kept in metrics.json."""
    notes = list(notes or [])
    output_dir = Path(output_dir)
    attack = describe_attack(attack_cfg)
    lines = [
        "# Robustness report",
        "",
        f"- checkpoint: `{ckpt_path}`",
        f"- data: {data_name} (test split)",
        f"- attack: `{attack}`",
        "",
        markdown_table(["metric", "value"], robustness_rows(metrics)),
    ]
    if notes:
        lines += ["## Notes on the attack", "", *(f"- {note}" for note in notes), ""]
    lines += overfitting_guard_lines(metrics)
    columns, rows = per_class_rows(metrics)
    if rows:
        lines += ["## Per class", "", markdown_table(columns, rows),
                  "Scores pool each class's pixels over the test split; a class absent from both labels and "
                  "predictions has no score (nan, neither 0 nor 1).", ""]
    if "test/attack_success_rate" in metrics:
        lines += ["Attack success rate counts only images classified correctly before the attack "
                  "(natively misclassified images are excluded, as in the PGD attack-success study).", ""]
    if image_file and (output_dir / image_file).is_file():
        lines += ["## Examples", "", f"![adversarial examples]({image_file})", ""]
    write_json(output_dir / "metrics.json",
               {"metrics": metrics, "attack": attack_cfg, "ckpt_path": ckpt_path, "data": data_name, "notes": notes})
    return write_text(output_dir / "report.md", "\n".join(lines))


def summary_table(run_dirs: list[Path]) -> str:
    """One markdown row per metrics.json found under ``run_dirs``."""
    rows = []
    for path in sorted(p for d in run_dirs for p in Path(d).rglob("metrics.json")):
        record = json.loads(path.read_text())
        m = record["metrics"]
        rows.append([
            describe_attack(record.get("attack")),
            m.get("test/acc", float("nan")),
            m.get("test/adv_acc", float("nan")),
            m.get("test/attack_success_rate", float("nan")),
            str(path.parent),
        ])
    return markdown_table(["attack", "clean acc", "adv acc", "success rate", "run"], rows)


if __name__ == "__main__":
    dirs = [Path(p) for p in sys.argv[1:]] or [Path("outputs")]
    print(summary_table(dirs))
