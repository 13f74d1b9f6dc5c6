"""Class-conditional StyleGAN2 networks (Karras et al. 2020) at tiny widths: shapes, truncation,
style mixing, demodulation (eqs. 1-3), resampling filters, minibatch stddev, projection D, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from advmed.nets.stylegan2 import (
    MappingNetwork,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    channels_per_resolution,
    style_mix,
)
from advmed.nets.stylegan2_layers import (
    EqualLinear,
    MinibatchStdDev,
    ModulatedConv2d,
    downsample_2x,
    upsample_2x,
)

TINY = {"channel_base": 64, "channel_max": 16}  # 16 channels at 4 px, 8 at 8, 4 at 16, 2 at 32


def tiny_generator(resolution: int = 8, num_classes: int = 3, **kwargs) -> StyleGAN2Generator:
    return StyleGAN2Generator(z_dim=8, w_dim=8, num_classes=num_classes, img_resolution=resolution, mapping_layers=2,
                     **TINY, **kwargs)


def tiny_discriminator(resolution: int = 8, num_classes: int = 3, **kwargs) -> StyleGAN2Discriminator:
    return StyleGAN2Discriminator(num_classes=num_classes, img_resolution=resolution, **TINY, **kwargs)


LABELS = torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_shapes_and_finite_outputs(resolution):
    g, d = tiny_generator(resolution), tiny_discriminator(resolution)
    z = torch.randn(4, 8)
    images = g(z, LABELS)
    assert images.shape == (4, 3, resolution, resolution)
    assert torch.isfinite(images).all()
    assert g.num_ws == 2 * int(math.log2(resolution)) - 2  # 18 at 1024 px, as in the paper
    assert g.mapping(z, LABELS).shape == (4, g.num_ws, 8)
    logits = d(images, LABELS)
    assert logits.shape == (4,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_the_paper_resolutions_build_and_run(resolution):
    narrow = {"channel_base": resolution, "channel_max": 2}  # 1 channel at the top, 2 below: seconds on CPU
    g = StyleGAN2Generator(z_dim=4, w_dim=4, num_classes=9, img_resolution=resolution, mapping_layers=1, **narrow)
    d = StyleGAN2Discriminator(num_classes=9, img_resolution=resolution, **narrow)
    labels = torch.tensor([8, 0])
    images = g(torch.randn(2, 4), labels)
    assert images.shape == (2, 3, resolution, resolution) and d(images, labels).shape == (2,)


def test_config_f_channels():
    # 512 channels up to 64 px, then halving: 256 at 128 px (Lockshin et al.), 128 at 256 px.
    assert channels_per_resolution(256, 32768, 512) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}


def test_every_parameter_gets_a_gradient():
    g, d = tiny_generator(16), tiny_discriminator(16)
    d(g(torch.randn(4, 8), LABELS), LABELS).sum().backward()
    for name, net in (("G", g), ("D", d)):
        missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, f"{name} parameters without a gradient: {missing}"


def test_synthesis_maps_the_native_range_to_unit_range_and_sample_clamps():
    g = tiny_generator()
    ws = g.mapping(torch.randn(4, 8) * 3, LABELS)
    native = g.synthesis_network(ws, noise_mode="const")
    assert torch.allclose(g.synthesis(ws, noise_mode="const"), (native + 1) / 2)
    z = torch.randn(4, 8)
    out = g.sample(z, LABELS)
    assert not out.requires_grad and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out, g(z, LABELS, noise_mode="const").clamp(0, 1))


def test_discriminator_sees_minus_one_to_one_pixels():
    d = tiny_discriminator()
    seen = []
    d.from_rgb.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.rand(2, 3, 8, 8)
    d(x, torch.tensor([0, 1]))
    assert torch.allclose(seen[0], 2 * x - 1)


@pytest.mark.parametrize("bad", [100, 4, 12, 2048, 64.0])
def test_resolutions_that_are_not_powers_of_two_in_range_are_refused(bad):
    with pytest.raises(ValueError, match=rf"model.image_size={bad} must be a power of two \(32, 64, 128, 256"):
        tiny_generator(bad)
    with pytest.raises(ValueError, match=rf"model.image_size={bad} must be a power of two"):
        tiny_discriminator(bad)


# ---------------------------------------------------------------- mapping, truncation, style mixing


def test_w_avg_is_a_per_class_ema_of_w():
    g = tiny_generator(num_classes=3)
    z, labels = torch.randn(4, 8), torch.tensor([0, 0, 2, 2])
    w = g.mapping_network(z, labels)  # no update
    assert torch.equal(g.mapping_network.w_avg, torch.zeros(3, 8))
    g.mapping(z, labels, update_w_avg=True)
    beta = g.mapping_network.w_avg_beta
    # From zero: w_avg[c] = (1 - beta) * mean of the class's w; class 1 is absent and stays 0.
    assert torch.allclose(g.mapping_network.w_avg[0], (1 - beta) * (w[0] + w[1]) / 2, atol=1e-6)
    assert torch.allclose(g.mapping_network.w_avg[2], (1 - beta) * (w[2] + w[3]) / 2, atol=1e-6)
    assert torch.equal(g.mapping_network.w_avg[1], torch.zeros(8))
    assert "mapping_network.w_avg" in g.state_dict()


def test_truncation_psi_zero_gives_the_class_average_image_for_every_z():
    g = tiny_generator(num_classes=3)
    for _ in range(5):
        g.training_ws(torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2]))  # non-zero per-class averages
    same_class = torch.ones(4, dtype=torch.long)
    images = g(torch.randn(4, 8) * 5, same_class, truncation_psi=0.0, noise_mode="const")
    w_avg = g.mapping_network.w_avg[1].expand(1, g.num_ws, 8)
    expected = g.synthesis(w_avg, noise_mode="const")
    assert torch.allclose(images, expected.expand_as(images), atol=1e-5)
    other_class = g(torch.randn(1, 8), torch.tensor([2]), truncation_psi=0.0, noise_mode="const")
    assert not torch.allclose(other_class, expected, atol=1e-3)
    # psi = 1 is no truncation: different z, different images.
    untruncated = g(torch.randn(2, 8), torch.ones(2, dtype=torch.long), truncation_psi=1.0, noise_mode="const")
    assert not torch.allclose(untruncated[0], untruncated[1], atol=1e-3)


def test_truncation_cutoff_truncates_only_the_first_layers():
    g = tiny_generator(16)
    g.training_ws(torch.randn(4, 8), LABELS)
    z = torch.randn(4, 8)
    plain = g.mapping(z, LABELS)
    ws = g.mapping(z, LABELS, truncation_psi=0.5, truncation_cutoff=2)
    centre = g.mapping_network.w_avg[LABELS][:, None]
    assert torch.allclose(ws[:, :2], centre + 0.5 * (plain[:, :2] - centre), atol=1e-6)
    assert torch.equal(ws[:, 2:], plain[:, 2:])


def test_style_mixing_changes_the_image_only_when_the_crossover_is_below_num_ws():
    g = tiny_generator(16)
    ws, ws_other = g.mapping(torch.randn(2, 8), LABELS[:2]), g.mapping(torch.randn(2, 8), LABELS[:2])
    base = g.synthesis(ws, noise_mode="const")
    assert torch.equal(g.synthesis(style_mix(ws, ws_other, g.num_ws), noise_mode="const"), base)
    for crossover in range(g.num_ws):
        mixed = style_mix(ws, ws_other, crossover)
        assert torch.equal(mixed[:, :crossover], ws[:, :crossover]) and torch.equal(mixed[:, crossover:], ws_other[:, crossover:])
        assert not torch.allclose(g.synthesis(mixed, noise_mode="const"), base, atol=1e-4), crossover


def test_training_ws_mixes_with_the_given_probability_and_updates_w_avg():
    g = tiny_generator(16)
    z = torch.randn(2, 8)
    plain = g.mapping(z, LABELS[:2])
    unmixed = g.training_ws(z, LABELS[:2], mixing_prob=0.0)
    assert torch.allclose(unmixed, plain) and not torch.equal(g.mapping_network.w_avg, torch.zeros(3, 8))
    mixed = g.training_ws(z, LABELS[:2], mixing_prob=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(mixed[:, 0], plain[:, 0])  # the crossover is >= 1
    assert not torch.allclose(mixed[:, -1], plain[:, -1])  # ... and < num_ws
    again = g.training_ws(z, LABELS[:2], mixing_prob=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mixed, again)


# ---------------------------------------------------------------- layers


def test_equalized_linear_scales_weights_at_run_time():
    layer = EqualLinear(4, 2, lr_mul=0.01, bias_init=1.0)
    assert torch.allclose(layer.bias, torch.full((2,), 100.0))  # stored / lr_mul: starts at bias_init
    assert torch.allclose(layer(torch.zeros(1, 4)), torch.ones(1, 2))
    with torch.no_grad():
        layer.weight.fill_(100.0)
    # weight * lr_mul / sqrt(fan_in) = 100 * 0.01 / 2 = 0.5 per input; four ones: 2, plus the bias 1.
    assert torch.allclose(layer(torch.ones(1, 4)), torch.full((1, 2), 3.0))


def test_modulated_conv_matches_a_per_sample_convolution():
    conv = ModulatedConv2d(3, 5, w_dim=4, kernel_size=3)
    x, w = torch.randn(2, 3, 6, 6), torch.randn(2, 4)
    styles = conv.affine(w)
    expected = []
    for i in range(2):
        weight = conv.weight * conv.weight_gain * styles[i][None, :, None, None]  # eq. 1
        weight = weight / (weight.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()  # eq. 3
        expected.append(F.conv2d(x[i:i + 1], weight, padding=1))
    assert torch.allclose(conv(x, w), torch.cat(expected), atol=1e-5)


@pytest.mark.parametrize("style_scale", [0.1, 1.0, 10.0])
def test_demodulation_gives_unit_output_std_for_unit_input(style_scale):
    conv = ModulatedConv2d(32, 32, w_dim=8)
    x, w = torch.randn(2, 32, 64, 64), torch.randn(2, 8) * style_scale
    without = ModulatedConv2d(32, 32, w_dim=8, demodulate=False)
    without.load_state_dict(conv.state_dict())
    with torch.no_grad():
        per_sample_std = conv(x, w).flatten(1).std(dim=1)
        undemodulated_std = without(x, w).flatten(1).std(dim=1)
    assert torch.allclose(per_sample_std, torch.ones(2), atol=0.05)
    if style_scale == 10.0:  # large styles: only demodulation brings the std back to 1
        assert float(undemodulated_std.min()) > 2.0


def test_resampling_filters_are_the_1331_filter():
    row = torch.tensor([0.0, 4.0, 8.0, 4.0]).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    up = upsample_2x(row)
    # Interior outputs mix their two nearest inputs 0.75 / 0.25; the border sees zero padding.
    assert torch.allclose(up[0, 0, 3], torch.tensor([0.0, 1.0, 3.0, 5.0, 7.0, 7.0, 5.0, 3.0]))
    constant = torch.full((1, 2, 8, 8), 3.0)
    assert torch.allclose(upsample_2x(constant)[..., 1:-1, 1:-1], torch.full((1, 2, 14, 14), 3.0))
    assert upsample_2x(constant).shape == (1, 2, 16, 16)
    down = downsample_2x(torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8))
    # Output j filters inputs 2j-1 .. 2j+2 with [1, 3, 3, 1] / 8 per axis: mean of ramp = 2j + 0.5.
    assert down.shape == (1, 1, 4, 4)
    assert torch.allclose(down[0, 0, 1:3, 1:3], torch.tensor([[2.5, 4.5], [2.5, 4.5]]))


def test_minibatch_stddev_of_identical_images_is_zero():
    layer = MinibatchStdDev(group_size=4, num_features=1)
    x = torch.randn(1, 5, 4, 4).repeat(8, 1, 1, 1)
    out = layer(x)
    assert out.shape == (8, 6, 4, 4) and torch.equal(out[:, :5], x)
    assert float(out[:, 5].abs().max()) == pytest.approx(1e-4, rel=1e-3)  # sqrt(0 + eps): zero up to eps


def test_minibatch_stddev_matches_a_hand_computed_group_std():
    layer = MinibatchStdDev(group_size=4, num_features=1)
    values = torch.tensor([0.0, 10.0, 2.0, 10.0, 4.0, 10.0, 6.0, 10.0])  # groups: i mod 2
    out = layer(values.view(8, 1, 1, 1).expand(8, 2, 3, 3).contiguous())
    # Group 0 holds 0, 2, 4, 6: population std sqrt(5); group 1 holds 10 four times: std 0.
    assert torch.allclose(out[0::2, 2], torch.full((4, 3, 3), math.sqrt(5.0 + 1e-8)))
    assert torch.allclose(out[1::2, 2], torch.full((4, 3, 3), 1e-4))
    # 6 samples: the largest group size <= 4 that divides 6 is 3 (groups i mod 2 again).
    six = MinibatchStdDev(4, 1)(torch.tensor([0.0, 1.0, 3.0, 1.0, 6.0, 1.0]).view(6, 1, 1, 1))
    assert six[0, 1].item() == pytest.approx(math.sqrt(6.0), rel=1e-6)  # std of 0, 3, 6
    assert six[1, 1].item() == pytest.approx(1e-4, rel=1e-3)


def test_discriminator_projects_features_on_the_class_embedding():
    d = tiny_discriminator(num_classes=3)
    x = torch.rand(4, 3, 8, 8)
    logits = {c: d(x, torch.full((4,), c)) for c in range(3)}
    assert not torch.allclose(logits[0], logits[1])
    assert torch.equal(d(x, torch.full((4,), 0)), logits[0])
    with torch.no_grad():
        d.class_embedding.weight[2] = 2.0 * d.class_embedding.weight[0]
    # The logit is linear in the class row: <out(x), cmap(c)> / sqrt(cmap_dim).
    assert torch.allclose(d(x, torch.full((4,), 2)), 2.0 * logits[0], atol=1e-6)


def test_noise_modes():
    g = tiny_generator()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(1.0)
    z = torch.randn(2, 8)
    labels = LABELS[:2]
    assert torch.equal(g(z, labels, noise_mode="const"), g(z, labels, noise_mode="const"))
    assert torch.equal(g(z, labels, noise_mode="none"), g(z, labels, noise_mode="none"))
    assert not torch.allclose(g(z, labels, noise_mode="random"), g(z, labels, noise_mode="random"))
    assert not torch.allclose(g(z, labels, noise_mode="const"), g(z, labels, noise_mode="none"))


# ---------------------------------------------------------------- clear errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda g: g(torch.randn(2, 8)), r"labels are required: the model has num_classes=3"),
        (lambda g: g(torch.randn(2, 8), torch.tensor([0.0, 1.0])), r"labels must be integer class indices of shape \(2,\)"),
        (lambda g: g(torch.randn(2, 8), torch.zeros(2, 3, dtype=torch.long)), r"got torch.int64 of shape \(2, 3\)"),
        (lambda g: g(torch.randn(2, 8), torch.tensor([0, 3])), r"labels \[0, 3\] must lie in \[0, 2\]"),
        (lambda g: g(torch.randn(2, 7), LABELS[:2]), r"z must have shape \(N, 8\), got \(2, 7\)"),
        (lambda g: g.synthesis(torch.randn(2, 3, 8)), r"ws must have shape \(N, 4, 8\)"),
        (lambda g: g(torch.randn(2, 8), LABELS[:2], noise_mode="fixed"), r"noise_mode='fixed' must be one of"),
        (lambda g: g(torch.randn(2, 8), LABELS[:2], truncation_psi=0.5, truncation_cutoff=5),
         r"truncation_cutoff=5 must be an integer in \[0, num_ws=4\]"),
        (lambda g: g.training_ws(torch.randn(2, 8), LABELS[:2], mixing_prob=1.5), r"model.style_mixing_prob=1.5 must be in \[0, 1\]"),
        (lambda g: style_mix(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8), 5), r"crossover=5 must lie in \[0, num_ws=4\]"),
    ],
)
def test_bad_generator_inputs_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny_generator())


def test_bad_discriminator_inputs_are_clear_errors():
    d = tiny_discriminator()
    with pytest.raises(ValueError, match=r"images of shape \(N, 3, 8, 8\) in \[0, 1\], got \(2, 1, 8, 8\)"):
        d(torch.rand(2, 1, 8, 8), LABELS[:2])
    with pytest.raises(ValueError, match=r"labels \[5, 0\] must lie in \[0, 2\]"):
        d(torch.rand(2, 3, 8, 8), torch.tensor([5, 0]))


def test_one_class_models_take_no_labels():
    g, d = tiny_generator(num_classes=1), tiny_discriminator(num_classes=1)
    images = g(torch.randn(2, 8))
    assert torch.equal(d(images), d(images, torch.zeros(2, dtype=torch.long)))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: tiny_generator(num_classes=0), r"model.num_classes=0 must be an integer >= 1"),
        (lambda: StyleGAN2Generator(img_resolution=32, channel_base=16), r"model.channel_base=16 gives no channels at 32 px"),
        (lambda: StyleGAN2Generator(img_resolution=8, channel_max=0), r"model.channel_max=0 must be an integer >= 1"),
        (lambda: tiny_generator(img_channels=0), r"model.img_channels=0 must be an integer >= 1"),
        (lambda: MappingNetwork(w_avg_beta=1.0), r"model.w_avg_beta=1.0 must be in \[0, 1\)"),
        (lambda: tiny_discriminator(mbstd_num_features=3), r"model.mbstd_num_features=3 must be an integer >= 1 that divides"),
        (lambda: tiny_discriminator(mbstd_group_size=0), r"model.mbstd_group_size=0 must be an integer >= 1"),
        (lambda: tiny_discriminator(num_classes=0), r"model.num_classes=0 must be an integer >= 1"),
    ],
)
def test_bad_settings_are_clear_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()
