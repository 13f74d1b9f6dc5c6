from pathlib import Path

import pytest
import torch

from advmed.models import load_classifier
from tests.entrypoints.conftest import TINY, compose_config, read_metrics


def test_train_writes_checkpoint_metrics_report_and_grid(trained_run):
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()
    metrics = read_metrics(trained_run)
    assert 0.0 <= metrics["test/adv_acc"] <= metrics["test/acc"] <= 1.0
    assert metrics["test/linf"] <= 0.03 + 1e-6
    assert "attack success rate" in (trained_run / "report.md").read_text()
    assert (trained_run / "adversarial_examples.png").stat().st_size > 1000
    # The CSV logger received the metrics and the resolved config.
    assert "test/adv_acc" in next(trained_run.glob("csv/version_*/metrics.csv")).read_text()
    assert "eps: 0.03" in next(trained_run.glob("csv/version_*/hparams.yaml")).read_text()


def test_checkpoint_restores_without_config(trained_run):
    model = load_classifier(trained_run / "checkpoints" / "best.ckpt")
    assert model.hparams.arch == "resnet18"
    assert len(model.hparams.class_names) == 9 and model.hparams.class_names[0] == "ADI"
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 9)
    assert not model.training


def test_same_seed_gives_same_test_metrics_on_cpu(trained_run, tmp_path):
    from advmed.train import train

    again = train(compose_config("train", [*TINY, "attack=fgsm", "attack.eps=0.03"], tmp_path))
    first = read_metrics(trained_run)
    for key in ("test/acc", "test/adv_acc", "test/loss", "val/acc"):
        assert again[key] == first[key], key


def test_adversarial_training_runs_from_command_line_overrides(tmp_path):
    from advmed.train import train

    metrics = train(compose_config(
        "train",
        [*TINY, "trainer.max_epochs=1", "attack@train_attack=fgsm", "train_attack.eps=0.05", "model.adv_fraction=0.5", "attack=none"],
        tmp_path,
    ))
    assert "test/adv_acc" not in metrics  # attack=none: clean test only
    assert 0.0 <= metrics["test/acc"] <= 1.0


def test_training_runs_the_pgd_study_when_configured(tmp_path):
    from advmed.train import train

    metrics = train(compose_config(
        "train",
        ["experiment=pgd_study/synthetic", *TINY, "study.eps=[0.01,0.2]", "study.max_iter=3", "study.max_images=32"],
        tmp_path,
    ))
    study_dir = tmp_path / "pgd_study"
    for name in ("eps_sweep.csv", "iterations.csv", "confidence_bins.csv", "fig3a_success_vs_eps.png"):
        assert (study_dir / name).is_file(), name
    low, high = metrics["study/success_rate/eps=0.01"], metrics["study/success_rate/eps=0.2"]
    assert 0.0 <= low <= high <= 1.0
    assert read_metrics(tmp_path)["study/success_rate/eps=0.2"] == high


def test_bad_data_root_fails_before_anything_is_written(tmp_path):
    import pytest

    from advmed.train import train

    run_dir = tmp_path / "run"
    cfg = compose_config("train", ["data=nct_crc_he", f"data.root={tmp_path / 'missing'}"], run_dir)
    with pytest.raises(Exception, match="does not exist.*Zenodo record 1214456"):
        train(cfg)
    assert list(run_dir.iterdir()) == []


def test_report_lists_known_metrics_then_any_other_test_metric():
    from advmed.studies.robustness_report import robustness_rows

    rows = robustness_rows({"test/adv_acc": 0.2, "test/acc": 0.9, "test/hausdorff": 7.0, "val/acc": 0.8})
    assert rows == [["clean accuracy", 0.9], ["adversarial accuracy", 0.2], ["test/hausdorff", 7.0]]


def test_report_puts_per_class_segmentation_scores_in_their_own_table():
    from advmed.studies.robustness_report import per_class_rows, robustness_rows

    metrics = {"test/dice": 0.8, "test/adv_dice": 0.5, "test/dice_drop": 0.3, "test/dice_liver": 0.9,
               "test/adv_dice_liver": 0.6, "test/dice_drop_liver": 0.3, "test/dice_spleen": 0.7, "test/iou_spleen": 0.55}
    assert robustness_rows(metrics) == [["clean mean Dice (organs)", 0.8], ["adversarial mean Dice", 0.5],
                                        ["Dice drop (clean - adversarial)", 0.3]]
    columns, rows = per_class_rows(metrics)
    assert columns == ["class", "dice", "adv_dice", "dice_drop", "iou"]
    assert rows == [["liver", 0.9, 0.6, 0.3, ""], ["spleen", 0.7, "", "", 0.55]]


def test_the_test_step_runs_autoattack_and_reports_each_attack(tmp_path):
    """`advmed.train attack=autoattack`: the test step after fit gives the same per-attack figures as
    advmed.evaluate, and report.md carries the ensemble's notes (iterations and queries cut for the test)."""
    import json

    from advmed.train import train

    metrics = train(compose_config(
        "train", [*TINY, "trainer.max_epochs=1", "attack=autoattack", "attack.eps=0.05", "attack.steps=2",
                  "attack.n_queries=10"], tmp_path))
    after = [metrics[f"test/acc_after_{name}"] for name in ("apgd_ce", "apgd_t", "fab_t", "square")]
    assert metrics["test/acc"] >= after[0] and after == sorted(after, reverse=True)
    assert after[-1] == pytest.approx(metrics["test/adv_acc"])
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["notes"] and record["notes"][0] in (tmp_path / "report.md").read_text()


def test_a_multirun_over_eps_fractions_builds_one_attack_per_value():
    """`attack.eps=1/255,2/255,4/255` on the command line: Hydra's sweep gives three jobs, and each
    job's attack reads its fraction (as `python -m advmed.evaluate -m ... attack=autoattack` would)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.utils import instantiate

    (sweep,) = OverridesParser.create().parse_overrides(["attack.eps=1/255,2/255,4/255"])
    values = list(sweep.sweep_string_iterator())
    assert values == ["1/255", "2/255", "4/255"]
    for value, expected in zip(values, (1 / 255, 2 / 255, 4 / 255)):
        cfg = compose_config("evaluate", [*TINY, "attack=autoattack", f"attack.eps={value}"], Path("."))
        assert instantiate(cfg.attack).eps == pytest.approx(expected)
