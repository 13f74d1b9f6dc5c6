"""The procedural lymph-node dataset: determinism, splits, value contract, the centre label rule, texture."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from advmed.data.lymph_node.synthetic_lymph_node import (
    CLASS_NAMES,
    SyntheticLymphNodeDataModule,
    centre_region,
    generate_lymph_node,
)
from advmed.data.tissue_rendering import single_thread
from tests.conftest import CONFIG_DIR
from tests.data.texture_checks import mean_colour_accuracy, small_cnn_accuracy


def _module(**kwargs) -> SyntheticLymphNodeDataModule:
    sizes = {
        "image_size": 32,
        "train_per_class": 4,
        "val_per_class": 2,
        "test_per_class": 2,
        "batch_size": 8,
    }
    return SyntheticLymphNodeDataModule(**{**sizes, **kwargs})


def test_same_seed_split_index_gives_identical_image_whatever_the_counts():
    small = _module(train_per_class=3, val_per_class=1)
    large = _module(train_per_class=25, val_per_class=3)
    small.setup("fit")
    large.setup("fit")
    n = len(small.train_set)
    assert torch.equal(small.train_set.images, large.train_set.images[:n])
    assert torch.equal(small.val_set.images, large.val_set.images[: len(small.val_set)])
    # indices asked for alone, out of order and across chunks are the same images (and masks) too
    picked = torch.tensor([45, 2, 33])
    images, masks = generate_lymph_node(0, "train", picked, 32, return_tumour_mask=True)
    assert torch.equal(images, large.train_set.images[picked])
    _, all_masks = generate_lymph_node(0, "train", torch.arange(50), 32, return_tumour_mask=True)
    assert torch.equal(masks, all_masks[picked])


def test_seed_and_split_change_images():
    a = generate_lymph_node(0, "train", torch.arange(4), 32)
    assert not torch.equal(a, generate_lymph_node(1, "train", torch.arange(4), 32))
    assert not torch.equal(a, generate_lymph_node(0, "test", torch.arange(4), 32))


def test_splits_share_no_image():
    dm = _module(train_per_class=10, val_per_class=5, test_per_class=5)
    dm.setup()
    seen = {}
    for split in ("train", "val", "test"):
        for image in getattr(dm, f"{split}_set").images:
            key = image.numpy().tobytes()
            assert seen.setdefault(key, split) == split, f"an image of {split} is also in {seen[key]}"


def test_public_attributes_before_setup_and_batch_contract():
    dm = _module()
    assert (dm.num_classes, dm.class_names, dm.in_channels, dm.image_size) == (2, list(CLASS_NAMES), 3, 32)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.02
    assert torch.bincount(dm.train_set.targets, minlength=2).tolist() == [4, 4]
    assert torch.equal(dm.val_set.targets, torch.arange(4) % 2)


def test_empty_request_gives_empty_batches():
    images, masks = generate_lymph_node(0, "val", torch.arange(0), 40, return_tumour_mask=True)
    assert (images.shape, images.dtype) == ((0, 3, 40, 40), torch.uint8)
    assert (masks.shape, masks.dtype) == ((0, 40, 40), torch.bool)


@pytest.mark.parametrize("size", [32, 64, 96])
def test_label_is_one_iff_tumour_reaches_the_centre_region(size):
    indices = torch.arange(96)
    _, masks = generate_lymph_node(3, "test", indices, size, return_tumour_mask=True)
    centre = centre_region(size)
    if size == 96:
        assert (centre.start, centre.stop) == (32, 64)  # PCam's 32 x 32 centre of a 96-px tile
    in_centre = masks[:, centre, centre].flatten(1).any(1)
    assert torch.equal(in_centre.long(), indices % 2)
    # Hard negatives: tumour outside the centre only, in a sizeable share of the negatives.
    hard = masks[indices % 2 == 0].flatten(1).any(1).float().mean().item()
    assert 0.1 < hard < 0.45, f"{hard:.2f} of the negatives carry tumour"


def test_tumour_is_drawn_where_its_mask_is(monkeypatch):
    """With the tumour tissue swapped for empty glass, the mask's pixels, and only they, turn white."""
    import advmed.data.lymph_node.synthetic_lymph_node as lymph_node

    monkeypatch.setattr(lymph_node, "tumour", lambda d, size, k: (torch.zeros(()),) * 4)
    images, masks = generate_lymph_node(0, "train", torch.arange(32), 64, return_tumour_mask=True)
    assert torch.equal(masks, generate_lymph_node(0, "train", torch.arange(32), 64, True)[1])
    # stay two pixels off the mask's edge, where tissue and glass blend (and the image is blurred)
    eroded = -F.max_pool2d(-masks[:, None].float(), 5, 1, 2)[:, 0] > 0.5
    grown = F.max_pool2d(masks[:, None].float(), 5, 1, 2)[:, 0] > 0.5
    brightness = images.float().mean(1)
    assert eroded.sum() > 1000 and (~grown).sum() > 1000
    assert brightness[eroded].min() > 150, "a tumour pixel still holds tissue"
    assert brightness[~grown].mean() < brightness[eroded].mean() - 40, "tissue outside the mask is pale"


