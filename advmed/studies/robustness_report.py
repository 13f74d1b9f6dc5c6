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
    ("test/linf", "mean L-inf of perturbation"),
    ("test/l2", "mean L2 of perturbation"),
    ("test/area_fraction", "mean area fraction covered (patch attacks)"),
    ("test/steps", "mean attack steps per image"),
]


def robustness_rows(metrics: dict[str, float]) -> list[list[Any]]:
    """``[label, value]`` rows: the metrics above in their order, then any other ``test/*`` metric
    a module reports (under its own key), so a new model family needs no change here."""
    known = dict(ROBUSTNESS_METRICS)
    rows = [[label, float(metrics[key])] for key, label in ROBUSTNESS_METRICS if key in metrics]
    rows += [[key, float(metrics[key])] for key in sorted(metrics) if key.startswith("test/") and key not in known]
    return rows


# The arguments a reader needs to tell two attacks apart; the rest stays in metrics.json.
_ATTACK_KEYS = ("eps", "alpha", "steps", "random_start", "targeted", "target_class", "loss", "loss_classes", "early_stop",
                "area_fraction", "num_blobs", "placement", "patch_path")


def describe_attack(attack_cfg: dict | None) -> str:
    """``PGD(eps=0.03, steps=10, random_start=True)`` from an attack config; ``none`` for no attack."""
    if not attack_cfg:
        return "none"
    name = str(attack_cfg.get("_target_", "?")).rsplit(".", 1)[-1]
    shown = {k: attack_cfg[k] for k in _ATTACK_KEYS if attack_cfg.get(k) not in (None, False)}
    if "patch_path" in shown:  # a saved patch brings its own mask: the optimisation settings are unused
        shown = {k: v for k, v in shown.items() if k in ("patch_path", "targeted", "target_class")}
    if shown.get("loss") == "ce":
        del shown["loss"]
    return f"{name}({', '.join(f'{k}={v}' for k, v in shown.items())})"


def write_report(
    output_dir: str | Path,
    metrics: dict[str, float],
    attack_cfg: dict | None,
    ckpt_path: str | None,
    data_name: str,
    image_file: str | None = "adversarial_examples.png",
) -> Path:
    """Write ``report.md`` and ``metrics.json`` into ``output_dir`` (atomically) and return the report path."""
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
        "Attack success rate counts only images classified correctly before the attack "
        "(natively misclassified images are excluded, as in the PGD attack-success study).",
        "",
    ]
    if image_file and (output_dir / image_file).is_file():
        lines += ["## Examples (clean | adversarial | amplified difference)", "", f"![adversarial examples]({image_file})", ""]
    write_json(output_dir / "metrics.json", {"metrics": metrics, "attack": attack_cfg, "ckpt_path": ckpt_path, "data": data_name})
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
