"""PatchCamelyon on HDF5 files written in the exact official layout (names, dataset keys, shapes, dtypes)."""

from __future__ import annotations

import gzip
import inspect
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from advmed.data.lymph_node.pcam import PCamDataModule, PCamH5Dataset
from advmed.data.lymph_node.pcam_layout import CLASS_NAMES, FILE_TEMPLATE
from tests.conftest import CONFIG_DIR

SPLIT_SIZES = {"train": 20, "valid": 12, "test": 12}
OFFSETS = {"train": 0, "valid": 20, "test": 32}  # global tile index = offset + position in the file
LABEL_MARK = (40, 200)  # value of a patch inside the centre 32x32 region, per label


def pcam_tile(index: int, label: int) -> np.ndarray:
    """A (96, 96, 3) uint8 tile: random texture, corner 8x8 = 5 * index, centre patch = the label's mark."""
    tile = np.random.default_rng(index).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    tile[:8, :8] = 5 * index
    tile[44:52, 44:52] = LABEL_MARK[label]
    return tile


def pcam_labels(split: str) -> np.ndarray:
    # every other tile positive: balanced classes in every split
    return (np.arange(SPLIT_SIZES[split]) % 2).astype(np.uint8)


def write_pcam(root: Path, splits=tuple(SPLIT_SIZES), **dataset_kwargs) -> Path:
    """``camelyonpatch_level_2_split_{split}_{x,y}.h5`` with datasets x (N, 96, 96, 3) and y (N, 1, 1, 1) uint8.

    Stored as the official files are, as plain (contiguous) HDF5 datasets; ``dataset_kwargs``
    (e.g. chunks, compression) change the storage of x.
    """
    root.mkdir(parents=True, exist_ok=True)
    for split in splits:
        labels = pcam_labels(split)
        tiles = np.stack([pcam_tile(OFFSETS[split] + i, int(y)) for i, y in enumerate(labels)])
        with h5py.File(root / FILE_TEMPLATE.format(split=split, key="x"), "w") as f:
            f.create_dataset("x", data=tiles, **dataset_kwargs)
        with h5py.File(root / FILE_TEMPLATE.format(split=split, key="y"), "w") as f:
            f.create_dataset("y", data=labels.reshape(-1, 1, 1, 1))
    return root


@pytest.fixture(scope="module")
def pcam_root(tmp_path_factory) -> Path:
    return write_pcam(tmp_path_factory.mktemp("pcam"))


def _module(root, **kwargs) -> PCamDataModule:
    return PCamDataModule(root=root, **{"batch_size": 8, "num_workers": 0, **kwargs})


def _index_of(x: torch.Tensor) -> int:
    """The global tile index from the corner mark of a native-size item."""
    return round(float(x[0, 0, 0]) * 255 / 5)


def _label_of(x: torch.Tensor) -> int:
    return LABEL_MARK.index(round(float(x[0, 48, 48]) * 255))


def test_official_splits_map_to_train_val_test(pcam_root):
    dm = _module(pcam_root)
    dm.setup()
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        dataset = getattr(dm, f"{split}_set")
        assert len(dataset) == SPLIT_SIZES[name]
        assert dataset.targets.tolist() == pcam_labels(name).tolist()
        indices = [_index_of(dataset[i][0]) for i in range(len(dataset))]
        assert indices == [OFFSETS[name] + i for i in range(SPLIT_SIZES[name])]  # the right file, in order


def test_items_are_native_unit_floats_with_their_labels(pcam_root):
    dm = _module(pcam_root)
    dm.setup("test")
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (8, 3, 96, 96) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert [_label_of(image) for image in x] == y.tolist() == [0, 1] * 4
    index = OFFSETS["test"] + 3
    assert torch.equal(dm.test_set[3][0], torch.from_numpy(pcam_tile(index, 1)).permute(2, 0, 1) / 255.0)


def test_resize_to_224_is_antialiased(pcam_root):
    dm = _module(pcam_root, image_size=224)
    dm.setup("test")
    x, y = dm.test_set[5]
    assert x.shape == (3, 224, 224) and 0.0 <= x.min() and x.max() <= 1.0
    assert _index_of(x) == OFFSETS["test"] + 5  # the flat 8x8 corner survives the resize
    native = torch.from_numpy(pcam_tile(OFFSETS["test"] + 5, int(y))).permute(2, 0, 1) / 255.0
    assert abs(float(x.mean() - native.mean())) < 0.01


