"""The deformation + intensity generator of Chen et al. 2019 and its critic."""

from __future__ import annotations

import pytest
import torch

from advmed.nets.deformation import Critic, DeformationGenerator, warp


def test_warp_samples_at_the_displaced_pixel():
    image = torch.arange(36.0).view(1, 1, 6, 6)
    shift = torch.zeros(1, 2, 6, 6)
    shift[:, 0] = 1.0  # dx = +1 px: output (y, x) reads input (y, x + 1)
    out = warp(image, shift)
    assert torch.allclose(out[0, 0, :, :5], image[0, 0, :, 1:], atol=1e-4)
    assert torch.allclose(out[0, 0, :, 5], image[0, 0, :, 5], atol=1e-4)  # border padding
    shift = torch.zeros(1, 2, 6, 6)
    shift[:, 1] = -2.0  # dy = -2 px: rows move down
    assert torch.allclose(warp(image, shift)[0, 0, 2:], image[0, 0, :4], atol=1e-4)


def test_an_untrained_generator_is_the_identity_and_sampling_varies_the_latents():
    torch.manual_seed(0)
    g = DeformationGenerator(base_width=8, depth=2, latent_channels=4).eval()
    x = torch.rand(2, 1, 16, 16)
    out = g(x)
    assert out.x_adv.shape == x.shape and out.deformation.shape == (2, 2, 16, 16) and out.intensity.shape == x.shape
    assert torch.allclose(out.x_adv, x, atol=1e-5)
    assert out.mu.shape == (2, 8, 4, 4)
    a, b = g(x, generator=torch.Generator().manual_seed(1)), g(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.mu, b.mu)  # same encoding ...
    for head in (g.decode_deformation.head, g.decode_intensity.head):
        torch.nn.init.normal_(head.weight, std=0.1)
    a, b = g(x, generator=torch.Generator().manual_seed(1)), g(x, generator=torch.Generator().manual_seed(2))
    c = g(x, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a.x_adv, b.x_adv) and torch.equal(a.x_adv, c.x_adv)  # ... several attacks per image
    assert torch.equal(g(x, sample=False).x_adv, g(x, sample=False).x_adv)
    assert 0.0 <= float(a.x_adv.min()) and float(a.x_adv.max()) <= 1.0


@pytest.mark.parametrize("components", ["d", "v"])
def test_ablations_switch_off_the_other_field(components):
    g = DeformationGenerator(base_width=8, depth=2, latent_channels=4, components=components)
    for head in (g.decode_deformation.head, g.decode_intensity.head):
        torch.nn.init.normal_(head.weight, std=0.1)
    out = g(torch.rand(2, 1, 16, 16))
    off, on = (out.intensity, out.deformation) if components == "d" else (out.deformation, out.intensity)
    assert float(off.abs().max()) == 0.0 and float(on.abs().max()) > 0.0


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="components='x' must be one of"):
        DeformationGenerator(components="x")
    with pytest.raises(ValueError, match="divisible by 8"):
        DeformationGenerator(depth=3)(torch.rand(1, 1, 20, 20))


def test_critic_scores_each_image():
    assert Critic(base_width=8, depth=3)(torch.rand(5, 1, 32, 32)).shape == (5,)
