"""Two-process CPU DDP (gloo) through ``trainer=ddp``, launched as a user would: the ranks end with
the same weights, reports are written once, and the synced test metrics equal a single-process
test of the same checkpoint on the same data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.entrypoints.conftest import read_metrics, run_module

pytestmark = pytest.mark.cluster

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
# The whole test split (an even size, so DistributedSampler pads nothing) in both runs.
WHOLE_TEST = ["++trainer.limit_test_batches=1.0"]
CLASSIFIER = ["experiment=demo", "debug=tiny", "trainer.max_epochs=1", "data.test_per_class=4",
              "attack@train_attack=fgsm", "train_attack.eps=0.03", "model.adv_fraction=0.5",
              "attack=fgsm", "attack.eps=0.03"]
SEGMENTER = ["experiment=pervin/unet", "data.image_size=32", "model.depth=2", "model.base_width=8", "data.batch_size=4",
             "data.train_fraction=0.3", "trainer.max_epochs=1", "++trainer.limit_val_batches=2",
             "trainer.enable_progress_bar=false", "attack=fgsm", "attack.eps=0.1",
             "callbacks.adversarial_examples.num_images=2"]


def _fit_with_ddp(args: list[str], tmp_path: Path) -> Path:
    run = tmp_path / "ddp"
    run_module("advmed.train", [*args, *DDP, *WHOLE_TEST, f"hydra.run.dir={run}",
                                "+callbacks.probe._target_=tests.entrypoints.ddp_probe.WeightsPerRank",
                                f"+callbacks.probe.output_dir={run}"], cwd=tmp_path)
    return run


def _check_ranks_agree(run: Path) -> None:
    ranks = [torch.load(run / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["state"].keys() == ranks[1]["state"].keys()
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), f"rank 1 holds another {key}"
    # Not the initial weights: the ranks trained, in step.
    assert any(v.is_floating_point() and v.abs().sum() > 0 for v in ranks[0]["state"].values())


def _check_written_once(run: Path) -> None:
    report = json.loads((run / "metrics.json").read_text())
    assert Path(report["ckpt_path"]).name == "best.ckpt"
    assert len((run / "history.csv").read_text().splitlines()) == 2  # header + one epoch, not one per rank
    assert json.loads((run / "status.json").read_text())["status"] == "completed"


def _check_metrics_equal_single_process(run: Path, args: list[str], tmp_path: Path, keys: list[str]) -> None:
    single = tmp_path / "single"
    run_module("advmed.evaluate", [*args, *WHOLE_TEST, f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}",
                                   f"hydra.run.dir={single}"], cwd=tmp_path)
    ddp, one = read_metrics(run), read_metrics(single)
    for key in keys:
        assert ddp[key] == pytest.approx(one[key], abs=1e-6), key


def test_ddp_adversarial_training_of_the_classifier_keeps_the_ranks_in_step(tmp_path):
    run = _fit_with_ddp(CLASSIFIER, tmp_path)
    _check_ranks_agree(run)
    _check_written_once(run)
    evaluate_args = ["experiment=demo", "debug=tiny", "data.test_per_class=4", "attack=fgsm", "attack.eps=0.03"]
    _check_metrics_equal_single_process(run, evaluate_args, tmp_path,
                                        ["test/acc", "test/adv_acc", "test/loss", "test/linf", "test/l2"])


def test_ddp_training_of_the_segmenter_keeps_the_ranks_in_step(tmp_path):
    run = _fit_with_ddp(SEGMENTER, tmp_path)
    _check_ranks_agree(run)
    _check_written_once(run)
    evaluate_args = ["data=synthetic_ct", "data.image_size=32", "data.batch_size=4", "attack=fgsm", "attack.eps=0.1",
                     "callbacks.adversarial_examples.num_images=2"]
    _check_metrics_equal_single_process(run, evaluate_args, tmp_path, ["test/dice", "test/adv_dice", "test/loss"])


@pytest.mark.parametrize("objective", ["trades", "fgsm_rs"])
def test_ddp_robust_objectives_keep_the_ranks_in_step(objective, tmp_path):
    """TRADES (its inner KL maximisation) and FGSM-RS with the overfitting guard (PGD checks whose
    counts are summed over the ranks) under two-process DDP: the ranks end with the same weights, and
    the guard's verdict is written once, from a check over the whole held batch."""
    args = ["experiment=demo", "debug=tiny", "trainer.max_epochs=1", "data.test_per_class=4", f"objective={objective}",
            "objective.eps=0.03", "attack=fgsm", "attack.eps=0.03"]
    if objective == "fgsm_rs":
        args += ["callbacks.overfitting_guard.num_samples=32", "callbacks.overfitting_guard.steps=3"]
    run = _fit_with_ddp(args, tmp_path)
    _check_ranks_agree(run)
    _check_written_once(run)
    metrics = read_metrics(run)
    if objective == "trades":  # the KL term was computed (and logged once, synced over the ranks)
        assert metrics["train/robust_loss"] >= 0
    else:
        assert metrics["guard/checks"] == 1 and metrics["guard/catastrophic_overfitting"] == 0
        assert 0 <= metrics["guard/best_pgd_acc"] <= 1 and metrics["guard/eps"] == pytest.approx(0.03)
