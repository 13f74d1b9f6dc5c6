"""Lockshin et al. 2022, Table 1: each ResNet34's accuracy on the clean test split, under AdvGAN and
under FGSM, from the runs of ``experiments/lockshin/pipeline.py`` in ``<out>``; with the FID of the
StyleGAN2 stage, the PSNR / SSIM of the SRGAN stage, the AdvGAN's perturbation sizes, the training-set
sizes and the hash of every artefact that produced the numbers.

    python experiments/lockshin/aggregate.py outputs/paper_lockshin

Writes ``<out>/table1.csv`` (columns ``train_set,clean_acc,advgan_acc,fgsm_acc``, accuracies in
[0, 1], rows ``real``, ``real+synthetic``, ``real+synthetic+adversarial``), ``table1.md`` (the same
beside the paper's, the checks of the paper's findings, the other stages' figures and the
provenance) and ``table1.png``. The AdvGAN column uses the AdvGAN trained against the first
classifier for all three (the paper's adversary, who does not know about the synthetic data).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from advmed.utils.files import atomic_write, write_text  # noqa: E402
from advmed.utils.loggers import markdown_table  # noqa: E402
from advmed.utils.tables import Table, write_csv  # noqa: E402

ROWS = {"real": "real", "real+synthetic": "synthetic", "real+synthetic+adversarial": "adversarial"}
PAPER = {"real": (95.67, 55.24, 68.76), "real+synthetic": (97.56, 63.42, 83.54),
         "real+synthetic+adversarial": (98.58, 97.40, 90.38)}  # Table 1, %
MIN_ADVGAN_GAIN = 0.20  # the acceptance: row 3 resists AdvGAN by at least 20 points more than row 1
MAX_CLEAN_LOSS = 0.02   # ... and loses at most 2 points of clean accuracy


def read_metrics(run: Path) -> dict[str, float]:
    path = run / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the stage {run.name} first "
                                f"(python experiments/lockshin/pipeline.py --stages {run.name})")
    return json.loads(path.read_text())["metrics"]


def table1(out: Path) -> tuple[Table, dict[str, dict[str, float]]]:
    """Table 1 and the evaluation metrics it came from (``<row>_<attack>`` -> metrics)."""
    evaluations, rows = {}, []
    for train_set, short in ROWS.items():
        advgan, fgsm = (read_metrics(out / f"evaluate_{short}_{attack}") for attack in ("advgan", "fgsm"))
        if not math.isclose(advgan["test/acc"], fgsm["test/acc"], abs_tol=1e-6):
            raise ValueError(f"the clean accuracy of classifier_{short} differs between its evaluations ({advgan['test/acc']} "
                             f"vs {fgsm['test/acc']}): they tested different checkpoints or data; rerun both")
        evaluations[f"{short}_advgan"], evaluations[f"{short}_fgsm"] = advgan, fgsm
        rows.append([train_set, advgan["test/acc"], advgan["test/adv_acc"], fgsm["test/adv_acc"]])
    return Table(["train_set", "clean_acc", "advgan_acc", "fgsm_acc"], rows), evaluations


def checks(table: Table) -> list[tuple[str, bool]]:
    """The paper's findings that the acceptance asks for, each with whether it holds."""
    by_set = {row[0]: row for row in table.rows}
    real, adversarial = by_set["real"], by_set["real+synthetic+adversarial"]
    gain, loss = adversarial[2] - real[2], real[1] - adversarial[1]
    return [
        (f"under AdvGAN the real+synthetic+adversarial classifier beats the real one by {100 * gain:.1f} points "
         f"(>= {100 * MIN_ADVGAN_GAIN:.0f})", gain >= MIN_ADVGAN_GAIN),
        (f"its clean accuracy is {100 * loss:.1f} points below the real one's (at most {100 * MAX_CLEAN_LOSS:.0f} allowed)",
         loss <= MAX_CLEAN_LOSS),
    ]


def _stage_records(out: Path) -> dict[str, dict]:
    records = {}
    for path in sorted((out / "stages").glob("*.json")):
        records[path.stem] = json.loads(path.read_text())
    return records


def _short_digest(value: dict) -> str:
    if "sha256" in value:
        return f"sha256 {value['sha256'][:12]}"
    return f"manifest {value['manifest_sha256'][:12]} ({value['num_items']} items)"


