"""SegPGD (Gu et al. 2022): the lambda_t weighting, its reduction to PGD, its strength against PGD on a
trained toy segmenter, classification behaviour and the config. Budget, [0, 1], mode and gradient
contracts run in test_properties.py (SegPGD is in ``advmed.attacks.__all__``)."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import advmed.attacks as attacks
import advmed.attacks.segpgd as segpgd
from advmed.attacks import PGD, PGDL2, SegPGD
from advmed.attacks.core.base import Attack
from advmed.attacks.core.iterative import IterativeAttack
from advmed.attacks.segpgd import SegPGDObjective, segpgd_lambda, segpgd_weight
from tests.attacks.conftest import budget, miou_and_pixel_accuracy
from tests.conftest import CONFIG_DIR


def _hand_made() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (1, 3, 1, 4) predicting [0, 1, 0, 2] for labels [0, 1, 2, 0]: right, right, wrong, wrong."""
    per_pixel = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.5, 1.0], [0.0, 0.5, 1.5]])
    return per_pixel.T.reshape(1, 3, 1, 4), torch.tensor([[[0, 1, 2, 0]]])


def test_hand_made_logits_give_the_paper_weights():
    logits, y = _hand_made()
    assert logits.argmax(1).tolist() == [[[0, 1, 0, 2]]]
    steps = 5
    # t = 0: lambda = 0, the misclassified pixels drop out of the loss.
    assert segpgd_weight(logits, y, 0, steps).tolist() == [[[1.0, 1.0, 0.0, 0.0]]]
    # Last step: lambda = (T - 1) / (2T) = 0.4.
    assert segpgd_lambda(steps - 1, steps) == pytest.approx((steps - 1) / (2 * steps))
    assert torch.allclose(segpgd_weight(logits, y, steps - 1, steps), torch.tensor([[[0.6, 0.6, 0.4, 0.4]]]))
    # Targeted (y read as the target): pixels already at the target get lambda.
    assert segpgd_weight(logits, y, 0, steps, targeted=True).tolist() == [[[0.0, 0.0, 1.0, 1.0]]]


def test_objective_by_hand_with_a_mask():
    logits, y = _hand_made()
    mask = torch.tensor([[[1.0, 0.0, 1.0, 1.0]]])  # pixel 1 left out of the loss
    steps, step = 4, 2
    lam = step / (2 * steps)
    ce = F.cross_entropy(logits, y, reduction="none")[0, 0]
    expected = ((1 - lam) * ce[0] + lam * ce[2] + lam * ce[3]) / 3  # averaged over the 3 counted pixels
    value = SegPGDObjective(steps)(logits, y, mask, step=step)
    assert value.shape == (1,) and value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert SegPGDObjective(steps, targeted=True)(logits, y, mask, step=step).item() == pytest.approx(
        -((lam * ce[0] + (1 - lam) * ce[2] + (1 - lam) * ce[3]) / 3).item(), rel=1e-6
    )


def test_weights_follow_the_schedule_during_the_attack(monkeypatch, segmenter, seg_batch):
    x, y = seg_batch
    seen = []

    def spy(logits, labels, step, steps, targeted=False):
        w = segpgd_weight(logits, labels, step, steps, targeted)
        seen.append((step, logits.detach().argmax(1) == labels, w))
        return w

    monkeypatch.setattr(segpgd, "segpgd_weight", spy)
    steps = 5
    SegPGD(eps=0.03, steps=steps, seed=0)(segmenter, x, y)
    assert [s for s, _, _ in seen] == list(range(steps))
    _, correct, w0 = seen[0]
    assert correct.any() and (~correct).any()
    assert (w0[correct] == 1).all() and (w0[~correct] == 0).all()
    _, correct, w_last = seen[-1]
    lam = (steps - 1) / (2 * steps)
    assert torch.allclose(w_last[correct], torch.tensor(1 - lam))
    assert torch.allclose(w_last[~correct], torch.tensor(lam))


def test_one_step_with_all_pixels_correct_is_pgd(segmenter, seg_batch):
    x, _ = seg_batch
    with torch.no_grad():
        y = segmenter(x).argmax(1)  # every pixel correct at x: lambda_0 = 0 changes nothing
    kwargs = {"eps": 0.03, "alpha": 0.01, "steps": 1, "random_start": False}
    assert torch.equal(SegPGD(**kwargs)(segmenter, x, y), PGD(**kwargs)(segmenter, x, y))


