"""Chen et al. 2019 loss terms on hand-computed values: eq. 5 (masked cross-entropy), eq. 4
((xi - f)^2), eq. 2 (field norms), eq. 3 (WGAN) and the gradient penalty; eq. 7 (perceptibility)."""

from __future__ import annotations

import math

import pytest
import torch

from advmed.losses import DeformationAttackLoss, WassersteinLoss, gradient_penalty, masked_cross_entropy
from advmed.metrics import Perceptibility


def test_masked_cross_entropy_weights_pixels_by_organ_probability():
    # Two pixels, 2 classes. Pixel a: S0 = (0.2, 0.8), M = 0.8; pixel b: S0 = (1, 0), M = 0 (background).
    clean = torch.tensor([[0.2, 1.0], [0.8, 0.0]]).view(1, 2, 1, 2)
    adv_logits = torch.log(torch.tensor([[0.5, 0.9], [0.5, 0.1]])).view(1, 2, 1, 2)  # S_DV probabilities
    ce_a = -(0.2 * math.log(0.5) + 0.8 * math.log(0.5))
    expected = 0.8 * ce_a / 0.8  # pixel b has no weight
    assert masked_cross_entropy(clean, adv_logits).item() == pytest.approx(expected, rel=1e-6)


def test_a_slice_without_organs_gives_zero():
    clean = torch.zeros(1, 3, 4, 4)
    clean[:, 0] = 1.0
    assert masked_cross_entropy(clean, torch.randn(1, 3, 4, 4)).item() == 0.0


def test_generator_terms_match_eqs_2_and_4():
    clean = torch.tensor([[0.2], [0.8]]).view(1, 2, 1, 1)
    adv_logits = torch.log(torch.tensor([0.5, 0.5])).view(1, 2, 1, 1)
    deformation = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # dx = 3, dy = 4 px
    intensity = torch.tensor([0.2]).view(1, 1, 1, 1)
    terms, xent = DeformationAttackLoss(xi=2.0, lambda_d=0.1, lambda_v=0.01)(clean, adv_logits, deformation, intensity)
    assert xent.item() == pytest.approx(math.log(2), rel=1e-6)
    assert terms["xi"].item() == pytest.approx((2.0 - math.log(2)) ** 2, rel=1e-6)
    assert terms["deformation"].item() == pytest.approx(0.1 * (9 + 16) / 2, rel=1e-6)  # mean over the 2 channels
    assert terms["intensity"].item() == pytest.approx(0.01 * 0.04, rel=1e-6)


@pytest.mark.parametrize(("name", "kwargs"), [("xi", {"xi": -0.5}), ("lambda_D", {"lambda_d": -1}), ("lambda_V", {"lambda_v": float("nan")})])
def test_negative_weights_are_refused(name, kwargs):
    with pytest.raises(ValueError, match=f"model.{name}=.* must be >= 0"):
        DeformationAttackLoss(**kwargs)


def test_wasserstein_terms_follow_eq_3():
    def critic(x):
        return x.flatten(1).sum(1)  # linear critic: score = sum of pixels

    real, fake = torch.full((2, 1, 2, 2), 0.5), torch.full((2, 1, 2, 2), 0.25)
    loss = WassersteinLoss(gp_weight=0.0)
    assert loss.generator(critic(real), critic(fake)).item() == pytest.approx(2.0 - 1.0)
    assert loss.critic(critic, real, fake)["wasserstein"].item() == pytest.approx(1.0 - 2.0)
    assert "gradient_penalty" not in loss.critic(critic, real, fake)


def test_gradient_penalty_of_a_linear_critic():
    # grad of sum(w * x) is w everywhere: penalty = (||w|| - 1)^2 whatever the interpolates.
    w = torch.tensor([3.0, 0.0, 4.0, 0.0]).view(1, 1, 2, 2)

    def critic(x):
        return (x * w).flatten(1).sum(1)

    real, fake = torch.rand(3, 1, 2, 2), torch.rand(3, 1, 2, 2)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx((5.0 - 1.0) ** 2)
    terms = WassersteinLoss(gp_weight=10.0).critic(critic, real, fake)
    assert terms["gradient_penalty"].item() == pytest.approx(10 * 16.0)


def test_gradient_penalty_reaches_the_critics_parameters():
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))
    penalty = gradient_penalty(lambda x: critic(x).squeeze(1), torch.rand(2, 1, 2, 2), torch.rand(2, 1, 2, 2))
    penalty.backward()
    assert critic[1].weight.grad is not None and critic[1].weight.grad.abs().sum() > 0


def test_perceptibility_is_the_mean_absolute_change_per_image():
    p = Perceptibility()
    x = torch.zeros(2, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = 0.4  # image 0: 0.4 / 4 = 0.1; image 1: 0
    p.update(x, x_adv)
    p.update(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.2))  # image 2: 0.2
    assert p.compute().item() == pytest.approx((0.1 + 0.0 + 0.2) / 3)
