"""SNAP through the entry points: evaluation on a Kaggle-layout folder, the universal patch as a
model fitted by advmed.train, the area sweep with its aggregation, and `make paper-snap` at tiny sizes."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest
import torch

from advmed.attacks.patch.snap import load_universal_patch
from tests.conftest import REPO_ROOT
from tests.data.lymph_node.test_hcd import write_hcd
from tests.entrypoints.conftest import compose_config, read_metrics


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))

# Seconds-long lymph-node runs (ResNet18 via debug=tiny, 32 px, a few images).
LYMPH = ["data=synthetic_lymph_node", "debug=tiny", "data.image_size=32", "data.train_per_class=48",
         "data.val_per_class=8", "data.test_per_class=8", "data.batch_size=16"]
SNAP_FAST = ["attack=snap", "attack.steps=3", "attack.area_fraction=0.1", "attack.seed=0"]


@pytest.fixture(scope="session")
def lymph_classifier(tmp_path_factory):
    """A tiny two-class classifier trained on synthetic lymph nodes; returns its checkpoint."""
    from advmed.train import train

    run_dir = tmp_path_factory.mktemp("lymph_classifier")
    train(compose_config("train", [*LYMPH, "attack=none"], run_dir))
    return run_dir / "checkpoints" / "best.ckpt"


def test_evaluate_with_snap_on_a_kaggle_layout_folder(lymph_classifier, tmp_path):
    from advmed.evaluate import evaluate

    root = tmp_path / "hcd"
    write_hcd(root)
    cfg = compose_config("evaluate", [
        "data=hcd", f"data.root={root}", "data.image_size=32", "data.train_size=null", "data.val_size=2",
        "data.test_size=6", "data.num_workers=0", f"ckpt_path={lymph_classifier}", *SNAP_FAST,
    ], tmp_path / "run")
    metrics = evaluate(cfg)
    assert 0.0 <= metrics["test/adv_acc"] <= 1.0
    assert 0.05 <= metrics["test/area_fraction"] <= 0.1
    report = (tmp_path / "run" / "report.md").read_text()
    assert "SNAP(" in report and "area_fraction=0.1" in report and "mean area fraction covered" in report
    assert (tmp_path / "run" / "adversarial_examples.png").stat().st_size > 1000


def test_evaluate_refuses_data_of_other_classes(lymph_classifier, tmp_path):
    from advmed.evaluate import evaluate

    cfg = compose_config("evaluate", ["debug=tiny", f"ckpt_path={lymph_classifier}", *SNAP_FAST], tmp_path)
    with pytest.raises(ValueError, match="trained with num_classes=2 but the data config has num_classes=9"):
        evaluate(cfg)


def test_universal_patch_trains_applies_and_restores(lymph_classifier, tmp_path):
    from advmed.evaluate import evaluate
    from advmed.models import load_module
    from advmed.models.universal_patch import UniversalPatchModule
    from advmed.train import train

    data = [o for o in LYMPH if o != "debug=tiny"]
    fit = ["trainer.max_epochs=2", "trainer.enable_progress_bar=false", "+trainer.limit_val_batches=1"]
    patch_run = tmp_path / "patch"
    metrics = train(compose_config("train", [
        "experiment=snap/universal", *data, *fit, f"model.classifier_ckpt={lymph_classifier}", "model.area_fraction=0.1",
    ], patch_run))
    patch_file = patch_run / "universal_patch.pt"
    record = load_universal_patch(patch_file)
    assert record["delta"].shape == (3, 32, 32) and 0.05 <= record["area_fraction"] <= 0.1
    assert len(record["provenance"]["classifier_sha256"]) == 64
    assert metrics["test/area_fraction"] == pytest.approx(record["area_fraction"], abs=1e-6)
    # The checkpoint holds the classifier too: it restores with the classifier file gone.
    restored = load_module(patch_run / "checkpoints" / "best.ckpt", UniversalPatchModule)
    assert torch.equal(restored.mask.cpu(), record["mask"]) and restored.classifier_ckpt is None
    # Applied by the attack to the classifier, it gives the module's own test figures.
    evaluated = evaluate(compose_config("evaluate", [
        *data, f"ckpt_path={lymph_classifier}", "attack=snap", f"attack.patch_path={patch_file}",
    ], tmp_path / "apply"))
    for key in ("test/acc", "test/adv_acc", "test/attack_success_rate", "test/area_fraction"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-6), key


def test_universal_patch_bad_settings_fail_before_training(lymph_classifier, tmp_path):
    from advmed.train import train

    data = [o for o in LYMPH if o != "debug=tiny"]
    with pytest.raises(Exception, match="model.target_class=5 but the classifier has 2 classes"):
        train(compose_config("train", ["experiment=snap/universal", *data, f"model.classifier_ckpt={lymph_classifier}",
                                       "model.target_class=5"], tmp_path / "a"))
    with pytest.raises(Exception, match="model.classifier_ckpt"):
        train(compose_config("train", ["experiment=snap/universal", *data], tmp_path / "b"))


@pytest.mark.skipif(not (REPO_ROOT / "Makefile").is_file(), reason="needs the repository's Makefile")
def test_make_paper_snap_pipeline_at_tiny_sizes_over_two_seeds(tmp_path):
    """The `make paper-snap` recipe itself (train, area sweep, aggregation into one table), seconds-long,
    with SEEDS=0,1: the recipe once per seed into <dir>_seeds/seed_<s>/, then the table over the seeds."""
    tiny = " ".join(["debug=tiny", "data.image_size=32", "data.train_per_class=32", "data.val_per_class=4",
                     "data.test_per_class=4", "data.batch_size=16", "attack.steps=2", "trainer.max_epochs=1"])
    out = tmp_path / "paper_snap"
    proc = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed-stamp", "paper-snap", f"PY={sys.executable}", "SEEDS=0,1",
         f"PAPER_SNAP_DIR={out}", f"PAPER_SNAP_ARGS={tiny}", "PAPER_SNAP_AREAS=0.05,0.1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT), "WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seeds_dir = tmp_path / "paper_snap_seeds"
    accuracies = {}
    for seed in ("0", "1"):
        run = seeds_dir / f"seed_{seed}"
        assert f"seed: {seed}\n" in (run / "train" / ".hydra" / "config.yaml").read_text()  # the seed reached training
        table = (run / "area_fraction_sweep.csv").read_text().splitlines()
        assert table[0].startswith("area_fraction,test/acc,test/adv_acc,test/attack_success_rate,test/area_fraction")
        covered = [float(row.split(",")[4]) for row in table[1:]]
        assert len(covered) == 2 and covered[0] <= 0.05 < covered[1] <= 0.1
        accuracies[seed] = [float(row.split(",")[2]) for row in table[1:]]
        headline = json.loads((run / "metrics.json").read_text())
        assert headline["headline"] == {"attack.area_fraction": "0.1"}
        metrics = read_metrics(run)
        for key in ("test/acc", "test/adv_acc", "test/area_fraction"):
            assert 0.0 <= metrics[key] <= 1.0, key
        success = metrics["test/attack_success_rate"]  # NaN when a tiny model gets no metastasis tile right
        assert 0.0 <= success <= 1.0 or (math.isnan(success) and metrics["test/adv_acc"] == metrics["test/acc"])
        assert metrics["test/area_fraction"] == pytest.approx(covered[1])
        assert (run / "area_fraction_sweep.md").is_file() and (run / "accuracy_vs_area_fraction.png").stat().st_size > 1000
    over = read_csv(seeds_dir / "area_fraction_sweep_over_seeds.csv")
    assert [r["area_fraction"] for r in over] == ["0.05", "0.1"] and all(r["n"] == "2" for r in over)
    for i, row in enumerate(over):
        pair = [accuracies["0"][i], accuracies["1"][i]]
        assert float(row["test/adv_acc_mean"]) == pytest.approx(sum(pair) / 2)
        assert float(row["test/adv_acc_sd"]) == pytest.approx(abs(pair[0] - pair[1]) / 2 ** 0.5)
    per_seed = read_csv(seeds_dir / "area_fraction_sweep_per_seed.csv")
    assert [r["seed"] for r in per_seed] == ["0", "0", "1", "1"]
    assert "± " in (seeds_dir / "area_fraction_sweep_over_seeds.md").read_text()
    assert not out.exists()  # the one-seed folder is left alone