def test_first_step_is_pgd_on_the_correct_pixels(segmenter, seg_batch):
    # lambda_0 = 0: the misclassified pixels drop out; the sign step ignores SegPGD's 1 / |P| scale.
    x, y = seg_batch
    with torch.no_grad():
        correct = segmenter(x).argmax(1) == y
    kwargs = {"eps": 0.03, "alpha": 0.01, "steps": 1, "random_start": False}
    expected = PGD(**kwargs)(segmenter, x, y, mask=correct)
    assert torch.equal(SegPGD(**kwargs)(segmenter, x, y), expected)
    assert not torch.equal(PGD(**kwargs)(segmenter, x, y), expected)  # the weighting mattered


def test_mask_and_loss_classes_keep_pixels_out_of_the_loss(segmenter, seg_batch):
    x, y = seg_batch
    logits = segmenter(x).detach().requires_grad_(True)
    mask = torch.zeros_like(y, dtype=torch.bool)
    mask[:, :5] = True
    objective = SegPGD(eps=0.03, loss_classes=[1, 2]).objective
    weight = objective.pixel_weight(y, mask)
    (grad,) = torch.autograd.grad(objective(logits, y, weight, step=3).sum(), logits)
    counted = mask & (y != 0)
    assert (grad.abs().sum(1)[~counted] == 0).all() and (grad.abs().sum(1)[counted] > 0).any()


def test_classification_is_pgd_except_the_first_step_of_misclassified_images(classifier, cls_batch):
    # Documented degenerate case: one "pixel" per image, so the weight is a per-image scale that the
    # sign step removes, except lambda_0 = 0 on images already misclassified.
    x, y = cls_batch
    with torch.no_grad():
        correct = classifier(x).argmax(1) == y
    assert correct.any() and (~correct).any()
    kwargs = {"eps": 0.03, "alpha": 0.01, "random_start": False}
    seg = SegPGD(steps=3, **kwargs)(classifier, x, y)
    assert torch.equal(seg[correct], PGD(steps=3, **kwargs)(classifier, x, y)[correct])
    assert torch.equal(seg[~correct], PGD(steps=2, **kwargs)(classifier, x, y)[~correct])


def test_loss_must_be_cross_entropy():
    with pytest.raises(ValueError, match="SegPGD weights the per-pixel.*must be 'ce', got 'dice'"):
        SegPGD(eps=0.03, loss="dice")


@pytest.mark.parametrize("eps", [0.08, 0.1])
def test_lowers_pixel_accuracy_at_least_as_much_as_pgd(toy_segmentation, eps):
    """SegPGD's weights aim at the share of correct pixels: on the toy segmenter it lowers pixel
    accuracy more than PGD (same eps, steps, start). Its mIoU is not asserted, on purpose: at
    eps = 0.1 it ends *above* PGD's (0.534 vs 0.523) while its accuracy is below (0.889 vs 0.893).
    Per class, SegPGD fools 759 of the 8242 background pixels and 170 of the 784 disc pixels,
    PGD 641 and 257: once pixels are fooled SegPGD weighs them by lambda_t < 1/2 and moves the
    budget to the pixels still right, mostly background, while mIoU weighs the small disc class as
    much as the background. Over 6 training seeds (32 test slices, eps = 0.1) SegPGD minus PGD
    was -0.005 to -0.031 in accuracy wherever the model learned the task, and -0.008 to +0.004
    in mIoU. (CosPGD lowers both; see test_cospgd.py.)"""
    model, x, y = toy_segmentation
    clean_miou, clean_acc = miou_and_pixel_accuracy(model, x, y)
    assert clean_miou > 0.9 and clean_acc > 0.97  # the toy segmenter is accurate
    kwargs = {"eps": eps, "steps": 10, "seed": 0}
    _, pgd_acc = miou_and_pixel_accuracy(model, PGD(**kwargs)(model, x, y), y)
    seg_miou, seg_acc = miou_and_pixel_accuracy(model, SegPGD(**kwargs)(model, x, y), y)
    assert pgd_acc < clean_acc - 0.05  # PGD does something: the comparison is not between two no-ops
    assert seg_acc <= pgd_acc and seg_miou < clean_miou


