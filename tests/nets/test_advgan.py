"""The AdvGAN generator and discriminator (Xiao et al. 2018): shapes, the identity start, the output
bound, and the sizes they refuse."""

from __future__ import annotations

import pytest
import torch

from advmed.nets.advgan import AdvGANDiscriminator, AdvGANGenerator, apply_perturbation


def _randomise_head(g: AdvGANGenerator, std: float = 1.0) -> AdvGANGenerator:
    torch.nn.init.normal_(g.head.weight, std=std)
    return g


def test_an_untrained_generator_adds_no_noise():
    x = torch.rand(2, 3, 32, 32)
    g = AdvGANGenerator()
    noise = g(x).detach()
    assert noise.shape == x.shape and float(noise.abs().max()) == 0.0
    assert torch.equal(apply_perturbation(x, noise), x)


@pytest.mark.parametrize("upsampling", ["transposed", "bilinear"])
@pytest.mark.parametrize(("depth", "size"), [(1, 8), (2, 24), (3, 32)])
def test_the_perturbation_has_the_input_size_at_any_depth(upsampling, depth, size):
    g = _randomise_head(AdvGANGenerator(in_channels=1, base_width=4, depth=depth, residual_blocks=1, upsampling=upsampling))
    noise = g(torch.rand(2, 1, size, 2 * size)).detach()
    assert noise.shape == (2, 1, size, 2 * size) and float(noise.abs().max()) > 0.0


def test_the_output_stays_within_max_perturbation_and_the_sum_within_0_1():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    wide = _randomise_head(AdvGANGenerator(depth=2, residual_blocks=1), std=10.0)
    assert float(wide(x).detach().abs().max()) > 0.9  # tanh saturates near 1: only l_threshold would bound it
    narrow = _randomise_head(AdvGANGenerator(depth=2, residual_blocks=1, max_perturbation=0.05), std=10.0)
    noise = narrow(x).detach()
    assert 0.04 < float(noise.abs().max()) <= 0.05 + 1e-7  # float32 0.05 * tanh
    x_adv = apply_perturbation(x, wide(x).detach())
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    assert torch.equal(apply_perturbation(torch.tensor([0.95, 0.02]), torch.tensor([0.1, -0.1])), torch.tensor([1.0, 0.0]))


def test_the_generator_learns_a_perturbation_through_its_zero_head():
    g = AdvGANGenerator(depth=2, residual_blocks=1)
    x = torch.rand(2, 3, 16, 16)
    optimizer = torch.optim.Adam(g.parameters(), lr=1e-2)
    for _ in range(3):  # raise the red channel everywhere
        optimizer.zero_grad()
        (-g(x)[:, 0].mean()).backward()
        optimizer.step()
    assert float(g(x).detach()[:, 0].mean()) > 0.01


def test_the_discriminator_returns_one_logit_per_patch():
    d = AdvGANDiscriminator(in_channels=3, base_width=8, depth=3)
    assert d(torch.rand(2, 3, 32, 32)).shape == (2, 1, 4, 4)
    assert d(torch.rand(2, 3, 32, 64)).shape == (2, 1, 4, 8)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 3, 30, 32), r"depth 2 takes images \(N, 3, H, W\) with H and W divisible by 4 and at least 8, got \(1, 3, 30, 32\)"),
        ((1, 3, 4, 4), r"divisible by 4 and at least 8, got \(1, 3, 4, 4\): resize the data \(data\.image_size\)"),
        ((1, 1, 32, 32), r"takes images \(N, 3, H, W\).*got \(1, 1, 32, 32\)"),
    ],
)
def test_the_generator_refuses_sizes_it_cannot_restore(shape, message):
    with pytest.raises(ValueError, match=message):
        AdvGANGenerator(depth=2)(torch.rand(*shape))


def test_the_discriminator_refuses_images_smaller_than_its_patches():
    with pytest.raises(ValueError, match=r"depth 3 needs images of at least 16x16 px, got \(8, 8\): lower model\.critic_depth"):
        AdvGANDiscriminator(depth=3)(torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_perturbation": 0.0}, r"max_perturbation=0\.0 must be in \(0, 1\]"),
        ({"max_perturbation": 2.0}, r"max_perturbation=2\.0 must be in \(0, 1\]"),
        ({"upsampling": "nearest"}, r"upsampling='nearest' must be one of \('transposed', 'bilinear'\)"),
        ({"depth": 0}, r"depth=0 must be > 0"),
        ({"residual_blocks": -1}, r"residual_blocks=-1 must be >= 0"),
    ],
)
def test_bad_generator_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdvGANGenerator(**kwargs)
