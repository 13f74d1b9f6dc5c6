"""NCT-CRC-HE-100K on folders in the dataset's exact layout, and on the real CRC-VAL-HE-7K sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from advmed.data.histology.nct_crc_he import CLASS_NAMES, ImageFolderDataset, NCTCRCHEDataModule
from advmed.data.readers import scan_class_folders


def write_nct_layout(root: Path, per_class: int, classes=CLASS_NAMES) -> Path:
    """``<root>/<CLASS>/<CLASS>-<ID>.tif``, 224x224 RGB uint8 TIFFs whose pixels encode their class.

    (The real files are PackBits-compressed; writing that needs imagecodecs, and the real-sample
    test below covers decoding it.)
    """
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            tile = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
            tile[:8, :8] = label * 10  # a class mark to check labels against pixels
            tifffile.imwrite(root / name / f"{name}-{rng.integers(1e8):08X}{i}.tif", tile, photometric="rgb")
    return root


@pytest.fixture(scope="module")
def nct_root(tmp_path_factory) -> Path:
    return write_nct_layout(tmp_path_factory.mktemp("nct") / "NCT-CRC-HE-100K", per_class=6)


def _module(root, **kwargs) -> NCTCRCHEDataModule:
    defaults = {"per_class": 5, "test_fraction": 0.2, "val_fraction": 0.25, "batch_size": 9, "num_workers": 0}
    return NCTCRCHEDataModule(root=root, **{**defaults, **kwargs})


def _path_of(dataset, index: int) -> Path:
    while not isinstance(dataset, ImageFolderDataset):  # unwrap SubsetDataset layers
        dataset, index = dataset.dataset, int(dataset.indices[index])
    return dataset.paths[index]


def test_balanced_subset_and_stratified_split_counts(nct_root):
    dm = _module(nct_root)
    dm.setup()
    # 5 drawn per class: round(0.2 * 5) = 1 test; of the 4 left, round(0.25 * 4) = 1 val, 3 train
    assert torch.bincount(dm.test_set.targets).tolist() == [1] * 9
    assert torch.bincount(dm.val_set.targets).tolist() == [1] * 9
    assert torch.bincount(dm.train_set.targets).tolist() == [3] * 9
    splits = [{_path_of(ds, i) for i in range(len(ds))} for ds in (dm.train_set, dm.val_set, dm.test_set)]
    assert sum(map(len, splits)) == len(set.union(*splits)) == 45  # disjoint, and 1 tile per class left out


def test_split_is_seeded(nct_root):
    def test_paths(seed):
        dm = _module(nct_root, seed=seed)
        dm.setup("test")
        return sorted(_path_of(dm.test_set, i) for i in range(len(dm.test_set)))

    assert test_paths(0) == test_paths(0) != test_paths(1)


def test_items_are_224_rgb_unit_floats_with_folder_labels(nct_root):
    dm = _module(nct_root, per_class=None)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (9, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert torch.allclose(x[:, :, 0, 0], (y * 10 / 255.0)[:, None].expand(-1, 3))  # label matches its folder
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 54


def test_resize_to_128(nct_root):
    dm = _module(nct_root, image_size=128)
    dm.setup("test")
    x, y = dm.test_set[0]
    assert x.shape == (3, 128, 128) and 0.0 <= x.min() and x.max() <= 1.0
    assert torch.allclose(
        x[:, 0, 0], torch.full((3,), int(y) * 10 / 255.0), atol=1e-4
    )  # flat corner survives


def test_test_root_replaces_held_out_split(nct_root, tmp_path):
    external = write_nct_layout(tmp_path / "CRC-VAL-HE-7K", per_class=2)
    dm = _module(nct_root, test_root=external)
    dm.setup()
    assert len(dm.test_set) == 18 and all(
        _path_of(dm.test_set, i).is_relative_to(external) for i in range(18)
    )
    assert len(dm.train_set) + len(dm.val_set) == 45  # all 5 drawn per class stay for training


def test_train_fraction(nct_root):
    dm = _module(nct_root, per_class=None, train_fraction=0.5)
    dm.setup("fit")
    # 6 per class: 1 test, 1 val (round(0.25 * 5)), 4 train -> half is 2
    assert torch.bincount(dm.train_set.targets).tolist() == [2] * 9


def test_missing_root_says_how_to_download():
    with pytest.raises(
        FileNotFoundError, match=r"not set.*Zenodo record 1214456.*<root>/ADI/\*\.tif.*ADVMED_NCT_CRC_HE_ROOT"
    ):
        NCTCRCHEDataModule(root=None)


def test_nonexistent_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"folder .*absent does not exist.*Zenodo record 1214456"):
        NCTCRCHEDataModule(root=tmp_path / "absent")


def test_per_class_larger_than_the_data(nct_root):
    dm = _module(nct_root, per_class=7)
    with pytest.raises(
        ValueError, match=r"per_class=7 but .* fewer tiles in \{'ADI': 6.*data.per_class=null"
    ):
        dm.setup()


def test_missing_class_folder_is_reported_at_setup(tmp_path):
    root = write_nct_layout(tmp_path / "partial", per_class=1, classes=CLASS_NAMES[:8])
    with pytest.raises(FileNotFoundError, match=r"class folder .*TUM is missing"):
        _module(root, per_class=None).setup()


def test_bad_fractions_and_class_names_are_rejected(nct_root):
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        _module(nct_root, val_fraction=0.0)
    with pytest.raises(ValueError, match="9 RGB classes"):
        _module(nct_root, class_names=list(reversed(CLASS_NAMES)))


@pytest.mark.data
def test_real_sample_tile(shared_data):
    sample = shared_data / "nct_crc_he" / "CRC-VAL-HE-7K"
    dataset = ImageFolderDataset(scan_class_folders(sample, CLASS_NAMES, strict=False), image_size=224)
    x, y = dataset[0]
    assert int(y) == CLASS_NAMES.index("NORM")
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.02
    small = ImageFolderDataset(scan_class_folders(sample, CLASS_NAMES, strict=False), image_size=128)[0][0]
    assert small.shape == (3, 128, 128)
    assert abs(small.mean() - x.mean()) < 0.01  # antialiased resize keeps the tile's brightness
