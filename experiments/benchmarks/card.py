"""Wall time of a robustness card (``python -m advmed.evaluate suite=card``) against the same
conditions run as separate ``python -m advmed.evaluate`` calls (``attack=natural_shift`` for a
corruption, ``attack=<name> attack.eps=...`` for an attack), one after the other in this process's
machine, and whether both give the same metric for every condition.

What the card saves: one interpreter start, one import of torch / Lightning / advmed, one build of
the data and one checkpoint load for all conditions; what it spends: nothing more (each condition
still runs the module's test step, which also predicts the clean images).

    python experiments/benchmarks/card.py                                   # trains a tiny classifier first
    python experiments/benchmarks/card.py --ckpt outputs/demo/train/checkpoints/best.ckpt --data-args ""
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], cwd: Path) -> float:
    """Seconds of ``python -m advmed.<args>``, a fresh interpreter as a user's shell would start."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "ADVMED_PROGRESS": "off", "WANDB_MODE": "offline"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, default=None, help="a classifier checkpoint; default: train a tiny one")
    parser.add_argument("--data-args", default="debug=tiny", help="overrides of the data the checkpoint was trained on")
    parser.add_argument("--corruptions", default="defocus_blur,brightness_down,jpeg_compression")
    parser.add_argument("--severities", default="1,3,5")
    parser.add_argument("--attacks", default="fgsm")
    parser.add_argument("--eps", default="0.01,0.03")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    data = args.data_args.split()
    corruptions, severities = args.corruptions.split(","), args.severities.split(",")
    attacks, eps = args.attacks.split(","), args.eps.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = args.ckpt
        if ckpt is None:
            run(["advmed.train", *data, f"hydra.run.dir={tmp / 'train'}"], tmp)
            ckpt = tmp / "train" / "checkpoints" / "best.ckpt"
        common = [*data, f"ckpt_path={Path(ckpt).resolve()}", f"seed={args.seed}"]
        separate, separate_acc = 0.0, {}
        conditions = [(f"corruption/{c}/{s}", ["attack=natural_shift", f"attack.shift={c}", f"attack.severity={s}",
                                                f"attack.seed={args.seed}"]) for c in corruptions for s in severities]
        conditions += [(f"attack/{a}/eps={e}", [f"attack={a}", f"attack.eps={e}"]) for a in attacks for e in eps]
        for i, (cid, overrides) in enumerate(conditions):
            out = tmp / "separate" / str(i)
            separate += run(["advmed.evaluate", *common, *overrides, f"hydra.run.dir={out}"], tmp)
            separate_acc[cid] = json.loads((out / "metrics.json").read_text())["metrics"]["test/adv_acc"]
        card_dir = tmp / "card"
        card_s = run(["advmed.evaluate", *common, "suite=card", f"suite.corruptions=[{','.join(corruptions)}]",
                      f"suite.severities=[{','.join(severities)}]", "suite.stain=false",
                      f"suite.attacks=[{','.join(attacks)}]", f"suite.eps=[{','.join(eps)}]",
                      f"hydra.run.dir={card_dir}"], tmp)
        card = json.loads((card_dir / "card.json").read_text())
        in_card = {c["id"]: c["metrics"]["acc"] for c in card["conditions"]}
        same = all(abs(in_card[cid] - acc) < 1e-9 for cid, acc in separate_acc.items()
                   if cid in in_card)
        missing = [cid for cid in separate_acc if cid not in in_card]
    n = len(conditions)
    print(f"{n} conditions ({len(corruptions)} corruptions x {len(severities)} severities, {len(attacks)} attack(s) x "
          f"{len(eps)} eps) on {card['conditions'][0]['n']} test images")
    print("| how | wall s | s per condition |\n|---|---|---|")
    print(f"| {n} separate `advmed.evaluate` calls | {separate:.1f} | {separate / n:.2f} |")
    print(f"| one card (`suite=card`, + its clean condition) | {card_s:.1f} | {card_s / (n + 1):.2f} |")
    print(f"speed-up (separate / card): {separate / card_s:.2f}x; same metric for every condition: {same}"
          + (f" (not compared, id differs: {missing})" if missing else ""))


if __name__ == "__main__":
    main()