def markdown(out: Path, table: Table, evaluations: dict[str, dict[str, float]], fgsm_eps: float) -> str:
    pct = [[row[0], *(f"{100 * v:.2f}" for v in row[1:]), *(f"{v:.2f}" for v in PAPER[row[0]])] for row in table.rows]
    lines = ["# Lockshin et al. 2022, Table 1 (ours vs the paper, accuracy %)", "",
             markdown_table(["train set", "clean", "AdvGAN", f"FGSM eps {fgsm_eps}", "paper clean", "paper AdvGAN",
                             "paper FGSM"], pct), "",
             "The AdvGAN column attacks every classifier with the AdvGAN trained against the first one (the paper's "
             "adversary, unaware of the synthetic data); FGSM attacks each classifier white-box.", "", "## Checks", ""]
    lines += [f"- {text}: {ok}" for text, ok in checks(table)]
    attack = evaluations["real_advgan"]
    lines += ["", "## AdvGAN against the real-data classifier", "",
              markdown_table(["success rate", "mean abs noise", "L-inf", "L2"],
                             [[attack.get("test/attack_success_rate", math.nan), attack.get("test/mean_abs_noise", math.nan),
                               attack.get("test/linf", math.nan), attack.get("test/l2", math.nan)]])]
    gan, sr = read_metrics(out / "stylegan2"), read_metrics(out / "srgan")
    fid_file = out / "stylegan2" / "fid.json"
    extractor = json.loads(fid_file.read_text()).get("test", {}).get("feature_extractor", "?") if fid_file.is_file() else "?"
    lines += ["", "## Generative stages", "",
              f"- StyleGAN2: FID {gan.get('test/fid', math.nan):.2f} against the train split "
              f"({int(gan.get('test/fid_num_real', 0))} real, {int(gan.get('test/fid_num_generated', 0))} generated; "
              f"features: {extractor}); the paper's 16.77 is an Inception FID at 128 px.",
              f"- StyleGAN2 conditioning: the real-data classifier labels generated tiles with accuracy "
              f"{gan.get('test/judge_acc', math.nan):.3f} (real test tiles: {gan.get('test/judge_real_acc', math.nan):.3f}).",
              f"- SRGAN x2: PSNR {sr.get('test/psnr', math.nan):.2f} dB, SSIM {sr.get('test/ssim', math.nan):.3f} "
              f"(bicubic: {sr.get('test/bicubic_psnr', math.nan):.2f} dB, {sr.get('test/bicubic_ssim', math.nan):.3f}); "
              "the paper: 30.7 dB, 0.93."]
    records = _stage_records(out)
    synthetic = records.get("synthetic", {}).get("outputs", {}).get("dataset", {}).get("num_items")
    adversarial = records.get("adversarial", {}).get("outputs", {}).get("dataset", {}).get("num_items")
    if synthetic is not None and adversarial is not None:
        real = adversarial - synthetic
        lines += ["", "## Training sets", "",
                  f"- real: {real} tiles; real+synthetic: {real + synthetic}; real+synthetic+adversarial: "
                  f"{real + synthetic + adversarial} ({(real + synthetic + adversarial) / max(real, 1):.1f}x the real set; "
                  "the paper: 18,000 / 36,000 / 72,000)."]
    lines += ["", "## Provenance (every stage's command and artefacts: stages/<name>.json)", "",
              markdown_table(["stage", "seconds", "outputs"],
                             [[name, f"{r['seconds']:.0f}" if "seconds" in r else "", "; ".join(f"{k}: {_short_digest(v)}"
                                                                     for k, v in r.get("outputs", {}).items())]
                              for name, r in records.items() if name != "table"])]
    return "\n".join(lines) + "\n"


def plot(table: Table, path: Path, fgsm_eps: float) -> Path:
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    width = 0.26
    for k, (label, column) in enumerate((("clean", 1), ("AdvGAN", 2), (f"FGSM eps {fgsm_eps}", 3))):
        xs = [i + (k - 1) * width for i in range(len(table.rows))]
        ax.bar(xs, [100 * row[column] for row in table.rows], width, label=label)
    ax.set_xticks(range(len(table.rows)), [row[0] for row in table.rows], fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 118)  # room above 100 % for the legend, clear of the bars
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    ax.set_title("Lockshin et al. 2022, Table 1 (ours)", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    return path


def aggregate(out: Path, fgsm_eps: float = 0.1) -> Table:
    table, evaluations = table1(out)
    write_csv(out / "table1.csv", table)
    write_text(out / "table1.md", markdown(out, table, evaluations, fgsm_eps))
    plot(table, out / "table1.png", fgsm_eps)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the pipeline's output folder")
    parser.add_argument("--fgsm-eps", type=float, default=0.1, help="the FGSM eps of the evaluations (for the labels)")
    args = parser.parse_args()
    table = aggregate(args.out.expanduser(), args.fgsm_eps)
    print(markdown_table(table.columns, table.rows))


if __name__ == "__main__":
    main()
