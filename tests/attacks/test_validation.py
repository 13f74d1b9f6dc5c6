"""Argument validation, input checks, and building attacks from the Hydra configs."""

from __future__ import annotations

import inspect

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import advmed.attacks as attacks
from advmed.attacks.core.base import Attack
from advmed.attacks.core.iterative import IterativeAttack
from tests.attacks.conftest import ATTACKS, make_attack
from tests.conftest import CONFIG_DIR

ITERATIVE = [attacks.BIM, attacks.PGD, attacks.PGDL2]
LINF = [c for c in ATTACKS if c.norm == "linf"]


@pytest.mark.parametrize("cls", LINF, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("eps", "match"),
    [
        (-0.1, r"eps must be in \[0, 1\].*got -0.1"),
        (8, r"eps must be in \[0, 1\].*got 8 \(did you mean 8/255\?\)"),
        (float("nan"), "eps must be finite"),
        ("abc", "eps must be a number"),
        (None, "eps must be a number"),
    ],
)
def test_linf_eps_range(cls, eps, match):
    with pytest.raises(ValueError, match=match):
        make_attack(cls, eps=eps)


def test_eps_accepts_fractions_as_strings():
    assert attacks.PGD(eps="8/255").eps == pytest.approx(8 / 255)
    assert attacks.FGSM(eps=0).eps == 0.0


def test_l2_eps_is_a_radius_of_any_size():
    assert attacks.PGDL2(eps=3.0).eps == 3.0
    with pytest.raises(ValueError, match=r"eps must be >= 0.*got -1"):
        attacks.PGDL2(eps=-1)


@pytest.mark.parametrize("cls", ITERATIVE, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, r"steps must be an integer >= 1, got 0"),
        ({"steps": 2.5}, r"steps must be an integer >= 1, got 2.5"),
        ({"alpha": 0}, r"alpha must be > 0.*got 0"),
        ({"alpha": -0.1}, r"alpha must be > 0.*got -0.1"),
        ({"fooled_fraction": 0}, r"fooled_fraction must be in \(0, 1\], got 0"),
    ],
)
def test_iterative_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_attack(cls, **kwargs)


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "l1"}, r"loss must be one of \(.*\).*got 'l1'"),  # each attack lists the losses it takes
        ({"amp_dtype": "fp8"}, r"amp_dtype must be one of \['bf16', 'fp16'\] or null, got 'fp8'"),
        ({"target_class": -1, "targeted": True}, r"target_class must be a class index >= 0.*got -1"),
        ({"target_class": 2}, r"target_class=2 needs targeted=true"),
        ({"loss_classes": []}, r"loss_classes must be a non-empty list"),
        ({"loss_classes": [1, -2]}, r"loss_classes must hold class indices >= 0, got \[1, -2\]"),
    ],
)
def test_common_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_attack(cls, **kwargs)


@pytest.mark.parametrize("cls", [attacks.PGD, attacks.PGDL2], ids=lambda c: c.__name__)
def test_seed_must_be_an_integer(cls):
    with pytest.raises(ValueError, match="seed must be an integer or null, got 'x'"):
        make_attack(cls, seed="x")


def test_default_step_rules():
    assert attacks.PGD(eps=8 / 255, steps=10).alpha == pytest.approx(2 / 255)  # 2.5 * eps / steps
    assert attacks.PGDL2(eps=1.0, steps=5).alpha == pytest.approx(0.5)
    assert attacks.BIM(eps=0.04, steps=10).alpha == pytest.approx(0.005)  # 1.25 * eps / steps
    assert attacks.PGD(eps=0.1, alpha=0.01, steps=10).alpha == 0.01


@pytest.mark.parametrize("cls", ATTACKS, ids=lambda c: c.__name__)
def test_input_outside_unit_range_mentions_normalisation(cls, classifier, cls_batch):
    x, y = cls_batch
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\].*normalisation.*inside the model"):
        make_attack(cls)(classifier, (x - 0.5) / 0.25, y)


