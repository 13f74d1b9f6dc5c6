"""The procedural histology dataset: determinism, splits, value contract, and texture over colour."""

from __future__ import annotations

import pytest
import torch

from advmed.data.histology.synthetic_histology import (
    CLASS_NAMES,
    SyntheticHistologyDataModule,
    generate_histology,
)
from advmed.data.tissue_rendering import single_thread
from tests.data.texture_checks import mean_colour_accuracy, small_cnn_accuracy


def _module(**kwargs) -> SyntheticHistologyDataModule:
    sizes = {
        "image_size": 32,
        "train_per_class": 4,
        "val_per_class": 2,
        "test_per_class": 2,
        "batch_size": 16,
    }
    return SyntheticHistologyDataModule(**{**sizes, **kwargs})


def test_same_seed_split_index_gives_identical_image_whatever_the_counts():
    small = _module(train_per_class=3, val_per_class=1)
    large = _module(train_per_class=20, val_per_class=7)
    small.setup("fit")
    large.setup("fit")
    n = len(small.train_set)
    assert torch.equal(small.train_set.images, large.train_set.images[:n])
    # a single index rendered alone (another chunk position in the request) is the same image too
    assert torch.equal(
        generate_histology(0, "train", torch.tensor([150]), 32)[0], large.train_set.images[150]
    )
    assert torch.equal(small.val_set.images[:9], large.val_set.images[:9])


def test_seed_and_split_change_images():
    a = generate_histology(0, "train", torch.arange(9), 32)
    assert not torch.equal(a, generate_histology(1, "train", torch.arange(9), 32))
    assert not torch.equal(a, generate_histology(0, "test", torch.arange(9), 32))


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
    assert (dm.num_classes, dm.class_names, dm.in_channels, dm.image_size) == (9, list(CLASS_NAMES), 3, 32)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.02
    assert torch.bincount(dm.train_set.targets, minlength=9).tolist() == [4] * 9
    assert torch.equal(dm.val_set.targets, torch.arange(18) % 9)


def test_train_fraction_subsets_the_training_split_per_class():
    dm = _module(train_per_class=10, train_fraction=0.3)
    dm.setup("fit")
    assert torch.bincount(dm.train_set.targets).tolist() == [3] * 9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 8}, "always has the 9 RGB classes"),
        ({"in_channels": 1}, "always has the 9 RGB classes"),
        ({"class_names": list(reversed(CLASS_NAMES))}, "always has the 9 RGB classes"),
        ({"test_per_class": 0}, "test_per_class must be at least 1"),
        ({"image_size": 8}, "image_size must be at least 16"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _module(**kwargs)


def test_classes_need_texture_not_just_mean_colour():
    """Mean colour alone separates the classes poorly; a small CNN trained briefly does far better."""
    dm = SyntheticHistologyDataModule(
        image_size=64, train_per_class=60, val_per_class=1, test_per_class=40, seed=0
    )
    dm.setup()
    train_x, test_x = dm.train_set.images.float() / 255, dm.test_set.images.float() / 255
    train_y, test_y = dm.train_set.targets, dm.test_set.targets
    colour = mean_colour_accuracy(train_x, train_y, test_x, test_y)
    with single_thread():  # tiny convolutions gain nothing from threads and stall on a busy machine
        cnn = small_cnn_accuracy(train_x, train_y, test_x, test_y)
    assert colour < 0.75, f"mean colour alone reaches {colour:.2f}"
    assert cnn > colour + 0.15, f"CNN {cnn:.2f} vs mean colour {colour:.2f}"