def test_center_crop_keeps_exactly_the_labelled_centre(pcam_root):
    dm = _module(pcam_root, center_crop=32, image_size=32)
    dm.setup("test")
    x, y = dm.test_set[4]
    expected = pcam_tile(OFFSETS["test"] + 4, int(y))[32:64, 32:64]
    assert x.shape == (3, 32, 32)
    assert torch.equal(x, torch.from_numpy(expected).permute(2, 0, 1) / 255.0)
    big = _module(pcam_root, center_crop=32, image_size=96)
    big.setup("test")
    assert big.test_set[4][0].shape == (3, 96, 96)  # crop first, then resize


def test_train_fraction_is_stratified_and_seeded(pcam_root):
    def subset(seed):
        dm = _module(pcam_root, train_fraction=0.5, seed=seed)
        dm.setup("fit")
        return dm.train_set

    first = subset(0)
    assert torch.bincount(first.targets).tolist() == [5, 5]
    assert torch.equal(first.indices, subset(0).indices)
    assert not torch.equal(first.indices, subset(1).indices)
    assert len(_module(pcam_root).train_dataloader().dataset) == 20


def test_dataset_opens_lazily_and_pickles_without_its_handle(pcam_root):
    dm = _module(pcam_root)
    dm.setup("test")
    dataset = dm.test_set
    assert dataset._handle is None  # setup checked the file but holds nothing open
    x, _ = dataset[2]
    assert dataset._handle is not None and dataset._pid == os.getpid()
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._handle is None and clone._pid is None
    assert torch.equal(clone[2][0], x)
    dataset.close()
    assert dataset._handle is None and torch.equal(dataset[2][0], x)  # reopens on demand


class _WithPid(Dataset):
    """Items of a PCam dataset plus whether the handle that read them belongs to this process."""

    def __init__(self, dataset: PCamH5Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        x, y = self.dataset[index]
        return x, y, self.dataset._pid == os.getpid(), os.getpid()


def test_workers_open_their_own_handle_and_read_the_same_items(pcam_root):
    dm = _module(pcam_root)
    dm.setup("test")
    dataset = dm.test_set
    dataset[0]  # the parent holds an open handle when the workers fork
    loader = DataLoader(_WithPid(dataset), batch_size=3, num_workers=2)
    xs, ys, own, pids = (torch.cat(parts) for parts in zip(*loader))
    assert own.all() and len(set(pids.tolist()) - {os.getpid()}) == 2
    assert torch.equal(xs, torch.stack([dataset[i][0] for i in range(len(dataset))]))
    assert torch.equal(ys, dataset.targets)


def test_chunked_compressed_storage_reads_the_same(tmp_path, pcam_root):
    root = write_pcam(tmp_path / "chunked", splits=("test",), chunks=(4, 96, 96, 3), compression="gzip")
    plain, chunked = _module(pcam_root), _module(root)
    plain.setup("test")
    chunked.setup("test")
    assert torch.equal(chunked.test_set[7][0], plain.test_set[7][0])


# --- bad input: each case names the file and the fix -------------------------------------------


def test_unset_root_says_where_to_download(monkeypatch):
    with pytest.raises(
        FileNotFoundError, match=r"not set.*Zenodo record 2546921.*basveeling/pcam.*ADVMED_PCAM_ROOT"
    ):
        PCamDataModule(root=None)


def test_nonexistent_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"folder .*absent does not exist.*2546921"):
        PCamDataModule(root=tmp_path / "absent")


def test_missing_split_file_names_it_and_the_download(tmp_path):
    root = write_pcam(tmp_path / "only_test", splits=("test",))
    dm = _module(root)
    dm.setup("test")  # the splits present work on their own
    with pytest.raises(
        FileNotFoundError,
        match=r"camelyonpatch_level_2_split_train_x\.h5 is missing.*Zenodo record 2546921"
        r".*camelyonpatch_level_2_split_valid_y\.h5",
    ):
        dm.setup("fit")


