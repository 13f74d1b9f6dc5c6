"""SRGAN losses on hand-computed values: eq. 4 (content), eq. 5 (adversarial), eq. 3 (total), the
vanilla discriminator loss, the pixel pre-training loss and the fallbacks without VGG19 weights."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from advmed.losses.srgan import (
    SRGANLoss,
    discriminator_loss,
    feature_mse,
    generator_adversarial_loss,
    pixel_mse,
)
from advmed.nets.vgg_features import VGGFeatures

# One image, one channel, 2x2 pixels; differences 0.5, -0.5, 0.25, 0 -> squares 0.25, 0.25, 0.0625, 0.
SR = torch.tensor([[0.5, 0.0], [1.0, 0.25]]).view(1, 1, 2, 2)
HR = torch.tensor([[0.0, 0.5], [0.75, 0.25]]).view(1, 1, 2, 2)
HAND_MSE = (0.25 + 0.25 + 0.0625 + 0.0) / 4


class Doubler(nn.Module):
    """phi(x) = (x, 2x) as two channels: squared differences d^2 and 4 d^2 per position."""

    def forward(self, x):
        return torch.cat([x, 2 * x], dim=1)


def test_pixel_mse_by_hand():
    assert pixel_mse(SR, HR).item() == pytest.approx(HAND_MSE)


def test_content_loss_with_identity_features_is_the_pixel_mse():
    terms = SRGANLoss(features=nn.Identity(), alpha=1.0).content(SR, HR)
    assert list(terms) == ["content"]
    assert terms["content"].item() == pytest.approx(HAND_MSE)


def test_content_loss_averages_over_positions_and_channels_and_batch():
    # Eq. 4 with W_i = H_i = 2: (1/4) sum_xy of the per-position channel mean of (d^2, 4 d^2).
    per_position = [(d2 + 4 * d2) / 2 for d2 in (0.25, 0.25, 0.0625, 0.0)]
    first = sum(per_position) / 4
    sr = torch.cat([SR, torch.zeros_like(SR)])  # second image: sr = 0, hr = 1 everywhere -> (1 + 4) / 2
    hr = torch.cat([HR, torch.ones_like(HR)])
    assert feature_mse(Doubler(), sr, hr).item() == pytest.approx((first + 2.5) / 2)


def test_content_gradient_reaches_the_generator_output_not_the_target():
    sr, hr = SR.clone().requires_grad_(True), HR.clone().requires_grad_(True)
    feature_mse(Doubler(), sr, hr).backward()
    assert hr.grad is None
    # d/dsr of mean over 8 values of (k d)^2, k in {1, 2}: 2 d (1 + 4) / 8 per pixel.
    assert torch.allclose(sr.grad, 2 * (SR - HR) * 5 / 8)


def test_adversarial_loss_is_minus_log_d_on_logits():
    logits = torch.tensor([0.0, math.log(3.0), -math.log(3.0)])  # D = 1/2, 3/4, 1/4
    expected = (-math.log(0.5) - math.log(0.75) - math.log(0.25)) / 3
    assert generator_adversarial_loss(logits).item() == pytest.approx(expected, rel=1e-6)


def test_adversarial_loss_is_finite_where_sigmoid_underflows():
    logits = torch.tensor([-200.0])  # sigmoid(-200) is 0 in float32: a naive -log D would be inf
    assert torch.sigmoid(logits).item() == 0.0
    assert generator_adversarial_loss(logits).item() == pytest.approx(200.0)


def test_generator_total_is_alpha_content_plus_beta_adversarial():
    logits = torch.tensor([math.log(3.0)])
    loss = SRGANLoss(features=nn.Identity(), alpha=0.5, beta=0.01)
    terms = loss.generator(SR, HR, logits)
    assert set(terms) == {"content", "adversarial"}
    assert terms["content"].item() == pytest.approx(0.5 * HAND_MSE)
    assert terms["adversarial"].item() == pytest.approx(0.01 * -math.log(0.75), rel=1e-6)
    assert sum(terms.values()).item() == pytest.approx(0.5 * HAND_MSE + 0.01 * -math.log(0.75), rel=1e-6)


def test_default_weights_are_ledigs():
    loss = SRGANLoss(features=nn.Identity())
    assert (loss.alpha, loss.beta) == (1.0, 1e-3)


def test_discriminator_loss_is_the_vanilla_gan_loss():
    real, fake = torch.tensor([math.log(3.0), 0.0]), torch.tensor([math.log(3.0)])  # D(real) = 3/4, 1/2; D(fake) = 3/4
    terms = discriminator_loss(real, fake)
    assert terms["real"].item() == pytest.approx((-math.log(0.75) - math.log(0.5)) / 2, rel=1e-6)
    assert terms["fake"].item() == pytest.approx(-math.log(1 - 0.75), rel=1e-6)
    assert SRGANLoss.discriminator(real, fake).keys() == terms.keys()


def test_pretraining_is_pixel_mse_only():
    assert {k: v.item() for k, v in SRGANLoss.pretrain(SR, HR).items()} == pytest.approx({"pixel": HAND_MSE})


@pytest.mark.parametrize(("kwargs", "name"), [({"alpha": -1.0}, "alpha"), ({"beta": -1e-3}, "beta"), ({"beta": float("nan")}, "beta")])
def test_negative_weights_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=f"model.{name}=.* must be >= 0"):
        SRGANLoss(features=nn.Identity(), **kwargs)


def test_unknown_fallback_is_refused():
    with pytest.raises(ValueError, match=r"content_fallback='l1' must be one of \('none', 'pixel'\)"):
        SRGANLoss(features=nn.Identity(), content_fallback="l1")


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(1, 1, 2, 2\) and high-resolution targets \(1, 1, 4, 4\)"):
        SRGANLoss(features=nn.Identity()).generator(SR, torch.zeros(1, 1, 4, 4), torch.zeros(1))


@pytest.fixture
def unavailable_vgg(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    with pytest.warns(UserWarning, match="UNAVAILABLE"):
        return VGGFeatures("relu1_1", on_missing="warn")


def test_without_vgg_weights_the_content_term_can_fall_back_to_pixel_mse(unavailable_vgg):
    with pytest.warns(UserWarning, match="falls back to pixel MSE"):
        loss = SRGANLoss(features=unavailable_vgg, alpha=2.0, content_fallback="pixel")
    assert not loss.perceptual
    terms = loss.generator(SR, HR, torch.zeros(1))
    assert set(terms) == {"pixel", "adversarial"}
    assert terms["pixel"].item() == pytest.approx(2.0 * HAND_MSE)


def test_without_vgg_weights_the_content_term_is_omitted_by_default(unavailable_vgg):
    with pytest.warns(UserWarning, match="content term is omitted"):
        loss = SRGANLoss(features=unavailable_vgg)
    terms = loss.generator(SR, HR, torch.zeros(1))
    assert set(terms) == {"adversarial"}
    assert terms["adversarial"].item() == pytest.approx(1e-3 * math.log(2.0), rel=1e-6)


def test_no_feature_network_at_all_also_warns():
    with pytest.warns(UserWarning, match="without a perceptual"):
        SRGANLoss(features=None)


def test_an_available_extractor_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SRGANLoss(features=VGGFeatures(network=nn.Identity())).perceptual


def test_content_loss_sees_the_extractors_imagenet_normalisation():
    # phi = identity after (x - mean) / std: the mean cancels, each channel's difference is divided by its std.
    sr, hr = torch.zeros(1, 3, 1, 1), torch.full((1, 3, 1, 1), 0.5)
    expected = sum((0.5 / std) ** 2 for std in (0.229, 0.224, 0.225)) / 3
    terms = SRGANLoss(features=VGGFeatures(network=nn.Identity())).content(sr, hr)
    assert terms["content"].item() == pytest.approx(expected, rel=1e-5)