def test_geometry_and_texture_scale_with_the_image_size():
    """64 px shows the same tiles as 96 px at a lower resolution: tumour share and colour agree."""
    big, big_masks = generate_lymph_node(0, "train", torch.arange(32), 96, return_tumour_mask=True)
    small, small_masks = generate_lymph_node(0, "train", torch.arange(32), 64, return_tumour_mask=True)
    big_share, small_share = big_masks.float().mean(), small_masks.float().mean()
    assert abs(big_share - small_share) < 0.03, f"tumour covers {big_share:.2f} vs {small_share:.2f}"
    assert abs(big.float().mean() - small.float().mean()) < 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 3}, "always has the 2 RGB classes"),
        ({"in_channels": 1}, "always has the 2 RGB classes"),
        ({"class_names": list(reversed(CLASS_NAMES))}, "always has the 2 RGB classes"),
        ({"train_per_class": 0}, "train_per_class must be at least 1"),
        ({"image_size": 24}, "image_size must be at least 32"),
        ({"train_fraction": 0.0}, r"train_fraction must be in \(0, 1\]"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _module(**kwargs)


def test_negative_indices_are_rejected():
    with pytest.raises(ValueError, match="indices must be non-negative"):
        generate_lymph_node(0, "train", torch.tensor([3, -1]), 32)


def test_label_needs_texture_not_just_mean_colour():
    """Mean colour alone predicts the label poorly; a small CNN trained briefly does far better."""
    dm = SyntheticLymphNodeDataModule(
        image_size=64, train_per_class=250, val_per_class=1, test_per_class=100, seed=0
    )
    dm.setup()
    train_x, test_x = dm.train_set.images.float() / 255, dm.test_set.images.float() / 255
    train_y, test_y = dm.train_set.targets, dm.test_set.targets
    colour = mean_colour_accuracy(train_x, train_y, test_x, test_y)
    with single_thread():  # tiny convolutions gain nothing from threads and stall on a busy machine
        cnn = small_cnn_accuracy(train_x, train_y, test_x, test_y, epochs=8)
    assert colour < 0.75, f"mean colour alone reaches {colour:.2f}"
    assert cnn > colour + 0.15, f"CNN {cnn:.2f} vs mean colour {colour:.2f}"


def test_config_states_every_argument_and_instantiates():
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "synthetic_lymph_node.yaml")
    assert set(cfg) - {"_target_"} == set(inspect.signature(SyntheticLymphNodeDataModule).parameters)
    overrides = {"image_size": 32, "train_per_class": 1, "val_per_class": 1, "test_per_class": 1}
    dm = instantiate(OmegaConf.merge(cfg, overrides))
    assert (dm.num_classes, dm.class_names, dm.in_channels) == (2, list(CLASS_NAMES), 3)
    dm.setup("test")
    assert dm.test_set[1][0].shape == (3, 32, 32)
