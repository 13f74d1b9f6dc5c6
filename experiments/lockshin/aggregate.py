"""Lockshin et al. 2022, Table 1: each ResNet34's accuracy on the clean test split, under AdvGAN, under
FGSM and under AutoAttack at the FGSM eps, from the runs of ``experiments/lockshin/pipeline.py`` in
``<out>``; with the FID of the StyleGAN2 stage, the PSNR / SSIM of the SRGAN stage, the AdvGAN's
perturbation sizes, the training-set sizes and the hash of every artefact that produced the numbers.

    python experiments/lockshin/aggregate.py outputs/paper_lockshin

Writes ``<out>/table1.csv`` (columns ``train_set,clean_acc,advgan_acc,fgsm_acc,autoattack_acc``,
accuracies in [0, 1], rows ``real``, ``real+synthetic``, ``real+synthetic+adversarial``), ``table1.md``
(the same beside the paper's, the checks of the paper's findings, AutoAttack's accuracy after each of
its attacks and its notes, the other stages' figures and the provenance) and ``table1.png``. The AdvGAN
column uses the AdvGAN trained against the first classifier for all three (the paper's adversary, who
does not know about the synthetic data); FGSM and AutoAttack attack each classifier white-box.

``autoattack_acc`` is the strong evaluation DESIGN.md's contract 11 asks of a robustness claim (the paper
has no such column). A folder from a run made before the pipeline had the ``evaluate_<row>_autoattack``
stages still aggregates: the column stays in the CSV with empty cells (``not run`` in the markdown), and a
message says which stages to run.
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
COLUMNS = ["train_set", "clean_acc", "advgan_acc", "fgsm_acc", "autoattack_acc"]
# AutoAttack's attacks in their order of execution (advmed.attacks.ensembles.autoattack.VERSIONS), as
# logged after each: test/acc_after_<name>; a version with other attacks shows those it logged.
AUTOATTACK_STAGES = ("apgd_ce", "apgd_dlr", "apgd_t", "fab", "fab_t", "square")
PAPER = {"real": (95.67, 55.24, 68.76), "real+synthetic": (97.56, 63.42, 83.54),
         "real+synthetic+adversarial": (98.58, 97.40, 90.38)}  # Table 1, %
MIN_ADVGAN_GAIN = 0.20  # the acceptance: row 3 resists AdvGAN by at least 20 points more than row 1
MAX_CLEAN_LOSS = 0.02   # ... and loses at most 2 points of clean accuracy


def read_metrics(run: Path) -> dict[str, float]:
    return read_run(run)["metrics"]


def read_run(run: Path) -> dict:
    """A run's ``metrics.json``: ``metrics``, and for an evaluation ``attack`` (its config) and ``notes``."""
    path = run / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the stage {run.name} first "
                                f"(python experiments/lockshin/pipeline.py --stages {run.name})")
    return json.loads(path.read_text())


def table1(out: Path) -> tuple[Table, dict[str, dict]]:
    """Table 1 and the evaluation runs it came from (``<row>_<attack>`` -> metrics.json's content). The
    AutoAttack cell of a row whose ``evaluate_<row>_autoattack`` run is missing (an older pipeline run)
    is None, with a message on stderr; the AdvGAN and FGSM runs are required."""
    evaluations, rows, missing = {}, [], []
    for train_set, short in ROWS.items():
        runs = {attack: read_run(out / f"evaluate_{short}_{attack}") for attack in ("advgan", "fgsm")}
        if (out / f"evaluate_{short}_autoattack" / "metrics.json").is_file():
            runs["autoattack"] = read_run(out / f"evaluate_{short}_autoattack")
        else:
            missing.append(f"evaluate_{short}_autoattack")
        clean = {attack: run["metrics"]["test/acc"] for attack, run in runs.items()}
        if not all(math.isclose(acc, clean["advgan"], abs_tol=1e-6) for acc in clean.values()):
            raise ValueError(f"the clean accuracy of classifier_{short} differs between its evaluations "
                             f"({', '.join(f'{a}: {v}' for a, v in clean.items())}): they tested different "
                             "checkpoints or data; rerun them")
        evaluations.update({f"{short}_{attack}": run for attack, run in runs.items()})
        autoattack = runs["autoattack"]["metrics"]["test/adv_acc"] if "autoattack" in runs else None
        rows.append([train_set, clean["advgan"], runs["advgan"]["metrics"]["test/adv_acc"],
                     runs["fgsm"]["metrics"]["test/adv_acc"], autoattack])
    if missing:
        print(f"{out}: no AutoAttack evaluation for {', '.join(missing)} (a run from before the pipeline had these "
              "stages?): Table 1's autoattack_acc is left empty there. To fill it: python experiments/lockshin/"
              f"pipeline.py --out {out} --stages {','.join(missing)},table (with the run's --scale)", file=sys.stderr)
    return Table(COLUMNS, rows), evaluations


def describe_autoattack(evaluations: dict[str, dict]) -> str | None:
    """``AutoAttack (standard, Linf, eps 0.1; 100 iterations, 5000 Square queries)`` from the attack config of
    the AutoAttack runs (None when there is none); every setting that differs between the runs is listed."""
    configs = [run.get("attack") or {} for key, run in evaluations.items() if key.endswith("_autoattack")]
    if not configs:
        return None

    def one(key: str, default: object = "?") -> str:
        values = sorted({str(c.get(key, default)) for c in configs})
        return values[0] if len(values) == 1 else " / ".join(values)

    attacks = one("attacks", None)
    subset = "" if attacks == "None" else f", attacks {attacks}"
    # The reference's restarts (advmed.attacks.ensembles.autoattack): 5 for the plus version's untargeted
    # APGD and FAB, otherwise one run of each attack.
    restarts = {"standard": "1 restart", "plus": "5 restarts of the untargeted APGD / FAB, 1 of the others",
                "rand": "1 restart, 20-draw EOT"}.get(one("version"), "restarts: see the version")
    return (f"AutoAttack ({one('version')}, {one('norm')}, eps {one('eps')}{subset}; {one('steps')} iterations, "
            f"{restarts}, {one('n_queries')} Square queries, seed {one('seed')})")


