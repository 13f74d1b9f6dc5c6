"""DiffAugment (Zhao et al. 2020): each operation does what the paper defines, per image, with
gradients flowing through it, and the StyleGAN2 module shows the discriminator only augmented images."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from advmed.nets.diff_augment import FILL, DiffAugment, brightness, contrast, cutout, saturation, translation
from tests.models.stylegan2_toy import data, module, save_judge, trainer


def _images(n: int = 4, size: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, 3, size, size)


def test_brightness_adds_one_value_per_image_within_a_quarter():
    x = _images()
    shift = brightness(x) - x
    per_image = shift.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-6)
    assert per_image[:, 0].abs().max() <= 0.25 and per_image[:, 0].std() > 0


def test_saturation_keeps_each_pixels_channel_mean_and_contrast_keeps_the_image_mean():
    x = _images()
    assert torch.allclose(saturation(x).mean(1), x.mean(1), atol=1e-6)
    out = contrast(x)
    assert torch.allclose(out.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-6)
    # A factor in [0.5, 1.5): the spread about the mean scales by it.
    factor = (out - out.mean((1, 2, 3), keepdim=True)).std((1, 2, 3)) / (x - x.mean((1, 2, 3), keepdim=True)).std((1, 2, 3))
    assert ((factor >= 0.5 - 1e-5) & (factor < 1.5)).all()


def _shift_with_fill(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.full_like(x, FILL)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = x[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_translation_shifts_each_image_by_whole_pixels_up_to_an_eighth_with_grey_fill():
    x = _images(8)
    out = translation(x)
    shifts = set()
    for image, result in zip(x, out):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(_shift_with_fill(image, dy, dx), result)]
        assert len(matches) == 1  # an exact integer shift of at most 16 / 8 = 2 pixels
        shifts.add(matches[0])
    assert len(shifts) > 1  # drawn per image


def test_cutout_fills_one_square_of_half_the_side_with_grey_and_leaves_the_rest():
    x = _images(16)
    out = cutout(x)
    for image, result in zip(x, out):
        changed = (result != image).any(0)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8
        box = result[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert torch.all(box == FILL)  # a solid rectangle, cropped at the border when its centre is near one
    full = [(result != image).any(0).sum().item() for image, result in zip(x, out)]
    assert 64 in full  # an uncropped hole is exactly 8 x 8


def test_gradients_flow_through_every_policy_to_the_input():
    x = _images().requires_grad_(True)
    torch.manual_seed(1)
    DiffAugment("color,translation,cutout")(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Geometry alone: a pixel that lands in the output once gets gradient 1, one cut out or shifted off gets 0.
    x.grad = None
    torch.manual_seed(1)
    out = DiffAugment("translation,cutout")(x)
    out.sum().backward()
    assert set(x.grad.unique().tolist()) == {0.0, 1.0}
    assert x.grad.sum() == (out != FILL).sum()


def test_no_policy_is_the_identity_and_an_unknown_one_is_refused():
    x = _images()
    assert DiffAugment(None)(x) is x and DiffAugment("")(x) is x
    with pytest.raises(ValueError, match=r"model\.diff_augment='color,flip': unknown \['flip'\]"):
        DiffAugment("color,flip")


def test_the_stylegan2_critic_sees_only_augmented_images_and_training_stays_finite(tmp_path):
    L.seed_everything(0)
    model = module(save_judge(tmp_path), diff_augment="cutout")
    seen: list[torch.Tensor] = []
    model.critic.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    fit = trainer(tmp_path, 1)
    fit.fit(model, datamodule=data())
    assert seen and all(((images == FILL).all(1).sum((1, 2)) >= 16).all() for images in seen)
    for name in ("train/d_loss", "train/g_loss", "train/d_r1"):
        assert torch.isfinite(fit.callback_metrics[name]), name
