"""MedMNIST on .npz files written in the exact MedMNIST layout (grayscale 28 px, RGB 64 px)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from advmed.data.medmnist.medmnist import MedMNISTDataModule

SPLIT_SIZES = {"train": 30, "val": 6, "test": 9}


def write_medmnist(
    path: Path, size: int, channels: int, num_classes: int, drop: str | None = None, **override
) -> Path:
    """Keys ``{split}_images`` uint8 (N, H, W) or (N, H, W, 3) and ``{split}_labels`` uint8 (N, 1)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SPLIT_SIZES.items():
        shape = (n, size, size) if channels == 1 else (n, size, size, 3)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % num_classes).astype(np.uint8).reshape(n, 1)
    arrays.update(override)
    arrays.pop(drop, None)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def pneumonia_28(tmp_path) -> Path:
    return write_medmnist(tmp_path / "pneumoniamnist.npz", size=28, channels=1, num_classes=2)


@pytest.fixture
def path_64(tmp_path) -> Path:
    return write_medmnist(tmp_path / "pathmnist_64.npz", size=64, channels=3, num_classes=9)


def test_grayscale_28(pneumonia_28):
    dm = MedMNISTDataModule(path=pneumonia_28, num_classes=2, in_channels=1, image_size=28, batch_size=8)
    assert dm.class_names == ["0", "1"]
    dm.setup()
    assert [len(getattr(dm, f"{s}_set")) for s in SPLIT_SIZES] == list(SPLIT_SIZES.values())
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    raw = np.load(pneumonia_28)
    np.testing.assert_array_equal((x[:, 0] * 255).round().byte().numpy(), raw["test_images"][:8])
    np.testing.assert_array_equal(y.numpy(), raw["test_labels"][:8, 0])


def test_rgb_64_keeps_channels_in_order(path_64):
    dm = MedMNISTDataModule(path=path_64, num_classes=9, in_channels=3, image_size=64)
    dm.setup("fit")
    x, y = dm.train_set[3]
    assert x.shape == (3, 64, 64) and int(y) == 3
    np.testing.assert_array_equal(
        (x.permute(1, 2, 0) * 255).round().byte().numpy(), np.load(path_64)["train_images"][3]
    )


def test_resize_on_access(path_64):
    dm = MedMNISTDataModule(path=path_64, num_classes=9, in_channels=3, image_size=28)
    dm.setup("test")
    x, _ = dm.test_set[0]
    assert x.shape == (3, 28, 28) and 0.0 <= x.min() and x.max() <= 1.0
    assert dm.test_set.images.shape[-1] == 64  # the cache stays at the stored size


def test_train_fraction_is_stratified(path_64):
    dm = MedMNISTDataModule(path=path_64, num_classes=9, in_channels=3, image_size=64, train_fraction=0.5)
    dm.setup("fit")
    # 30 training labels 0..8 cycling: classes 0-2 have 4 images, 3-8 have 3 -> 2 each (round half up)
    assert torch.bincount(dm.train_set.targets).tolist() == [2] * 9


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.npz does not exist.*medmnist.com.*data.path"):
        MedMNISTDataModule(path=tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match="path is not set"):
        MedMNISTDataModule(path=None)


def test_missing_key_is_named(tmp_path):
    path = write_medmnist(tmp_path / "broken.npz", size=28, channels=1, num_classes=2, drop="val_labels")
    dm = MedMNISTDataModule(path=path, num_classes=2, in_channels=1, image_size=28)
    with pytest.raises(
        ValueError, match=r"broken\.npz lacks key\(s\) \['val_labels'\] \(keys present: \['test_images'"
    ):
        dm.setup("test")


def test_labels_out_of_range(tmp_path):
    path = write_medmnist(tmp_path / "five.npz", size=28, channels=1, num_classes=5)
    dm = MedMNISTDataModule(path=path, num_classes=2, in_channels=1, image_size=28)
    with pytest.raises(ValueError, match=r"train_labels range over 0\.\.4, outside 0\.\.1 of num_classes=2"):
        dm.setup("fit")


def test_channel_mismatch(pneumonia_28):
    dm = MedMNISTDataModule(path=pneumonia_28, num_classes=2, in_channels=3, image_size=28)
    with pytest.raises(ValueError, match=r"are 1-channel images but in_channels=3; set data.in_channels=1"):
        dm.setup("test")


def test_multi_label_is_refused(tmp_path):
    labels = np.zeros((SPLIT_SIZES["train"], 14), np.uint8)
    path = write_medmnist(
        tmp_path / "chestmnist.npz", size=28, channels=1, num_classes=2, train_labels=labels
    )
    dm = MedMNISTDataModule(path=path, num_classes=14, in_channels=1, image_size=28)
    with pytest.raises(ValueError, match="multi-label"):
        dm.setup("fit")


def test_modality_and_stain_follow_the_file_name(pneumonia_28, path_64, tmp_path):
    """What the card and the corruption augmentation read: X-ray for PneumoniaMNIST, H&E histology
    for PathMNIST (MedMNIST+ size suffixes included), none for a set advmed.corruptions does not cover."""
    xray = MedMNISTDataModule(path=pneumonia_28, num_classes=2, in_channels=1, image_size=28)
    histology = MedMNISTDataModule(path=path_64, num_classes=9, in_channels=3, image_size=64,
                                   augment={"corruptions": ["defocus_blur"]})
    assert (xray.flag, xray.modality, xray.stain) == ("pneumoniamnist", "xray", None)
    assert (histology.flag, histology.modality, histology.stain) == ("pathmnist", "histology", "he")
    assert "defocus_blur" in repr(histology.augmentation)
    derma = write_medmnist(tmp_path / "dermamnist_64.npz", size=64, channels=3, num_classes=7)
    assert MedMNISTDataModule(path=derma, num_classes=7, in_channels=3, image_size=64).modality is None
    with pytest.raises(ValueError, match="declares no modality"):
        MedMNISTDataModule(path=derma, num_classes=7, in_channels=3, image_size=64, augment={"corruptions": "all"})