def checks(table: Table) -> list[tuple[str, bool]]:
    """The paper's findings that the acceptance asks for, each with whether it holds."""
    by_set = {row[0]: row for row in table.rows}
    real, adversarial = by_set["real"], by_set["real+synthetic+adversarial"]
    gain, loss = adversarial[2] - real[2], real[1] - adversarial[1]
    return [
        (f"under AdvGAN the real+synthetic+adversarial classifier beats the real one by {100 * gain:.1f} points "
         f"(>= {100 * MIN_ADVGAN_GAIN:.0f})", gain >= MIN_ADVGAN_GAIN),
        (f"its clean accuracy is {100 * abs(loss):.1f} points {'below' if loss > 0 else 'above'} the real one's "
         f"(at most {100 * MAX_CLEAN_LOSS:.0f} below allowed)", loss <= MAX_CLEAN_LOSS),
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


def _cell(value: float | None) -> str:
    return "not run" if value is None else f"{100 * value:.2f}"


def markdown(out: Path, table: Table, evaluations: dict[str, dict], fgsm_eps: float) -> str:
    pct = [[row[0], *(_cell(v) for v in row[1:]), *(f"{v:.2f}" for v in PAPER[row[0]])] for row in table.rows]
    autoattack = describe_autoattack(evaluations)
    not_run = [row[0] for row in table.rows if row[4] is None]
    lines = ["# Lockshin et al. 2022, Table 1 (ours vs the paper, accuracy %)", "",
             markdown_table(["train set", "clean", "AdvGAN", f"FGSM eps {fgsm_eps}", f"AutoAttack eps {fgsm_eps}",
                             "paper clean", "paper AdvGAN", "paper FGSM"], pct), "",
             "The AdvGAN column attacks every classifier with the AdvGAN trained against the first one (the paper's "
             "adversary, unaware of the synthetic data); FGSM attacks each classifier white-box.",
             "",
             (f"AutoAttack column (not in the paper): {autoattack}, white-box against each classifier; an image counts "
              "as robust only if every attack of the ensemble left it correctly classified (DESIGN.md, contract 11)."
              + (f" Not run for {', '.join(not_run)} (its evaluate_<row>_autoattack stage is missing)." if not_run else "")
              if autoattack else
              "AutoAttack column: not run in this folder (its evaluate_<row>_autoattack stages came after this run)."),
             "", "## Checks", ""]
    lines += [f"- {text}: {ok}" for text, ok in checks(table)]
    lines += _autoattack_section(table, evaluations)
    attack = evaluations["real_advgan"]["metrics"]
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


def _autoattack_section(table: Table, evaluations: dict[str, dict]) -> list[str]:
    """Robust accuracy after each attack of the ensemble (each on the images every earlier one left correct)
    per classifier, and the notes the attack wrote (substitutions for few classes, signs of gradient masking)."""
    runs = {row[0]: evaluations.get(f"{ROWS[row[0]]}_autoattack") for row in table.rows}
    runs = {name: run for name, run in runs.items() if run is not None}
    if not runs:
        return []
    logged = [a for a in AUTOATTACK_STAGES if any(f"test/acc_after_{a}" in r["metrics"] for r in runs.values())]
    rows = [[name, _cell(run["metrics"]["test/acc"]),
             *(_cell(run["metrics"].get(f"test/acc_after_{a}")) for a in logged), _cell(run["metrics"]["test/adv_acc"])]
            for name, run in runs.items()]
    lines = ["", "## AutoAttack, robust accuracy after each attack (%)", "",
             markdown_table(["train set", "clean", *(f"after {a.replace('_', '-').upper()}" for a in logged), "final"],
                            rows)]
    notes: dict[str, list[str]] = {}  # note -> the train sets whose run wrote it
    for name, run in runs.items():
        for note in run.get("notes") or []:
            notes.setdefault(note, []).append(name)
    if notes:
        lines += ["", "Notes on the attack (from each run's report.md):", ""]
        lines += [f"- {'all three' if len(names) == len(ROWS) else ', '.join(names)}: {note}" for note, names in notes.items()]
    return lines


def plot(table: Table, path: Path, fgsm_eps: float) -> Path:
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    bars = [("clean", 1), ("AdvGAN", 2), (f"FGSM eps {fgsm_eps}", 3)]
    if any(row[4] is not None for row in table.rows):
        bars.append((f"AutoAttack eps {fgsm_eps}", 4))  # a row without its AutoAttack run has no bar
    width = 0.8 / len(bars)
    for k, (label, column) in enumerate(bars):
        shown = [(i, row[column]) for i, row in enumerate(table.rows) if row[column] is not None]
        ax.bar([i + (k - (len(bars) - 1) / 2) * width for i, _ in shown], [100 * v for _, v in shown], width, label=label)
    ax.set_xticks(range(len(table.rows)), [row[0] for row in table.rows], fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 118)  # room above 100 % for the legend, clear of the bars
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=8, loc="upper center", ncol=len(bars))
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
    print(markdown_table(table.columns, [["" if v is None else v for v in row] for row in table.rows]))


if __name__ == "__main__":
    main()
