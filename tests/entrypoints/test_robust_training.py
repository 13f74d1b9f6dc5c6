"""The robust-training comparison: `make paper-robust-training` at tiny sizes (six fits, each evaluated under
FGSM, PGD and AutoAttack, one table), over two seeds, and its aggregate on hand-written run folders."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT

METHODS = ["standard", "mixed_fgsm", "pgd_at", "trades", "mart", "fgsm_rs"]
COLUMNS = ["method", "clean_acc", "fgsm_acc", "pgd_acc", "autoattack_acc", "train_s_per_epoch"]
# Seconds-long stages: ResNet18 (debug=tiny) on 18 training tiles, one epoch, 9 test tiles; 2-step inner loops and attacks.
TINY = " ".join(["debug=tiny", "data.train_per_class=20", "data.val_per_class=2", "data.test_per_class=1",
                 "trainer.max_epochs=1", "inner_steps=2", "callbacks.adversarial_examples.num_images=2"])
FAST_EVAL = {"PAPER_ROBUST_TRAINING_PGD_ARGS": "attack.steps=2",
             "PAPER_ROBUST_TRAINING_AA_ARGS": "attack.steps=2 attack.n_queries=10 attack.n_target_classes=2"}


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def make_paper(**variables: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed-stamp", "paper-robust-training", f"PY={sys.executable}",
         *(f"{k}={v}" for k, v in {**FAST_EVAL, **variables}.items())],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def load_aggregate():
    spec = importlib.util.spec_from_file_location("robust_training_aggregate",
                                                  REPO_ROOT / "experiments" / "robust_training" / "aggregate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (REPO_ROOT / "Makefile").is_file(), reason="needs the repository's Makefile")
def test_make_paper_robust_training_at_tiny_sizes(tmp_path):
    """The recipe itself: six fits at one eps, 18 evaluations, the table, its markdown and the plot."""
    out = tmp_path / "paper_robust_training"
    proc = make_paper(PAPER_ROBUST_TRAINING_DIR=str(out), PAPER_ROBUST_TRAINING_ARGS=f"{TINY} eps=8/255")
    rows = read_csv(out / "table.csv")
    assert list(rows[0]) == COLUMNS
    assert [r["method"] for r in rows] == METHODS
    for row in rows:
        for column in COLUMNS[1:5]:
            assert 0.0 <= float(row[column]) <= 1.0, (row["method"], column)
        assert float(row["train_s_per_epoch"]) > 0
    for method in METHODS:
        config = (out / "train" / method / ".hydra" / "config.yaml").read_text()
        assert f"method: {method}\n" in config and "eps: 8/255\n" in config  # one eps for every method ...
        for attack in ("fgsm", "pgd", "autoattack"):
            record = json.loads((out / attack / method / "metrics.json").read_text())
            assert record["attack"]["eps"] == "8/255"  # ... and every evaluation
            assert record["ckpt_path"].endswith(f"train/{method}/checkpoints/best.ckpt")
    assert json.loads((out / "pgd" / "standard" / "metrics.json").read_text())["attack"]["steps"] == 2
    markdown = (out / "table.md").read_text()
    assert "| method | clean_acc | fgsm_acc | pgd_acc | autoattack_acc | train_s_per_epoch |" in markdown
    assert "Highest AutoAttack accuracy: **" in markdown and "AutoAttack(eps=8/255" in markdown
    assert "on the same 9 test tiles" in markdown
    assert markdown in proc.stdout  # printed
    assert (out / "clean_vs_robust.png").stat().st_size > 5000


@pytest.mark.slow  # the SEEDS recursion itself is smoke-tested by make paper-snap SEEDS=0,1 in the default run
@pytest.mark.skipif(not (REPO_ROOT / "Makefile").is_file(), reason="needs the repository's Makefile")
def test_make_paper_robust_training_over_two_seeds(tmp_path):
    """SEEDS=0,1: the recipe once per seed into <dir>_seeds/seed_<s>/ (seed=<s> reaches training and evaluation),
    then the table over the seeds (two methods here, for time)."""
    out = tmp_path / "paper_robust_training"
    make_paper(SEEDS="0,1", PAPER_ROBUST_TRAINING_DIR=str(out), PAPER_ROBUST_TRAINING_ARGS=TINY,
               PAPER_ROBUST_TRAINING_METHODS="standard,fgsm_rs")
    seeds_dir = tmp_path / "paper_robust_training_seeds"
    tables = {}
    for seed in ("0", "1"):
        run = seeds_dir / f"seed_{seed}"
        assert f"seed: {seed}\n" in (run / "train" / "fgsm_rs" / ".hydra" / "config.yaml").read_text()
        assert f"seed: {seed}\n" in (run / "autoattack" / "fgsm_rs" / ".hydra" / "config.yaml").read_text()
        tables[seed] = {r["method"]: r for r in read_csv(run / "table.csv")}
        assert list(tables[seed]) == ["standard", "fgsm_rs"]
    over = read_csv(seeds_dir / "table_over_seeds.csv")
    assert [r["method"] for r in over] == ["standard", "fgsm_rs"] and all(r["n"] == "2" for r in over)
    for row in over:
        pair = [float(tables[s][row["method"]]["train_s_per_epoch"]) for s in ("0", "1")]
        assert float(row["train_s_per_epoch_mean"]) == pytest.approx(sum(pair) / 2)
    assert "± " in (seeds_dir / "table_over_seeds.md").read_text()
    assert [r["seed"] for r in read_csv(seeds_dir / "table_per_seed.csv")] == ["0", "0", "1", "1"]
    assert not out.exists()


# --------------------------------------------------------------------------- the aggregate on hand-written folders

ATTACKS = {"fgsm": "FGSM(eps=4/255)", "pgd": "PGD(eps=4/255, steps=20, random_start=True)",
           "autoattack": "AutoAttack(eps=4/255, norm=Linf, version=standard, steps=50, n_queries=1000)"}


def write_runs(out, methods=METHODS, skip: tuple[str, str] | None = None) -> dict:
    """Run folders as the pipeline leaves them; returns the values the table must hold per method."""
    expected = {}
    for i, method in enumerate(methods):
        run = out / "train" / method
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(f"seed: 7\nmethod: {method}\n")
        (run / "checkpoints").mkdir()
        epochs, fit_s = 4, 10.0 * (i + 1)
        timer = {"time_elapsed": {"train": fit_s, "sanity_check": 0, "validate": 0.1, "test": 0, "predict": 0}}
        torch.save({"epoch": epochs - 1, "callbacks": {"Timer": timer, "BestCheckpoint{}": {}}}, run / "checkpoints" / "last.ckpt")
        (run / "checkpoints" / "best.ckpt").write_bytes(b"weights")
        clean = 0.9 - 0.05 * i
        values = {"clean_acc": clean, "fgsm_acc": clean - 0.2, "pgd_acc": clean - 0.3, "autoattack_acc": clean - 0.35 - 0.01 * i}
        for attack, description in ATTACKS.items():
            if skip == (attack, method):
                continue
            folder = out / attack / method
            (folder / ".hydra").mkdir(parents=True)
            (folder / ".hydra" / "config.yaml").write_text("data:\n  num_classes: 9\n  test_per_class: 5\n")
            metrics = {"test/acc": clean, "test/adv_acc": values[f"{attack}_acc"]}
            if attack == "autoattack":
                metrics |= {"test/acc_after_apgd_ce": values["autoattack_acc"] + 0.02, "test/acc_after_square": values["autoattack_acc"]}
            (folder / "metrics.json").write_text(json.dumps({"attack": {}, "metrics": metrics, "notes": ["a note"]}))
            (folder / "report.md").write_text(f"# Robustness report\n\n- attack: `{description}`\n")
        expected[method] = {**values, "train_s_per_epoch": fit_s / epochs}
    return expected


def test_aggregate_reads_the_evaluations_and_the_fit_timer(tmp_path):
    aggregate = load_aggregate()
    out = tmp_path / "run"
    expected = write_runs(out)  # folders listed in name order; the table keeps the methods' order
    written = aggregate.aggregate(out)
    assert [p.name for p in written] == ["table.csv", "table.md", "clean_vs_robust.png"]
    rows = read_csv(out / "table.csv")
    assert list(rows[0]) == COLUMNS and [r["method"] for r in rows] == METHODS
    for row in rows:
        for column, value in expected[row["method"]].items():
            assert float(row[column]) == pytest.approx(value), (row["method"], column)
    markdown = (out / "table.md").read_text()
    assert "on the same 45 test tiles" in markdown
    for description in ATTACKS.values():
        assert f"`{description}`" in markdown
    # the verdicts name the winner and its cost; here every robust method is below the standard one (0.550)
    assert "Highest AutoAttack accuracy: **mixed_fgsm**, 0.490 (clean 0.850), at 5.0 s per epoch, 2.0x the standard model's." in markdown
    assert "not above it under AutoAttack: mixed_fgsm, pgd_at, trades, mart, fgsm_rs." in markdown
    assert "| standard | 0.900 | 0.700 | 0.600 | 0.550 | 2.5 | 1.0x |" in markdown
    assert "| standard | 0.570 | 0.550 |" in markdown  # AutoAttack after APGD-CE, then after Square
    assert "- a note" in markdown and "| fgsm_rs | `" in markdown
    assert (out / "clean_vs_robust.png").stat().st_size > 5000


def test_aggregate_names_the_missing_evaluation(tmp_path):
    aggregate = load_aggregate()
    out = tmp_path / "run"
    write_runs(out, skip=("autoattack", "trades"))
    with pytest.raises(FileNotFoundError, match=r"no autoattack evaluation of 'trades': .*autoattack/trades/metrics.json is missing"):
        aggregate.aggregate(out)
    assert not (out / "table.csv").exists()


def test_aggregate_refuses_a_folder_without_runs_or_timer(tmp_path):
    aggregate = load_aggregate()
    with pytest.raises(FileNotFoundError, match="no training runs under"):
        aggregate.aggregate(tmp_path)
    write_runs(tmp_path / "run", methods=["standard"])
    torch.save({"epoch": 0, "callbacks": {}}, tmp_path / "run" / "train" / "standard" / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match="holds no Timer state"):
        aggregate.aggregate(tmp_path / "run")
