"""SNAP: masks, composition, colour constraint, initialisation, stopping, universal patches,
stain deconvolution, and the bad inputs of its config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advmed.attacks import SNAP
from advmed.attacks.patch.cell_masks import cell_masks, nucleus_density
from advmed.attacks.patch.snap import apply_universal_patch, load_universal_patch, save_universal_patch
from advmed.corruptions.colour_deconvolution import rgb_to_hed
from tests.attacks.conftest import Normalize


def _two_class_net() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(
        Normalize(), nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
    ).eval()


@pytest.fixture
def tissue() -> torch.Tensor:
    """H&E-like images: pink background, purple 'nuclei' in the left half only."""
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([0.93, 0.75, 0.86]).view(1, 3, 1, 1).expand(6, 3, 32, 32).clone()
    x += 0.03 * torch.rand(6, 3, 32, 32, generator=g)
    nuclei = (torch.rand(6, 1, 32, 16, generator=g) < 0.3).float()
    x[..., :16] = x[..., :16] * (1 - nuclei) + torch.tensor([0.35, 0.2, 0.55]).view(1, 3, 1, 1) * nuclei
    return x.clamp(0, 1)


def _snap(**kwargs) -> SNAP:
    return SNAP(**{"area_fraction": 0.1, "steps": 5, "step_size": 0.05, "seed": 0, "confidence": None, **kwargs})


def test_patch_changes_only_masked_pixels_and_stays_in_the_images_own_colour_range(tissue):
    model, y = _two_class_net(), torch.ones(6, dtype=torch.long)
    result = _snap(colour_quantiles=(0.05, 0.95)).run(model, tissue, y)
    region = result.region.expand_as(tissue)
    assert torch.equal(result.x_adv[~region], tissue[~region])  # x' = (1 - m) x + m delta, exactly
    assert (result.x_adv[region] != tissue[region]).any()
    for i in range(len(tissue)):
        pixels = tissue[i].flatten(1).double().numpy()
        lo, hi = np.quantile(pixels, 0.05, axis=1), np.quantile(pixels, 0.95, axis=1)
        patched = result.x_adv[i][:, result.region[i, 0]].double().numpy()
        assert (patched >= lo[:, None] - 1e-6).all() and (patched <= hi[:, None] + 1e-6).all()


def test_mask_covers_at_most_the_area_fraction_and_nearly_all_of_it(tissue):
    for area in (0.02, 0.1, 0.3):
        result = _snap(area_fraction=area, steps=1).run(_two_class_net(), tissue, torch.ones(6, dtype=torch.long))
        covered = result.region.flatten(1).float().mean(1)
        assert (covered <= area + 1e-9).all()
        assert (covered >= 0.75 * area).all(), covered
        assert torch.equal(result.stats["area_fraction"], covered)


def test_blobs_are_many_and_small():
    mask = cell_masks(1, 96, 96, 0.1, (0.03, 0.06), generator=torch.Generator().manual_seed(0))[0, 0].numpy()
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())[1:]
    assert count >= 8, "a sporadic patch is many pieces"
    assert sizes.max() <= 0.03 * 96 * 96  # no piece is a big single patch


def test_num_blobs_caps_the_pieces():
    one = cell_masks(4, 64, 64, 0.3, (0.05, 0.06), max_blobs=1, irregularity=0.0,
                     generator=torch.Generator().manual_seed(1))
    largest_blob = np.pi * (0.06 * 64) ** 2
    assert (one.flatten(1).sum(1) <= largest_blob + 1).all()
    assert (one.flatten(1).sum(1) > 0).all()


def test_median_initialisation(tissue):
    # One tiny step: the patch is still the image's median colour.
    result = _snap(steps=1, step_size=1e-6, colour_quantiles=(0.0, 1.0)).run(_two_class_net(), tissue, torch.ones(6, dtype=torch.long))
    median = tissue.flatten(2).median(2).values
    for i in range(len(tissue)):
        patched = result.x_adv[i][:, result.region[i, 0]]
        assert torch.allclose(patched, median[i][:, None].expand_as(patched), atol=2e-6)


def test_random_initialisation_differs_from_median(tissue):
    y = torch.ones(6, dtype=torch.long)
    median = _snap(steps=1, step_size=1e-6).run(_two_class_net(), tissue, y).x_adv
    random = _snap(steps=1, step_size=1e-6, init="random").run(_two_class_net(), tissue, y).x_adv
    assert not torch.allclose(median, random)


@pytest.mark.parametrize("optimizer", ["sign", "adam"])
def test_targeted_patch_pulls_toward_class_0(tissue, optimizer):
    model, y = _two_class_net(), torch.ones(6, dtype=torch.long)
    with torch.no_grad():
        before = model(tissue).softmax(1)[:, 0]
    x_adv = _snap(optimizer=optimizer, steps=20, area_fraction=0.3).run(model, tissue, y).x_adv
    with torch.no_grad():
        after = model(x_adv).softmax(1)[:, 0]
    # A tiny untrained net moves little, but every image moves toward class 0.
    assert (after > before + 0.005).all(), (before, after)


def test_stops_each_image_once_the_target_confidence_is_reached(tissue):
    model, y = _two_class_net(), torch.ones(6, dtype=torch.long)
    with torch.no_grad():
        start = model(tissue).softmax(1)[:, 0]
    threshold = float(start.max()) + 0.01  # reachable, but not already reached
    result = _snap(steps=60, area_fraction=0.3, confidence=threshold).run(model, tissue, y)
    steps = result.stats["steps"]
    with torch.no_grad():
        final = model(result.x_adv).softmax(1)[:, 0]
    stopped = steps < 60
    assert stopped.any()
    assert (final[stopped] >= threshold - 1e-5).all()  # kept the iterate that reached it


def test_seeded_masks_repeat_and_seeds_differ(tissue):
    y = torch.ones(6, dtype=torch.long)
    a = _snap(steps=1).run(_two_class_net(), tissue, y).region
    assert torch.equal(a, _snap(steps=1).run(_two_class_net(), tissue, y).region)
    assert not torch.equal(a, _snap(steps=1, seed=1).run(_two_class_net(), tissue, y).region)


def test_nuclei_placement_puts_blobs_on_haematoxylin(tissue):
    y = torch.ones(6, dtype=torch.long)
    region = _snap(steps=1, placement="nuclei").run(_two_class_net(), tissue, y).region.float()
    left, right = region[..., :16].sum(), region[..., 16:].sum()
    assert left > 4 * right
    uniform = _snap(steps=1, placement="random").run(_two_class_net(), tissue, y).region.float()
    assert uniform[..., :16].sum() < 2 * uniform[..., 16:].sum()


def test_rgb_to_hed_matches_skimage():
    from skimage.color import rgb2hed

    x = torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    x[0, :, :2] = 0.0  # the log floor
    ours = rgb_to_hed(x).permute(0, 2, 3, 1).numpy()
    reference = np.stack([rgb2hed(image) for image in x.permute(0, 2, 3, 1).double().numpy()])
    assert np.abs(ours - reference).max() < 1e-5
    assert torch.allclose(rgb_to_hed(x, backend="skimage"), rgb_to_hed(x), atol=1e-5)


def test_nucleus_density_is_high_on_purple(tissue):
    density = nucleus_density(tissue, radius=2.0)
    assert density.shape == (6, 32, 32) and (density >= 0).all()
    assert density[..., :16].mean() > 3 * density[..., 16:].mean()


def test_universal_patch_file_round_trip_and_application(tmp_path, tissue):
    g = torch.Generator().manual_seed(0)
    delta = torch.rand(3, 32, 32, generator=g)
    mask = cell_masks(1, 32, 32, 0.1, (0.05, 0.1), generator=g)[0]
    path = save_universal_patch(tmp_path / "patch.pt", delta, mask, {"classifier_sha256": "abc"})
    record = load_universal_patch(path)
    assert torch.equal(record["delta"], delta) and torch.equal(record["mask"], mask)
    assert record["provenance"]["classifier_sha256"] == "abc"
    result = SNAP(patch_path=str(path)).run(_two_class_net(), tissue, torch.ones(6, dtype=torch.long))
    # The same mask on every image, the colours projected into each image's own range.
    assert torch.equal(result.region, mask.expand(6, 1, 32, 32))
    assert torch.equal(result.x_adv, apply_universal_patch(tissue, delta, mask, (0.02, 0.98)).x_adv)
    assert torch.equal(result.x_adv[~result.region.expand_as(tissue)], tissue[~result.region.expand_as(tissue)])


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"area_fraction": 0.0}, r"area_fraction must be in \(0, 0.5\]"),
        ({"area_fraction": 0.6}, r"area_fraction must be in \(0, 0.5\].*got 0.6"),
        ({"colour_quantiles": [0.9, 0.1]}, r"colour_quantiles must satisfy 0 <= low < high <= 1.*\[0.9, 0.1\]"),
        ({"colour_quantiles": [-0.1, 0.9]}, r"colour_quantiles must satisfy 0 <= low < high <= 1"),
        ({"colour_quantiles": [0.1, 1.5]}, r"colour_quantiles must satisfy 0 <= low < high <= 1"),
        ({"blob_radius": [0.06, 0.03]}, r"blob_radius must be \[min, max\]"),
        ({"blob_irregularity": 0.5}, r"blob_irregularity must be in \[0, 0.5\)"),
        ({"placement": "grid"}, r"placement must be one of \('random', 'nuclei'\)"),
        ({"optimizer": "sgd"}, r"optimizer must be one of \('sign', 'adam'\)"),
        ({"num_blobs": 0}, r"num_blobs must be an integer >= 1 or null"),
        ({"confidence": 1.5}, r"confidence must be in \(0, 1\] or null"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SNAP(**kwargs)


def test_target_class_outside_the_models_classes_is_refused(tissue):
    with pytest.raises(ValueError, match=r"target holds labels in \[2, 2\], outside \[0, 1\].*set target_class"):
        SNAP(target_class=2, steps=1).run(_two_class_net(), tissue, torch.ones(6, dtype=torch.long))


def test_universal_patch_of_another_image_size_is_refused(tmp_path, tissue):
    path = save_universal_patch(tmp_path / "p.pt", torch.rand(3, 64, 64), torch.ones(1, 64, 64, dtype=torch.bool), {})
    with pytest.raises(ValueError, match=r"trained for images of shape \(3, 64, 64\).*batch has \(3, 32, 32\).*data.image_size=64"):
        SNAP(patch_path=str(path))(_two_class_net(), tissue, torch.ones(6, dtype=torch.long))


def test_missing_or_foreign_patch_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt' does not exist.*experiment=snap/universal"):
        SNAP(patch_path=str(tmp_path / "nope.pt"))
    torch.save({"delta": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an advmed universal patch"):
        SNAP(patch_path=str(tmp_path / "other.pt"))
