"""Bad settings: one clear message each, naming the value and the fix, at build time."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from advmed.attacks import FGSM, PGD
from advmed.models import ClassifierModule
from advmed.models.segmentation import SegmentationModule
from advmed.objectives import FGSMRS, MART, PGDAT, TRADES, Mixed, Objective, Standard, build_objective


def _classifier(**kwargs) -> ClassifierModule:
    return ClassifierModule("resnet18", num_classes=3, **kwargs)


def _segmenter(**kwargs) -> SegmentationModule:
    return SegmentationModule(num_classes=3, in_channels=1, base_width=4, depth=2, **kwargs)


@pytest.mark.parametrize("make, match", [
    (lambda: TRADES(beta=-1), r"objective.beta=-1 must be >= 0"),
    (lambda: MART(beta=-0.5), r"objective.beta=-0.5 must be >= 0"),
    (lambda: TRADES(eps=8), r"objective.eps=8 must be in \[0, 1\].*did you mean 8/255\?"),
    (lambda: PGDAT(eps=-0.1), r"objective.eps=-0.1 must be in \[0, 1\]"),
    (lambda: MART(alpha=2.0), r"objective.alpha=2 must be in \[0, 1\]"),
    (lambda: FGSMRS(alpha=-0.01), r"objective.alpha=-0.01 must be in \[0, 1\]"),
    (lambda: FGSMRS(noise=1.5), r"objective.noise=1.5 must be in \[0, 1\]"),
    (lambda: FGSMRS(variant="free"), r"objective.variant='free' must be one of rs, n_fgsm"),
    (lambda: TRADES(steps=0), r"objective.steps=0 must be an integer >= 1"),
    (lambda: TRADES(eps="eight"), r"objective.eps must be a number, got 'eight'"),
    (lambda: Mixed(fraction=1.5), r"objective.fraction=1.5 must be in \[0, 1\]"),
    (lambda: Standard(ignore_index="void"), r"objective.ignore_index='void' must be an integer label"),
])
def test_bad_values_are_refused_naming_the_key(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_budgets_accept_the_fractions_hydra_passes():
    assert TRADES(eps="8/255").eps == pytest.approx(8 / 255)


@pytest.mark.parametrize("objective, name", [(TRADES(), "trades"), (FGSMRS(), "fgsm_rs")])
def test_an_objective_that_makes_its_own_images_refuses_a_training_attack_it_would_not_use(objective, name):
    with pytest.raises(ValueError, match=rf"objective={name} makes its own x'.*attack@train_attack \(PGD\) would go "
                                         r"unused: drop it \(attack@train_attack=none\)"):
        _classifier(objective=objective, train_attack=PGD(eps=0.03))


@pytest.mark.parametrize("objective, says", [
    (TRADES(steps=3), r"objective=trades: x' from its own inner attack, 3 sign steps .* KL\(p\(x\) \|\| p\(x'\)\)"),
    (FGSMRS(), r"objective=fgsm_rs \(rs\): x' from its own inner attack, one sign step"),
])
def test_an_objective_with_its_own_inner_attack_says_which(objective, says, caplog):
    with caplog.at_level(logging.INFO, logger="advmed.objectives"):
        module = _classifier(objective=objective)
    assert module.train_attack is None
    assert any(re.search(says, r.getMessage()) for r in caplog.records), caplog.text


@pytest.mark.parametrize("objective", [PGDAT(eps=0.05, steps=3), MART(eps=0.05, steps=3)], ids=lambda o: o.name)
def test_pgd_at_and_mart_without_a_training_attack_build_a_pgd_and_say_so(objective, caplog):
    with caplog.at_level(logging.WARNING, logger="advmed.objectives"):
        module = _classifier(objective=objective)
    assert isinstance(module.train_attack, PGD)
    assert (module.train_attack.eps, module.train_attack.steps) == (0.05, 3)
    assert f"objective={objective.name}: attack@train_attack is none, so it trains against PGD(eps=0.05" in caplog.text
    assert "attack@train_attack=pgd" in caplog.text
    configured = FGSM(eps=0.02)
    assert _classifier(objective=objective, train_attack=configured).train_attack is configured


def test_mixed_needs_a_training_attack():
    with pytest.raises(ValueError, match=r"objective=mixed \(objective.fraction=0.5\) needs a training attack: set "
                                         r"attack@train_attack=fgsm"):
        _classifier(objective=Mixed(0.5))
    assert _classifier(objective=Mixed(0.0)).train_attack is None


def test_a_segmentation_setting_on_a_classifier_is_refused():
    with pytest.raises(ValueError, match=r"objective.ignore_index=255 is a segmentation setting .* classifier .* "
                                         r"set objective.ignore_index=null"):
        _classifier(objective=TRADES(ignore_index=255))
    _segmenter(objective=TRADES(ignore_index=255))  # fits


class _SegmentationOnly(Standard):
    name = "segmentation_only"
    tasks = ("segmentation",)


class _ClassificationOnly(Standard):
    name = "classification_only"
    tasks = ("classification",)


def test_an_objective_for_the_other_task_is_refused_when_the_module_is_built():
    with pytest.raises(ValueError, match=r"objective=segmentation_only trains segmentation models, not this "
                                         r"classification model: choose an objective for classification"):
        _classifier(objective=_SegmentationOnly())
    with pytest.raises(ValueError, match=r"objective=classification_only trains classification models, not this "
                                         r"segmentation model"):
        _segmenter(objective=_ClassificationOnly())


def test_adv_fraction_is_the_standard_objectives_spelling_of_mixed():
    module = _classifier(adv_fraction=0.25, train_attack=FGSM(eps=0.1))
    assert isinstance(module.objective, Mixed) and module.objective.fraction == 0.25
    assert isinstance(_classifier().objective, Standard)
    with pytest.raises(ValueError, match=r"model.adv_fraction=0.5 is the standard objective's spelling of "
                                         r"objective=mixed, but objective=trades: set model.adv_fraction=0"):
        _classifier(adv_fraction=0.5, objective=TRADES())


def test_adv_fraction_and_objective_mixed_train_bit_for_bit_alike():
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 3, (6,))
    losses = []
    for kwargs in ({"adv_fraction": 0.5}, {"objective": Mixed(0.5)}):
        torch.manual_seed(1)
        module = _classifier(train_attack=FGSM(eps=0.1), **kwargs).train()
        losses.append(module.training_step((x, y), 0))
    assert torch.equal(losses[0], losses[1])


def test_a_module_restored_from_its_checkpoint_gets_the_standard_objective(tmp_path):
    import lightning as L

    from advmed.models import load_module

    module = _classifier(objective=MART(steps=2))
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "mart.ckpt")
    assert "objective" not in torch.load(tmp_path / "mart.ckpt", weights_only=True)["hyper_parameters"]
    restored = load_module(tmp_path / "mart.ckpt")
    assert type(restored.objective) is Standard and restored.train_attack is None


def test_an_objective_config_without_a_target_is_refused():
    assert build_objective(None) is None and build_objective({}) is None
    with pytest.raises(ValueError, match=r"names no objective \(_target_\): choose one with objective=<name> "
                                         r"\(standard, mixed, pgd_at, trades, mart, fgsm_rs\)"):
        build_objective({"beta": 6})
    assert isinstance(build_objective({"_target_": "advmed.objectives.TRADES", "beta": 1}), Objective)
