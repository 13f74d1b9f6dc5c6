"""CosPGD (Agnihotri et al. 2024): the cosine weight by hand and detached, the masked objective, its
strength against PGD on a trained toy segmenter, classification behaviour and the config. Budget,
[0, 1], mode and gradient contracts run in test_properties.py (CosPGD is in ``advmed.attacks.__all__``)."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import advmed.attacks as attacks
from advmed.attacks import PGD, PGDL2, CosPGD
from advmed.attacks.core.base import Attack
from advmed.attacks.core.iterative import IterativeAttack
from advmed.attacks.cospgd import CosPGDObjective, cospgd_weight
from tests.attacks.conftest import budget, miou_and_pixel_accuracy
from tests.conftest import CONFIG_DIR


def _small() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 2, 2, generator=g) * 2, torch.randint(0, 3, (2, 2, 2), generator=g)


def test_weight_is_the_cosine_of_softmax_and_one_hot():
    logits, y = _small()
    probs = logits.softmax(1)
    onehot = F.one_hot(y, 3).movedim(-1, 1).float()
    by_hand = (probs * onehot).sum(1) / (probs.norm(dim=1) * onehot.norm(dim=1))
    assert torch.allclose(cospgd_weight(logits, y), by_hand, atol=1e-6)
    assert torch.allclose(cospgd_weight(logits, y), F.cosine_similarity(probs, onehot, dim=1), atol=1e-6)
    assert torch.allclose(cospgd_weight(logits, y, targeted=True), 1 - by_hand, atol=1e-6)
    # One pixel worked out: logits (0, 0, ln 2) -> p = (1/4, 1/4, 1/2), ||p|| = sqrt(6)/4.
    one = torch.tensor([0.0, 0.0, torch.log(torch.tensor(2.0))]).view(1, 3, 1, 1)
    assert cospgd_weight(one, torch.tensor([[[2]]])).item() == pytest.approx(2 / 6**0.5, rel=1e-6)
    assert cospgd_weight(one, torch.tensor([[[0]]])).item() == pytest.approx(1 / 6**0.5, rel=1e-6)


def test_weight_is_detached_from_the_gradient():
    logits, y = _small()
    logits.requires_grad_(True)
    assert not cospgd_weight(logits, y).requires_grad
    (grad,) = torch.autograd.grad(CosPGDObjective()(logits, y, None).sum(), logits)
    cos = cospgd_weight(logits, y)  # a constant: the gradient is that of the CE scaled by it
    (expected,) = torch.autograd.grad(
        (cos * F.cross_entropy(logits, y, reduction="none")).flatten(1).mean(1).sum(), logits
    )
    assert torch.allclose(grad, expected, atol=1e-7)


def test_objective_by_hand_with_a_mask():
    logits, y = _small()
    mask = torch.tensor([[[1.0, 1.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 1.0]]])
    ce = F.cross_entropy(logits, y, reduction="none")
    cos = cospgd_weight(logits, y)
    expected = (cos * ce * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)
    assert torch.allclose(CosPGDObjective()(logits, y, mask), expected, atol=1e-6)
    assert torch.allclose(
        CosPGDObjective(targeted=True)(logits, y, mask),
        -((1 - cos) * ce * mask).flatten(1).sum(1) / mask.flatten(1).sum(1),
        atol=1e-6,
    )


def test_mask_and_loss_classes_keep_pixels_out_of_the_loss(segmenter, seg_batch):
    x, y = seg_batch
    logits = segmenter(x).detach().requires_grad_(True)
    mask = torch.zeros_like(y, dtype=torch.bool)
    mask[:, :5] = True
    objective = CosPGD(eps=0.03, loss_classes=[1, 2]).objective
    (grad,) = torch.autograd.grad(objective(logits, y, objective.pixel_weight(y, mask)).sum(), logits)
    counted = mask & (y != 0)
    assert (grad.abs().sum(1)[~counted] == 0).all() and (grad.abs().sum(1)[counted] > 0).any()


def test_classification_is_exactly_pgd(classifier, cls_batch):
    # Documented degenerate case: one "pixel" per image, the cosine a positive per-image scale that
    # the sign step removes.
    x, y = cls_batch
    kwargs = {"eps": 0.03, "steps": 3, "seed": 0}
    assert torch.equal(CosPGD(**kwargs)(classifier, x, y), PGD(**kwargs)(classifier, x, y))


def test_segmentation_differs_from_pgd(segmenter, seg_batch):
    x, y = seg_batch
    kwargs = {"eps": 0.03, "steps": 3, "seed": 0}
    assert not torch.equal(CosPGD(**kwargs)(segmenter, x, y), PGD(**kwargs)(segmenter, x, y))


def test_loss_must_be_cross_entropy():
    with pytest.raises(ValueError, match="CosPGD scales the per-pixel.*must be 'ce', got 'dice'"):
        CosPGD(eps=0.03, loss="dice")


@pytest.mark.parametrize("eps", [0.08, 0.1])
def test_lowers_miou_and_accuracy_at_least_as_much_as_pgd(toy_segmentation, eps):
    # Same eps, steps and random start as PGD. (At eps = 0.03, ~2 % of the pixels flipped, the
    # attacks differ by a few pixels either way on this toy.)
    model, x, y = toy_segmentation
    clean_miou, clean_acc = miou_and_pixel_accuracy(model, x, y)
    assert clean_miou > 0.9 and clean_acc > 0.97  # the toy segmenter is accurate
    kwargs = {"eps": eps, "steps": 10, "seed": 0}
    pgd_miou, pgd_acc = miou_and_pixel_accuracy(model, PGD(**kwargs)(model, x, y), y)
    cos_miou, cos_acc = miou_and_pixel_accuracy(model, CosPGD(**kwargs)(model, x, y), y)
    assert pgd_acc < clean_acc - 0.05  # PGD does something: the comparison is not between two no-ops
    assert cos_miou <= pgd_miou and cos_acc <= pgd_acc


def test_config_composes_and_builds():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["attack=cospgd", "attack.eps=0.02"])
    attack = attacks.build_attack(cfg.attack)
    assert type(attack) is CosPGD and attack.eps == pytest.approx(0.02) and attack.steps == 10
    assert attack.alpha == pytest.approx(2.5 * 0.02 / 10)
    # The config lists every constructor argument, as the other attack configs do.
    bases = (CosPGD, PGD, IterativeAttack, Attack)
    names = {n for base in bases for n in inspect.signature(base.__init__).parameters}
    assert set(cfg.attack) - {"_target_"} == names - {"self", "kwargs", "common"}


# --------------------------------------------------------------------------- L2 budget (norm="L2")


def test_l2_keeps_the_l2_budget_and_reports_it(segmenter, seg_batch):
    x, y = seg_batch
    attack = CosPGD(eps=0.5, steps=3, norm="L2", seed=0)
    assert attack.norm == "l2" and CosPGD(eps=0.03).norm == "linf"
    x_adv = attack(segmenter, x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and not torch.equal(x_adv, x)
    assert (budget(x_adv, x, "l2") <= 0.5 * (1 + 1e-5)).all()
    assert budget(x_adv, x, "linf").max() > 0.03  # an L2 step, not a clipped sign step
    assert CosPGD(eps=5.0, norm="l2").eps == 5.0  # an L2 radius may exceed 1
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\]"):
        CosPGD(eps=5.0)
    with pytest.raises(ValueError, match=r"norm must be 'Linf' or 'L2', got 'L1'"):
        CosPGD(eps=0.03, norm="L1")


def test_l2_classification_is_pgd_l2(classifier, cls_batch):
    # The L2 variant is PGD-L2's step and start on the cosine-scaled loss; with one "pixel" per image
    # the scale is a positive per-image factor that the normalised gradient removes (up to float
    # rounding: the scaled gradient's last bits survive the normalisation; L-inf's sign drops them).
    x, y = cls_batch
    kwargs = {"eps": 0.5, "steps": 3, "seed": 0}
    ours, pgd_l2 = CosPGD(norm="L2", **kwargs)(classifier, x, y), PGDL2(**kwargs)(classifier, x, y)
    assert (ours - pgd_l2).abs().max() < 1e-6


@pytest.mark.parametrize("eps", [1.5, 2.0])
def test_l2_lowers_miou_and_accuracy_at_least_as_much_as_pgd_l2(toy_segmentation, eps):
    """Same L2 eps, steps and random start as PGD-L2 (1x24x24 slices: eps = 2 is about an L-inf
    0.08 spread over every pixel). Measured mIoU / accuracy, PGD-L2 vs CosPGD-L2: 0.584 / 0.921 vs
    0.520 / 0.891 at eps = 1.5, 0.497 / 0.889 vs 0.433 / 0.841 at eps = 2 (clean 0.916 / 0.988)."""
    model, x, y = toy_segmentation
    clean_miou, clean_acc = miou_and_pixel_accuracy(model, x, y)
    kwargs = {"eps": eps, "steps": 10, "seed": 0}
    pgd_miou, pgd_acc = miou_and_pixel_accuracy(model, PGDL2(**kwargs)(model, x, y), y)
    cos_miou, cos_acc = miou_and_pixel_accuracy(model, CosPGD(norm="L2", **kwargs)(model, x, y), y)
    assert pgd_acc < clean_acc - 0.05  # PGD-L2 does something: the comparison is not between two no-ops
    assert cos_miou <= pgd_miou and cos_acc <= pgd_acc


def test_l2_config_composes():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["attack=cospgd", "attack.norm=L2", "attack.eps=1.0"])
    attack = attacks.build_attack(cfg.attack)
    assert type(attack) is CosPGD and attack.norm == "l2" and attack.eps == 1.0
    assert attack.alpha == pytest.approx(2.5 * 1.0 / 10)
