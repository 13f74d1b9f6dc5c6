"""GPU augmentation: built from config, label-preserving geometry, output stays in [0, 1]."""

from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch

from advmed.data.augmentation import RandomRot90, build_augmentation


def _batch(n=16, channels=3, size=16):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(1))


def test_disabled_builds_nothing():
    assert build_augmentation(enabled=False) is None


def test_output_stays_in_unit_range_under_strong_jitter():
    augment = build_augmentation(brightness=0.9, contrast=0.9, saturation=0.9, hue=0.5, jitter_p=1.0)
    x = torch.cat([torch.zeros(4, 3, 16, 16), torch.ones(4, 3, 16, 16), _batch(8)])
    out = augment(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, x)


def test_rot90_is_an_exact_rotation_per_image():
    x = _batch(32)
    out = RandomRot90(p=1.0)(x)
    for original, rotated in zip(x, out):
        candidates = [torch.rot90(original, k, dims=(-2, -1)) for k in (1, 2, 3)]
        assert any(torch.equal(rotated, c) for c in candidates)
    # with 32 images all three quarter-turns occur, so rotations are drawn per image
    turns = {
        next(k for k in (1, 2, 3) if torch.equal(r, torch.rot90(o, k, dims=(-2, -1)))) for o, r in zip(x, out)
    }
    assert turns == {1, 2, 3}


def test_rot90_needs_square_images():
    with pytest.raises(ValueError, match="square"):
        RandomRot90(p=1.0)(torch.rand(2, 3, 8, 10))


def test_zero_probabilities_leave_images_unchanged():
    augment = build_augmentation(hflip=0, vflip=0, rot90=0, jitter_p=0)
    x = _batch()
    assert torch.equal(augment(x), x)


def test_flips_only_permute_pixels():
    augment = build_augmentation(hflip=1.0, vflip=0, rot90=0, jitter_p=0)
    x = _batch()
    assert torch.equal(augment(x), x.flip(-1))


def test_grayscale_skips_colour_only_jitter():
    augment = build_augmentation(in_channels=1, saturation=0.5, hue=0.3, jitter_p=1.0)
    jitter = next(m for m in augment if isinstance(m, K.ColorJitter))
    assert "saturation=0.0" in repr(jitter) and "hue=0.0" in repr(jitter)
    out = augment(_batch(channels=1))
    assert out.shape == (16, 1, 16, 16) and 0.0 <= out.min() and out.max() <= 1.0


def test_unknown_key_is_rejected():
    with pytest.raises(TypeError, match="rotation"):
        build_augmentation(rotation=0.5)


def test_stain_jitter_is_added_only_when_asked_and_changes_colour_not_layout():
    from advmed.corruptions.stain_jitter import RandomStainShift

    assert not any(isinstance(m, RandomStainShift) for m in build_augmentation(in_channels=3))  # default: off
    only_stain = build_augmentation(in_channels=3, hflip=0, vflip=0, rot90=0, jitter_p=0, stain=1.0,
                                    stain_sigma=(0.2, 0.2))
    assert [type(m) for m in only_stain][0] is RandomStainShift
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 0.6 + 0.2
    y = only_stain(x)
    assert y.shape == x.shape and 0.0 <= y.min() and y.max() <= 1.0
    assert (y - x).abs().mean() > 0.01  # HED-strong moves the colours
    # a stain change keeps where things are: each image's brightness ranking of pixels barely moves
    rank = lambda t: t.mean(1).flatten(1).argsort(1).argsort(1).float()  # noqa: E731
    assert torch.corrcoef(torch.stack([rank(x)[0], rank(y)[0]]))[0, 1] > 0.9


def test_stain_jitter_on_grayscale_data_is_refused():
    with pytest.raises(ValueError, match=r"data.augment.stain=0.5: HED stain jitter is defined for H&E \(3-channel RGB\)"):
        build_augmentation(in_channels=1, stain=0.5)


def test_corruption_augmentation_applies_medmnist_c_corruptions_or_none_per_image():
    from advmed.corruptions import corruptions_for
    from advmed.corruptions.augmentation import RandomCorruption

    augment = build_augmentation(in_channels=1, hflip=0, vflip=0, rot90=0, jitter_p=0, modality="ct",
                                 corruptions=["brightness_up", "contrast_down"])
    corrupt = next(m for m in augment if isinstance(m, RandomCorruption))
    assert list(corrupt.shifts) == ["brightness_up", "contrast_down"]
    x = torch.rand(64, 1, 16, 16) * 0.5 + 0.25
    torch.manual_seed(3)
    y = augment(x)
    torch.manual_seed(3)
    assert torch.equal(augment(x), y)  # seed_everything governs it
    changed = (y - x).flatten(1).abs().amax(1) > 0
    assert 0.4 < changed.float().mean() < 0.9  # 2 corruptions + the identity, uniformly: ~2/3 changed
    # every changed image is one of the two corruptions at one of the five severities (both draw nothing)
    shifts = corruptions_for("ct", ["brightness_up", "contrast_down"])
    for i in changed.nonzero().flatten()[:8]:
        candidates = [shift(x[i:i + 1], s) for shift in shifts.values() for s in range(1, 6)]
        assert any(torch.equal(y[i:i + 1], c) for c in candidates)


def test_corruption_augmentation_needs_a_modality():
    with pytest.raises(ValueError, match=r"declares no modality"):
        build_augmentation(in_channels=3, corruptions="all")