def test_gzipped_file_must_be_gunzipped_first(tmp_path):
    root = write_pcam(tmp_path / "gz", splits=("test",))
    x_path = root / FILE_TEMPLATE.format(split="test", key="x")
    with gzip.open(x_path.with_name(x_path.name + ".gz"), "wb") as archive:
        archive.write(x_path.read_bytes())
    x_path.unlink()
    with pytest.raises(FileNotFoundError, match=r"split_test_x\.h5\.gz is still gzipped; gunzip it first"):
        _module(root).setup("test")


def _rewrite(root: Path, split: str, key: str, name: str, data: np.ndarray) -> None:
    with h5py.File(root / FILE_TEMPLATE.format(split=split, key=key), "w") as f:
        f.create_dataset(name, data=data)


def _broken(tmp_path, key: str, name: str, data: np.ndarray) -> PCamDataModule:
    root = write_pcam(tmp_path / "broken", splits=("test",))
    _rewrite(root, "test", key, name, data)
    return _module(root)


def test_length_mismatch(tmp_path):
    dm = _broken(tmp_path, "y", "y", np.zeros((11, 1, 1, 1), np.uint8))
    with pytest.raises(ValueError, match=r"test_x\.h5 holds 12 tiles but .*test_y\.h5 holds 11 labels"):
        dm.setup("test")


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (np.zeros((12, 96, 96, 3), np.float32), r"float32 \(12, 96, 96, 3\)"),
        (np.zeros((12, 3, 96, 96), np.uint8), r"uint8 \(12, 3, 96, 96\)"),  # channel-first
    ],
)
def test_wrong_image_dtype_or_shape(tmp_path, data, found):
    dm = _broken(tmp_path, "x", "x", data)
    with pytest.raises(
        ValueError, match=rf"test_x\.h5: dataset 'x' is {found}, expected uint8 \(N, 96, 96, 3\)"
    ):
        dm.setup("test")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros((12, 2), np.uint8), r"dataset 'y' is uint8 \(12, 2\), expected integer labels"),
        (np.zeros((12, 1, 1, 1), np.float32), r"dataset 'y' is float32 .*expected integer labels"),
        (np.full((12, 1, 1, 1), 2, np.uint8), r"labels must be 0 or 1, found \[2\]"),
    ],
)
def test_wrong_labels(tmp_path, data, message):
    dm = _broken(tmp_path, "y", "y", data)
    with pytest.raises(ValueError, match=rf"test_y\.h5: {message}"):
        dm.setup("test")


@pytest.mark.parametrize("key", ["x", "y"])
def test_missing_dataset_key(tmp_path, key):
    shape = (12, 96, 96, 3) if key == "x" else (12, 1, 1, 1)
    dm = _broken(tmp_path, key, "images", np.zeros(shape, np.uint8))
    with pytest.raises(ValueError, match=rf"test_{key}\.h5 has no dataset '{key}' \(found \['images'\]\)"):
        dm.setup("test")


def test_fixed_facts_and_crop_are_checked(pcam_root):
    with pytest.raises(ValueError, match=r"2 RGB classes \['no_metastasis', 'metastasis'\]"):
        _module(pcam_root, class_names=["metastasis", "no_metastasis"])
    with pytest.raises(ValueError, match=r"2 RGB classes"):
        _module(pcam_root, in_channels=1)
    with pytest.raises(ValueError, match=r"center_crop must be null or in 1\.\.96"):
        _module(pcam_root, center_crop=128)


# --- config -------------------------------------------------------------------------------------


def test_config_keys_are_the_constructor_arguments():
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "pcam.yaml")
    assert set(cfg) - {"_target_"} == set(inspect.signature(get_class(cfg._target_)).parameters)
    assert list(cfg.class_names) == list(CLASS_NAMES) and cfg.num_classes == 2


def test_config_composes_and_instantiates_from_the_environment(pcam_root, monkeypatch):
    monkeypatch.setenv("ADVMED_PCAM_ROOT", str(pcam_root))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(overrides=["+data=pcam", "data.image_size=224", "data.num_workers=0"])
    dm = instantiate(cfg.data)
    assert dm.root == pcam_root and (dm.num_classes, dm.image_size) == (2, 224)
    dm.setup("test")
    assert dm.test_set[0][0].shape == (3, 224, 224)
