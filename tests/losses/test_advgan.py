"""Lockshin et al. 2022 AdvGAN losses on hand-computed values: eq. 6 (threshold), eqs. 7-8 (negated
cross-entropy, and its targeted variant), eq. 1 (vanilla GAN) and eq. 9 (the weighted sum)."""

from __future__ import annotations

import math

import pytest
import torch

from advmed.losses.advgan import AdvGANLoss, NegatedCrossEntropyLoss, ThresholdLoss, VanillaGANLoss


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


# Two images of 1x1x3: |noise| above thr = 0.1 counts squared, per image summed, then the batch mean.
NOISE = torch.tensor([[0.3, -0.05, -0.5], [0.0, 0.1, -0.2]]).view(2, 3, 1, 1)
THRESHOLD = ((0.2**2 + 0.0 + 0.4**2) + (0.0 + 0.0 + 0.1**2)) / 2  # 0.105; exactly thr costs nothing
# Two images, two classes: CE of image 0 (label 0) is log(1 + e^-2), of image 1 (label 1) log 2.
LOGITS = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
LABELS = torch.tensor([0, 1])
CE = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2  # 0.41004


def test_threshold_loss_sums_the_squared_excess_per_image_and_averages_the_batch():
    assert ThresholdLoss(0.1)(NOISE).item() == pytest.approx(THRESHOLD, rel=1e-6)
    # Scale: a 2x2 image with every value 0.3 over thr 0.1 costs 4 * 3 * 0.2^2 = 0.48, whatever the batch size.
    assert ThresholdLoss(0.1)(torch.full((5, 3, 2, 2), 0.3)).item() == pytest.approx(0.48, rel=1e-6)
    assert ThresholdLoss(0.6)(NOISE).item() == 0.0  # nothing above the threshold


def test_threshold_loss_pushes_only_the_excess_back():
    noise = NOISE.clone().requires_grad_(True)
    ThresholdLoss(0.1)(noise).backward()
    # d/dI of (|I| - thr)^2 / N = 2 (|I| - thr) sign(I) / N with N = 2 images
    expected = torch.tensor([[0.2, 0.0, -0.4], [0.0, 0.0, -0.1]]).view(2, 3, 1, 1)
    assert torch.allclose(noise.grad, expected, atol=1e-6)


def test_negated_cross_entropy_is_the_inverse_of_the_batch_mean_cross_entropy():
    loss, ce = NegatedCrossEntropyLoss(eps=0.0)(LOGITS, LABELS)
    assert ce.item() == pytest.approx(CE, rel=1e-6)
    assert loss.item() == pytest.approx(1 / CE, rel=1e-6)  # 2.4388
    # The default eps moves the value by less than eps / CE^2 and keeps a saturated classifier finite.
    assert NegatedCrossEntropyLoss()(LOGITS, LABELS)[0].item() == pytest.approx(1 / (CE + 1e-6), rel=1e-6)
    assert NegatedCrossEntropyLoss()(LOGITS, LABELS)[0].item() < 1 / CE
    certain = torch.tensor([[200.0, 0.0]])
    loss, ce = NegatedCrossEntropyLoss()(certain, torch.tensor([0]))
    assert ce.item() == 0.0 and loss.item() == pytest.approx(1e6) and math.isfinite(loss.item())


def test_negated_cross_entropy_decreases_as_the_classifier_is_fooled():
    logits = LOGITS.clone().requires_grad_(True)
    loss, _ = NegatedCrossEntropyLoss(eps=0.0)(logits, LABELS)
    loss.backward()
    # d(1/CE)/dz = -(1/CE^2) dCE/dz with dCE/dz = (softmax - onehot) / N: the true logit's gradient is positive,
    # so descending it lowers the true class (and raises the CE).
    p = 1 / (1 + math.exp(-2.0))
    expected = -(1 / CE**2) * torch.tensor([[p - 1, 1 - p], [0.5, -0.5]]) / 2
    assert torch.allclose(logits.grad, expected, atol=1e-6)
    assert logits.grad[0, 0] > 0 and logits.grad[1, 1] > 0