def test_input_checks(classifier, segmenter, cls_batch, seg_batch):
    x, y = cls_batch
    xs, ys = seg_batch
    fgsm = attacks.FGSM(eps=0.03)
    with pytest.raises(ValueError, match=r"x must be a float tensor of shape \(N, C, H, W\)"):
        fgsm(classifier, x[0], y)
    with pytest.raises(ValueError, match=r"x must be a float tensor"):
        fgsm(classifier, (x * 255).to(torch.uint8), y)
    with pytest.raises(ValueError, match=r"y must be integer labels.*N=8"):
        fgsm(classifier, x, y[:4])
    with pytest.raises(ValueError, match=r"y must be integer labels"):
        fgsm(classifier, x, y.float())
    with pytest.raises(
        ValueError,
        match=r"y has shape \(8, 12, 12\) but the model's logits \(8, 4\) need labels of shape \(8,\)",
    ):
        fgsm(classifier, x, torch.zeros(8, 12, 12, dtype=torch.long))
    with pytest.raises(ValueError, match=r"y has shape \(4,\) but the model's logits \(4, 3, 10, 10\)"):
        fgsm(segmenter, xs, ys[:, 0, 0])
    with pytest.raises(ValueError, match=r"y holds labels in \[0, 9\], outside \[0, 3\]"):
        fgsm(classifier, x, torch.full_like(y, 9).index_fill(0, torch.tensor([0]), 0))
    with pytest.raises(ValueError, match=r"mask must be a bool tensor shaped like y"):
        fgsm(segmenter, xs, ys, mask=torch.ones(4, 10, 10))
    with pytest.raises(ValueError, match=r"loss='dice' needs segmentation logits"):
        attacks.FGSM(eps=0.03, loss="dice")(classifier, x, y)
    with pytest.raises(ValueError, match=r"loss_classes=\[5\] has classes >= K=3"):
        attacks.FGSM(eps=0.03, loss_classes=[5])(segmenter, xs, ys)


def test_target_checks(classifier, cls_batch):
    x, y = cls_batch
    with pytest.raises(ValueError, match="target labels were given but the attack is untargeted"):
        attacks.PGD(eps=0.03)(classifier, x, y, target=y)
    with pytest.raises(ValueError, match="a targeted attack needs target labels"):
        attacks.PGD(eps=0.03, targeted=True)(classifier, x, y)
    with pytest.raises(ValueError, match=r"target must be integer labels shaped like y \(8,\)"):
        attacks.PGD(eps=0.03, targeted=True)(classifier, x, y, target=y[:2])
    with pytest.raises(ValueError, match=r"target holds labels in \[7, 7\], outside \[0, 3\]"):
        attacks.PGD(eps=0.03, targeted=True, target_class=7)(classifier, x, y)


# --------------------------------------------------------------------------- configs

CONFIGS = {
    "fgsm": attacks.FGSM,
    "inverse_fgsm": attacks.InverseFGSM,
    "bim": attacks.BIM,
    "pgd": attacks.PGD,
    "pgd_l2": attacks.PGDL2,
    "snap": attacks.SNAP,
}


def _constructor_args(cls) -> set[str]:
    bases = [cls, Attack] + ([IterativeAttack] if issubclass(cls, IterativeAttack) else [])
    names = {name for base in bases for name in inspect.signature(base.__init__).parameters}
    if "eps" not in inspect.signature(cls.__init__).parameters:
        names.discard("eps")  # SNAP: the budget is the mask, eps is fixed
    return names - {"self", "kwargs", "common"}


@pytest.mark.parametrize(("name", "cls"), CONFIGS.items())
def test_config_lists_every_constructor_arg_and_builds(name, cls):
    cfg = OmegaConf.load(CONFIG_DIR / "attack" / f"{name}.yaml")
    assert set(cfg) - {"_target_"} == _constructor_args(cls)
    attack = attacks.build_attack(cfg)
    assert type(attack) is cls
    if isinstance(attack, IterativeAttack):
        assert cfg.alpha is None and attack.alpha > 0


def test_none_config_and_empty_mean_no_attack():
    assert attacks.build_attack(None) is None
    assert attacks.build_attack({}) is None
    assert attacks.build_attack(OmegaConf.load(CONFIG_DIR / "attack" / "none.yaml")) is None


def test_command_line_overrides_through_hydra():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            overrides=["+attack=pgd", "attack.eps=8/255", "attack.steps=20", "attack.loss_classes=[1,2]"]
        )
        attack = attacks.build_attack(cfg.attack)
        assert attack.eps == pytest.approx(8 / 255) and attack.alpha == pytest.approx(2.5 * 8 / 255 / 20)
        assert attack.loss_classes == (1, 2)
        assert attacks.build_attack(compose(overrides=["+attack=none"]).attack) is None


def test_attack_values_without_an_attack_are_a_clear_error():
    with pytest.raises(ValueError, match=r"names no attack \(_target_\): choose one with attack=<name>"):
        attacks.build_attack({"steps": 2})
