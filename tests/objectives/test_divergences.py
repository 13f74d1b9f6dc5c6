"""The terms of the objectives against values worked out by hand (natural logs, 7 digits)."""

from __future__ import annotations

import math

import pytest
import torch

from advmed.objectives.divergences import (
    boosted_cross_entropy,
    kl_divergence,
    misclassification_weighted_kl,
    true_class_probability,
    valid_pixels,
)


def _logits(*probs: list[float]) -> torch.Tensor:
    """Logits whose softmax is each row of ``probs`` (log-probabilities)."""
    return torch.tensor(probs).log()


def test_kl_of_two_distributions_by_hand():
    p, q = _logits([0.5, 0.5], [0.5, 0.5]), _logits([0.9, 0.1], [0.5, 0.5])
    # KL([.5, .5] || [.9, .1]) = .5 ln(.5/.9) + .5 ln(.5/.1) = -0.2938933 + 0.8047190; KL(p || p) = 0
    assert kl_divergence(p, q).tolist() == pytest.approx([0.5108256, 0.0], abs=1e-6)


def test_kl_runs_from_the_clean_to_the_adversarial_prediction():
    p, q = _logits([0.6, 0.3, 0.1]), _logits([0.2, 0.5, 0.3])
    # sum_k p_k ln(p_k / q_k) = .6 ln 3 + .3 ln .6 + .1 ln(1/3) = 0.6591674 - 0.1532477 - 0.1098612
    assert kl_divergence(p, q).item() == pytest.approx(0.3960585, abs=1e-6)
    assert kl_divergence(q, p).item() != pytest.approx(0.3960585, abs=1e-3)  # not symmetric: the order matters


def test_boosted_cross_entropy_by_hand():
    adv = _logits([0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.7, 0.2, 0.1])
    # -ln p_y(x') - ln(1 - max_{k != y} p_k(x')):
    #   y=0: -ln .7 - ln .8 = 0.3566749 + 0.2231436;  y=1: -ln .2 - ln .3;  y=2: -ln .1 - ln .3
    expected = [0.5798185, 1.6094379 + 1.2039728, 2.3025851 + 1.2039728]
    assert boosted_cross_entropy(adv, torch.tensor([0, 1, 2])).tolist() == pytest.approx(expected, abs=1e-6)


def test_boosted_cross_entropy_stays_exact_and_finite_where_a_wrong_class_takes_everything():
    logits = torch.tensor([[0.0, 50.0, 0.0]])
    # p_0 = e^-50 / Z, 1 - p_1 = 2 e^-50 / Z with Z = 1 + 2 e^-50: -ln p_0 - ln(1 - p_1) = 50 + 50 - ln 2 (+ 2 ln Z ~ 0)
    value = boosted_cross_entropy(logits, torch.tensor([0]))
    assert torch.isfinite(value).all()
    assert value.item() == pytest.approx(100 - math.log(2), abs=1e-4)


def test_misclassification_weighted_kl_by_hand():
    natural, adv = _logits([0.6, 0.3, 0.1], [0.6, 0.3, 0.1]), _logits([0.2, 0.5, 0.3], [0.2, 0.5, 0.3])
    # KL = 0.3960585 (above), weighted by 1 - p_y(x): y=0 -> 0.4, y=2 -> 0.9
    value = misclassification_weighted_kl(natural, adv, torch.tensor([0, 2]))
    assert value.tolist() == pytest.approx([0.3960585 * 0.4, 0.3960585 * 0.9], abs=1e-6)
    assert true_class_probability(natural, torch.tensor([0, 2])).tolist() == pytest.approx([0.6, 0.1], abs=1e-6)


def test_marts_weight_vanishes_as_the_model_grows_confident_and_is_largest_on_misclassified_samples():
    generator = torch.Generator().manual_seed(0)
    rows = torch.arange(8)
    for _ in range(20):  # random logits, labels and adversarial predictions
        natural = torch.randn(8, 5, generator=generator)
        adv = torch.randn(8, 5, generator=generator) * 3
        y = torch.randint(0, 5, (8,), generator=generator)
        assert (misclassification_weighted_kl(natural, adv, y) <= kl_divergence(natural, adv) + 1e-6).all()
        for margin in (2.0, 5.0, 10.0, 20.0, 40.0):
            confident = natural.clone()
            confident[rows, y] = natural.max(1).values + margin  # p_y(x) -> 1
            ratio = misclassification_weighted_kl(confident, adv, y) / kl_divergence(confident, adv)
            assert (ratio <= 4 * math.exp(-margin) + 1e-7).all()  # 1 - p_y(x) <= (K - 1) e^-margin
        assert (misclassification_weighted_kl(confident, adv, y) == 0).all()  # at margin 40, p_y(x) rounds to 1
        wrong = natural.clone()
        wrong[rows, y] = natural.min(1).values - 40  # p_y(x) -> 0: the whole KL counts
        assert misclassification_weighted_kl(wrong, adv, y) == pytest.approx(kl_divergence(wrong, adv), rel=1e-5)


def test_valid_pixels_masks_the_ignore_label_and_gives_it_a_harmless_class():
    y = torch.tensor([[[1, 255], [2, 0]]])
    labels, weight = valid_pixels(y, 255)
    assert labels.tolist() == [[[1, 0], [2, 0]]]
    assert weight.tolist() == [[[1.0, 0.0], [1.0, 1.0]]]
    same, none = valid_pixels(y, None)
    assert same is y and none is None


def test_per_pixel_terms_average_over_the_kept_pixels_of_each_image():
    # Two images of 1 x 2 pixels: pixel 0 of each carries the 0.3960585 KL (y=0, weight 0.4), pixel 1 another.
    p = torch.tensor([0.6, 0.3, 0.1]).log()
    q = torch.tensor([0.2, 0.5, 0.3]).log()
    other_p, other_q = torch.tensor([0.5, 0.25, 0.25]).log(), torch.tensor([0.25, 0.25, 0.5]).log()
    natural = torch.stack([p, other_p], -1).reshape(1, 3, 1, 2).repeat(2, 1, 1, 1)
    adv = torch.stack([q, other_q], -1).reshape(1, 3, 1, 2).repeat(2, 1, 1, 1)
    y = torch.tensor([[[0, 255]], [[0, 1]]])
    labels, weight = valid_pixels(y, 255)
    # KL of pixel 1: .5 ln 2 + .25 ln 1 + .25 ln .5 = 0.3465736 - 0.1732868 = 0.1732868
    kl = kl_divergence(natural, adv, weight)
    assert kl.tolist() == pytest.approx([0.3960585, (0.3960585 + 0.1732868) / 2], abs=1e-6)
    # Boosted CE, image 0: pixel 0 only, -ln .2 - ln .5 (q's largest wrong class has .5) = 1.6094379 + 0.6931472
    bce = boosted_cross_entropy(adv, labels, weight)
    assert bce[0].item() == pytest.approx(1.6094379 + 0.6931472, abs=1e-6)
    # MART's weighted KL, image 1: (0.3960585 * (1 - .6) + 0.1732868 * (1 - .25)) / 2
    weighted = misclassification_weighted_kl(natural, adv, labels, weight)
    assert weighted.tolist() == pytest.approx([0.3960585 * 0.4, (0.3960585 * 0.4 + 0.1732868 * 0.75) / 2], abs=1e-6)
    # Without the ignore label both pixels count in image 0 too.
    assert kl_divergence(natural, adv).tolist() == pytest.approx([(0.3960585 + 0.1732868) / 2] * 2, abs=1e-6)
