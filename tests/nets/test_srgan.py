"""SRGAN networks (Ledig et al. 2017, Fig. 4) at tiny widths, and the x2 training pairs / bicubic
baseline of Lockshin et al. 2022 sec. 3.2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advmed.nets.srgan import SRDiscriminator, SRResNet
from advmed.nets.srgan_pairs import bicubic_upscale, make_sr_pair, resize


@pytest.mark.parametrize("scale", [2, 4])
def test_generator_upscales_by_scale_into_the_unit_range(scale):
    net = SRResNet(scale=scale, num_blocks=2, channels=8)
    x = torch.rand(2, 3, 8, 6)
    x[0, 0, 0, 0], x[1, 2, 3, 3] = 0.0, 1.0
    out = net(x)
    assert out.shape == (2, 3, 8 * scale, 6 * scale)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert len(net.upsample) == {2: 1, 4: 2}[scale]  # one PixelShuffle(2) stage per factor 2


@pytest.mark.parametrize("scale", [3, 1, 8])
def test_unsupported_scales_are_refused(scale):
    with pytest.raises(ValueError, match=f"scale={scale} is not supported.*one of \\(2, 4\\)"):
        SRResNet(scale=scale)


@pytest.mark.parametrize(("kwargs", "name"), [({"num_blocks": 0}, "num_blocks"), ({"channels": -4}, "channels")])
def test_generator_sizes_must_be_positive(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}=.* must be an integer >= 1"):
        SRResNet(**kwargs)


def test_generator_output_keeps_a_gradient_near_the_border():
    # Pre-activation 3 everywhere: a clamped (y + 1) / 2 would output 2 -> 1 with no gradient;
    # the tanh mapping gives 0.5 * (tanh(3) + 1) ~ 0.9975 and still passes gradient back.
    net = SRResNet(num_blocks=1, channels=4)
    torch.nn.init.zeros_(net.tail.weight)
    torch.nn.init.constant_(net.tail.bias, 3.0)
    out = net(torch.rand(1, 3, 4, 4))
    expected = 0.5 * (torch.tanh(torch.tensor(3.0)) + 1.0)
    assert torch.allclose(out, expected.expand_as(out))
    assert out.max() < 1.0
    out.mean().backward()
    assert (net.tail.bias.grad.abs() > 0).all()


def test_generator_is_fully_convolutional_and_trains():
    net = SRResNet(num_blocks=1, channels=4)
    lr, hr = torch.rand(2, 3, 5, 7), torch.rand(2, 3, 10, 14)
    F.mse_loss(net(lr), hr).backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("size", [32, 64])
def test_discriminator_accepts_any_size_and_returns_one_logit_per_image(size):
    net = SRDiscriminator(width=4, pool_size=2)
    x = torch.rand(3, 3, size, size, requires_grad=True)
    logits = net(x)
    assert logits.shape == (3,)
    logits.sum().backward()
    assert x.grad.abs().sum() > 0


def test_discriminator_widths_follow_ledig_doubling():
    net = SRDiscriminator(width=4, pool_size=3)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 8, 8, 16, 16, 32, 32]  # 64 -> 512 at width 64
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert net.classifier[1].in_features == 32 * 3 * 3 and net.classifier[1].out_features == 64  # 1024 at width 64


def test_discriminator_sizes_must_be_positive():
    with pytest.raises(ValueError, match="width=0 must be an integer >= 1"):
        SRDiscriminator(width=0)


# ------------------------------------------------------------------ training pairs, bicubic baseline


def test_pair_sizes_and_range_follow_the_paper():
    tile = torch.rand(3, 224, 224)
    hr, lr = make_sr_pair(tile)
    assert hr.shape == (3, 256, 256) and lr.shape == (3, 128, 128)
    for image in (hr, lr):
        assert image.min() >= 0.0 and image.max() <= 1.0


def test_pairs_of_a_batch_keep_the_batch():
    hr, lr = make_sr_pair(torch.rand(2, 3, 16, 16), hr_size=12, lr_size=6, hr_kernel="bilinear", lr_kernel="area")
    assert hr.shape == (2, 3, 12, 12) and lr.shape == (2, 3, 6, 6)


@pytest.mark.parametrize("kernel", ["bicubic", "bilinear", "area"])
def test_downscaling_a_constant_image_keeps_it_constant(kernel):
    tile = torch.full((3, 224, 224), 0.7)
    _, lr = make_sr_pair(tile, lr_kernel=kernel)
    assert torch.allclose(lr, torch.full_like(lr, 0.7), atol=1e-6)


def test_low_resolution_comes_from_the_tile_by_block_averaging_with_area():
    tile = torch.rand(1, 3, 8, 8)
    _, lr = make_sr_pair(tile, hr_size=8, lr_size=4, lr_kernel="area")
    block_means = tile.reshape(1, 3, 4, 2, 4, 2).mean(dim=(3, 5))
    assert torch.allclose(lr, block_means, atol=1e-6)


def test_bicubic_overshoot_is_clamped():
    checker = (torch.arange(8).view(1, 8) + torch.arange(8).view(8, 1)).remainder(2).float().expand(1, 3, 8, 8)
    raw = F.interpolate(checker, size=(16, 16), mode="bicubic", align_corners=False)
    assert raw.max() > 1.0 and raw.min() < 0.0  # the overshoot exists without the clamp
    hr = resize(checker, 16, "bicubic")
    assert hr.min() >= 0.0 and hr.max() <= 1.0
    up = bicubic_upscale(checker, scale=2)
    assert up.min() >= 0.0 and up.max() <= 1.0


def test_bicubic_baseline_doubles_the_size_and_keeps_constants():
    images = torch.full((2, 3, 8, 6), 0.3)
    up = bicubic_upscale(images)
    assert up.shape == (2, 3, 16, 12)
    assert torch.allclose(up, torch.full_like(up, 0.3), atol=1e-6)
    assert bicubic_upscale(torch.rand(3, 5, 5), scale=4).shape == (3, 20, 20)


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel='lanczos' must be one of"):
        make_sr_pair(torch.rand(3, 8, 8), lr_kernel="lanczos")


@pytest.mark.parametrize(("kwargs", "message"), [({"hr_size": 0}, "hr_size=0"), ({"lr_size": 2.5}, "lr_size=2.5")])
def test_bad_pair_size_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=f"{message} must be an integer >= 1"):
        make_sr_pair(torch.rand(3, 8, 8), **kwargs)


def test_bad_resize_size_is_refused():
    with pytest.raises(ValueError, match=r"size=-1 must be an integer >= 1"):
        resize(torch.rand(3, 8, 8), (8, -1))


def test_images_outside_the_unit_range_are_refused():
    with pytest.raises(ValueError, match=r"must be in \[0, 1\], got values in \[0, 255\]"):
        make_sr_pair(torch.tensor([0.0, 255.0]).view(1, 1, 2).expand(3, 2, 2))


def test_integer_images_are_refused_with_the_conversion():
    with pytest.raises(ValueError, match=r"torch.uint8 .*x.float\(\) / 255"):
        make_sr_pair(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_bicubic_baseline_refuses_a_bad_scale():
    with pytest.raises(ValueError, match="scale=0 must be an integer >= 1"):
        bicubic_upscale(torch.rand(3, 4, 4), scale=0)