def test_config_composes_and_builds():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["attack=segpgd", "attack.eps=0.02"])
    attack = attacks.build_attack(cfg.attack)
    assert type(attack) is SegPGD and attack.eps == pytest.approx(0.02) and attack.steps == 10
    assert attack.alpha == pytest.approx(2.5 * 0.02 / 10)
    # The config lists every constructor argument, as the other attack configs do.
    bases = (SegPGD, PGD, IterativeAttack, Attack)
    names = {n for base in bases for n in inspect.signature(base.__init__).parameters}
    assert set(cfg.attack) - {"_target_"} == names - {"self", "kwargs", "common"}


# --------------------------------------------------------------------------- L2 budget (norm="L2")


def test_l2_keeps_the_l2_budget_and_reports_it(segmenter, seg_batch):
    x, y = seg_batch
    attack = SegPGD(eps=0.5, steps=3, norm="L2", seed=0)
    assert attack.norm == "l2" and SegPGD(eps=0.03).norm == "linf"
    x_adv = attack(segmenter, x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and not torch.equal(x_adv, x)
    assert (budget(x_adv, x, "l2") <= 0.5 * (1 + 1e-5)).all()
    assert budget(x_adv, x, "linf").max() > 0.03  # an L2 step, not a clipped sign step
    assert SegPGD(eps=5.0, norm="L2").eps == 5.0  # an L2 radius may exceed 1
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\]"):
        SegPGD(eps=5.0)
    with pytest.raises(ValueError, match=r"norm must be 'Linf' or 'L2', got 'L1'"):
        SegPGD(eps=0.03, norm="L1")


def test_l2_first_step_is_pgd_l2_on_the_correct_pixels(segmenter, seg_batch):
    # As test_first_step_is_pgd_on_the_correct_pixels, with PGD-L2's step: lambda_0 = 0 drops the
    # misclassified pixels; SegPGD's 1 / |P| scale is a per-image factor the normalisation removes.
    x, y = seg_batch
    with torch.no_grad():
        correct = segmenter(x).argmax(1) == y
    kwargs = {"eps": 0.5, "alpha": 0.2, "steps": 1, "random_start": False}
    expected = PGDL2(**kwargs)(segmenter, x, y, mask=correct)
    assert (SegPGD(norm="L2", **kwargs)(segmenter, x, y) - expected).abs().max() < 1e-6
    assert (PGDL2(**kwargs)(segmenter, x, y) - expected).abs().max() > 1e-3  # the weighting mattered


@pytest.mark.parametrize("eps", [1.5, 2.0])
def test_l2_lowers_pixel_accuracy_at_least_as_much_as_pgd_l2(toy_segmentation, eps):
    """Same L2 eps, steps and random start as PGD-L2 (1x24x24 slices). As under L-inf, SegPGD aims
    at the share of correct pixels: measured accuracy 0.911 vs PGD-L2's 0.921 at eps = 1.5, 0.875
    vs 0.889 at eps = 2; its mIoU is lower too there (0.577 vs 0.584, 0.495 vs 0.497) but not
    asserted: at eps = 3 it ends above PGD-L2's (0.401 vs 0.394) for the reason given in
    :func:`test_lowers_pixel_accuracy_at_least_as_much_as_pgd`."""
    model, x, y = toy_segmentation
    clean_miou, clean_acc = miou_and_pixel_accuracy(model, x, y)
    kwargs = {"eps": eps, "steps": 10, "seed": 0}
    _, pgd_acc = miou_and_pixel_accuracy(model, PGDL2(**kwargs)(model, x, y), y)
    seg_miou, seg_acc = miou_and_pixel_accuracy(model, SegPGD(norm="L2", **kwargs)(model, x, y), y)
    assert pgd_acc < clean_acc - 0.05  # PGD-L2 does something: the comparison is not between two no-ops
    assert seg_acc <= pgd_acc and seg_miou < clean_miou


def test_l2_config_composes():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["attack=segpgd", "attack.norm=L2", "attack.eps=1.0"])
    attack = attacks.build_attack(cfg.attack)
    assert type(attack) is SegPGD and attack.norm == "l2" and attack.eps == 1.0
    assert attack.alpha == pytest.approx(2.5 * 1.0 / 10)