def test_targeted_variant_is_the_cross_entropy_to_the_target_labels():
    target = torch.tensor([1, 1])
    loss, ce = NegatedCrossEntropyLoss(targeted=True)(LOGITS, target)
    expected = (math.log(1 + math.exp(2.0)) + math.log(2.0)) / 2  # -log softmax(z)_1 per image
    assert loss.item() == pytest.approx(expected, rel=1e-6) and ce.item() == pytest.approx(expected, rel=1e-6)


def test_vanilla_gan_loss_is_eq_1_on_logits():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([[1.0, -1.0]])
    terms = VanillaGANLoss.critic(real, fake)
    # -E log sigmoid(D(x)) and -E log(1 - sigmoid(D(fake)))
    assert terms["real"].item() == pytest.approx((math.log(2) + softplus(-2.0)) / 2, rel=1e-6)
    assert terms["fake"].item() == pytest.approx((softplus(1.0) + softplus(-1.0)) / 2, rel=1e-6)
    logit = torch.tensor([2.0])
    assert VanillaGANLoss().generator(logit).item() == pytest.approx(-math.log(1 / (1 + math.exp(-2.0))), rel=1e-6)
    saturating = VanillaGANLoss(non_saturating=False).generator(logit).item()
    assert saturating == pytest.approx(math.log(1 - 1 / (1 + math.exp(-2.0))), rel=1e-6)  # log(1 - D), as eq. 1


def test_advgan_loss_weights_each_term_as_eq_9():
    fake_logits = torch.tensor([0.0, 0.0])
    loss = AdvGANLoss(gamma=10.0, theta=2.0, zeta=3.0, thr=0.1)
    terms, ce = loss.generator(LOGITS, LABELS, fake_logits, NOISE)
    assert set(terms) == {"nce", "gan", "threshold"} and ce.item() == pytest.approx(CE, rel=1e-6)
    assert terms["nce"].item() == pytest.approx(10.0 / (CE + 1e-6), rel=1e-6)
    assert terms["gan"].item() == pytest.approx(2.0 * math.log(2), rel=1e-6)
    assert terms["threshold"].item() == pytest.approx(3.0 * THRESHOLD, rel=1e-6)
    total = 10.0 / CE + 2.0 * math.log(2) + 3.0 * 0.105  # 24.388 + 1.386 + 0.315
    assert sum(terms.values()).item() == pytest.approx(total, rel=1e-5)
    critic = loss.critic(torch.tensor([0.0]), fake_logits)  # theta weighs only the generator's side
    assert critic["real"].item() == pytest.approx(math.log(2), rel=1e-6)


def test_targeted_advgan_loss_names_its_term():
    terms, _ = AdvGANLoss(gamma=1.0, targeted=True).generator(LOGITS, torch.tensor([1, 1]), torch.zeros(2), NOISE)
    assert set(terms) == {"target_ce", "gan", "threshold"}
    assert terms["target_ce"].item() == pytest.approx((softplus(2.0) + math.log(2.0)) / 2, rel=1e-6)


def test_a_zero_weight_switches_its_term_off():
    terms, _ = AdvGANLoss(gamma=0.0, theta=0.0, zeta=1.0).generator(LOGITS, LABELS, torch.zeros(2), NOISE)
    assert terms["nce"].item() == 0.0 and terms["gan"].item() == 0.0
    assert sum(terms.values()).item() == pytest.approx(THRESHOLD, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": -1.0}, r"model\.gamma=-1\.0 must be a number >= 0"),
        ({"theta": -0.5}, r"model\.theta=-0\.5 must be a number >= 0"),
        ({"zeta": math.nan}, r"model\.zeta=nan must be a number >= 0"),
        ({"thr": 0.0}, r"model\.thr=0\.0 must be > 0: the largest \|noise\| that goes unpenalised"),
        ({"thr": -0.1}, r"model\.thr=-0\.1 must be > 0"),
    ],
)
def test_bad_weights_and_thresholds_are_refused_naming_the_config_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdvGANLoss(**kwargs)
