"""The objective group from config to a trained model: every option composes and builds, the
entry point hands the objective to the modules that take one, a NaN stops or skips the step as
``nonfinite_loss`` says, and tiny runs of TRADES on the classifier and the U-Net train and report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from advmed.models import ClassifierModule
from advmed.models.segmentation import SegmentationModule
from advmed.objectives import FGSMRS, MART, PGDAT, TRADES, Mixed, build_objective
from tests.conftest import CONFIG_DIR
from tests.entrypoints.conftest import TINY, compose_config

OPTIONS = sorted(p.stem for p in (CONFIG_DIR / "objective").glob("*.yaml"))


def test_every_option_composes_resolves_and_builds_from_its_own_file(tmp_path):
    assert OPTIONS == ["fgsm_rs", "mart", "mixed", "pgd_at", "standard", "trades"]
    for option in OPTIONS:
        cfg = compose_config("train", [f"objective={option}"], tmp_path / option)
        objective = build_objective(OmegaConf.to_container(cfg.objective, resolve=True))
        assert objective.name == option
        assert type(objective).__module__ == f"advmed.objectives.{option}"  # conf/objective/x.yaml builds objectives/x.py


def test_the_default_objective_is_standard(tmp_path):
    from advmed.train import build_model

    cfg = compose_config("train", [*TINY], tmp_path)
    assert cfg.objective._target_ == "advmed.objectives.Standard"
    assert type(build_model(cfg).objective).__name__ == "Standard"


def test_the_entry_point_hands_the_objective_and_its_settings_to_the_module(tmp_path):
    from advmed.train import build_model

    cfg = compose_config("train", [*TINY, "objective=mart", "objective.beta=2.5", "attack@train_attack=pgd",
                                   "train_attack.steps=3"], tmp_path)
    model = build_model(cfg)
    assert isinstance(model.objective, MART) and model.objective.beta == 2.5
    assert model.train_attack.steps == 3  # the configured attack, not a default PGD


def test_a_model_that_trains_with_its_own_losses_refuses_any_objective_but_the_default(tmp_path):
    from advmed.train import build_model

    cfg = compose_config("train", ["experiment=lockshin/srgan_tiny", "objective=trades"], tmp_path)
    with pytest.raises(ValueError, match=r"objective=trades: advmed.models.srgan.SRGANModule trains with its own "
                                         r"losses and takes no objective; drop the objective override"):
        build_model(cfg)


@pytest.mark.parametrize("objective", [TRADES(steps=2), MART(steps=2), PGDAT(steps=2), FGSMRS()], ids=lambda o: o.name)
def test_a_nan_pixel_stops_the_run_naming_the_step_or_skips_the_batch(objective):
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    x[0, 0, 0, 0] = float("nan")
    module = ClassifierModule("resnet18", num_classes=3, objective=objective).train()
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 0, step 0"):
        module.training_step((x, y), 0)
    module.set_nonfinite_loss("skip")
    assert module.training_step((x, y), 0) is None and module.skipped_batches == 1


def test_a_segmenter_trains_one_step_with_every_objective():
    x, y = torch.rand(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    for objective in (TRADES(steps=2), MART(steps=2), PGDAT(steps=2), FGSMRS(variant="n_fgsm"), Mixed(0.0)):
        module = SegmentationModule(num_classes=3, in_channels=1, base_width=4, depth=2, objective=objective).train()
        loss = module.training_step((x, y), 0)
        assert torch.isfinite(loss) and loss.requires_grad, objective.name
        assert all(p.grad is None for p in module.parameters()), objective.name  # the inner loops left none


# Seconds-long: one epoch of two batches, two inner steps.
SHORT = ["trainer.max_epochs=1", "objective.steps=2"]


def _finite(metrics: dict[str, float], *names: str) -> None:
    for name in names:
        assert name in metrics and math.isfinite(metrics[name]), (name, metrics)


def _run(overrides: list[str], tmp_path: Path) -> dict[str, float]:
    from advmed.train import train

    return train(compose_config("train", overrides, tmp_path))


def test_trades_trains_the_demo_classifier_and_reports(tmp_path):
    metrics = _run(["experiment=demo", *TINY, *SHORT, "objective=trades", "+trainer.limit_train_batches=2",
                    "attack=fgsm", "attack.eps=0.03"], tmp_path)
    _finite(metrics, "train/loss", "train/natural_loss", "train/robust_loss", "test/acc", "test/adv_acc")
    assert (tmp_path / "report.md").is_file()


def test_trades_trains_the_unet_on_synthetic_ct_and_reports(tmp_path):
    metrics = _run(["model=unet", "data=synthetic_ct", *TINY, *SHORT, "objective=trades", "attack=fgsm",
                    "attack.eps=0.03"], tmp_path)
    _finite(metrics, "train/loss", "train/natural_loss", "train/robust_loss", "test/dice", "test/adv_dice")
    assert (tmp_path / "report.md").is_file()


def test_segpgd_at_and_mart_train_the_unet(tmp_path):
    at = _run(["model=unet", "data=synthetic_ct", *TINY, "trainer.max_epochs=1", "objective=pgd_at",
               "attack@train_attack=segpgd", "train_attack.steps=2", "attack=none"], tmp_path / "segpgd_at")
    _finite(at, "train/loss", "test/dice")
    mart = _run(["model=unet", "data=synthetic_ct", *TINY, *SHORT, "objective=mart", "attack=none"], tmp_path / "mart")
    _finite(mart, "train/loss", "train/adversarial_loss", "train/robust_loss", "test/dice")


def test_instantiate_leaves_the_module_config_unchanged(tmp_path):
    """The objective is not a model key: ``cfg.model`` still builds a module on its own (as evaluate does)."""
    cfg = compose_config("train", [*TINY, "objective=trades"], tmp_path)
    assert "objective" not in cfg.model
    assert isinstance(instantiate(cfg.model, _recursive_=False), ClassifierModule)
