"""Kaggle Histopathologic Cancer Detection on folders in the exact Kaggle layout, and on the real sample."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from advmed.data.lymph_node.hcd import (
    HCDDataModule,
    TileFileDataset,
    UnlabelledTileDataset,
    read_label_csv,
    stratified_draw,
)
from advmed.data.lymph_node.pcam_layout import CLASS_NAMES
from tests.conftest import CONFIG_DIR

LABEL_MARK = (40, 200)  # value of a patch inside the centre 32x32 region, per label
N_NEG, N_POS, N_TEST = 20, 10, 6


def hcd_tile(index: int, label: int) -> np.ndarray:
    """A (96, 96, 3) uint8 tile: random texture, corner 8x8 = 5 * index, centre patch = the label's mark."""
    tile = np.random.default_rng(index).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    tile[:8, :8] = 5 * index
    tile[44:52, 44:52] = LABEL_MARK[label]
    return tile


def write_hcd(root: Path, n_neg: int = N_NEG, n_pos: int = N_POS, n_test: int = N_TEST) -> dict[str, int]:
    """``train/<id>.tif``, ``train_labels.csv`` (``id,label``, rows in random order) and ``test/<id>.tif``.

    Ids are 40-hex-digit names like Kaggle's; one is all digits with a leading zero, which a CSV
    reader must keep as text. The tiles are uncompressed RGB TIFFs written by tifffile, like the real
    ones. Returns ``{id: index}`` of every tile (index = the corner mark; test tiles come last).
    """
    rng = np.random.default_rng(1)
    labels = [0] * n_neg + [1] * n_pos
    ids = ["0" + "".join(rng.choice(list("0123456789"), 39))]
    ids += ["".join(rng.choice(list("0123456789abcdef"), 40)) for _ in range(len(labels) + n_test - 1)]
    (root / "train").mkdir(parents=True)
    for index, (tile_id, label) in enumerate(zip(ids, labels)):
        tifffile.imwrite(root / "train" / f"{tile_id}.tif", hcd_tile(index, label), photometric="rgb")
    order = rng.permutation(len(labels))
    csv = "id,label\n" + "".join(f"{ids[i]},{labels[i]}\n" for i in order)
    (root / "train_labels.csv").write_text(csv)
    if n_test:
        (root / "test").mkdir()
        for index in range(len(labels), len(ids)):
            tifffile.imwrite(root / "test" / f"{ids[index]}.tif", hcd_tile(index, 0), photometric="rgb")
    return {tile_id: index for index, tile_id in enumerate(ids)}


@pytest.fixture(scope="module")
def hcd(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("hcd") / "histopathologic-cancer-detection"
    return root, write_hcd(root)


def _module(root, **kwargs) -> HCDDataModule:
    defaults = {"test_size": 6, "val_size": 3, "train_size": 12, "image_size": 96, "batch_size": 8}
    return HCDDataModule(root=root, **{**defaults, "num_workers": 0, **kwargs})


def _ids(dataset) -> list[str]:
    return [dataset.dataset.ids[int(i)] for i in dataset.indices]


def _index_of(x: torch.Tensor) -> int:
    return round(float(x[0, 0, 0]) * 255 / 5)


def _label_of(x: torch.Tensor) -> int:
    return LABEL_MARK.index(round(float(x[0, 48, 48]) * 255))


def test_fixed_size_stratified_disjoint_splits(hcd):
    root, _ = hcd
    dm = _module(root)
    dm.setup()
    # 20 neg / 10 pos: 6 test = 4 + 2; of 16 / 8 left, 3 val = 2 + 1; of 14 / 7 left, 12 train = 8 + 4
    assert torch.bincount(dm.test_set.targets).tolist() == [4, 2]
    assert torch.bincount(dm.val_set.targets).tolist() == [2, 1]
    assert torch.bincount(dm.train_set.targets).tolist() == [8, 4]
    splits = [set(_ids(s)) for s in (dm.train_set, dm.val_set, dm.test_set)]
    assert sum(map(len, splits)) == len(set.union(*splits)) == 21


def test_train_size_null_takes_every_remaining_tile(hcd):
    root, _ = hcd
    dm = _module(root, train_size=None)
    dm.setup("fit")
    assert len(dm.train_set) == 30 - 6 - 3 and torch.bincount(dm.train_set.targets).tolist() == [14, 7]


def test_draws_are_seeded_and_test_val_ignore_train_size(hcd):
    root, _ = hcd

    def split_ids(**kwargs):
        dm = _module(root, **kwargs)
        dm.setup()
        return [_ids(s) for s in (dm.test_set, dm.val_set, dm.train_set)]

    first = split_ids(seed=0)
    assert first == split_ids(seed=0)
    assert first[0] != split_ids(seed=1)[0]
    smaller = split_ids(seed=0, train_size=6)
    assert smaller[:2] == first[:2] and set(smaller[2]) < set(first[2])


def test_items_show_the_tile_of_their_csv_row(hcd):
    root, index_of = hcd
    labels = pd.read_csv(root / "train_labels.csv", dtype=str).set_index("id")["label"].astype(int)
    dm = _module(root, image_size=96)
    dm.setup("test")
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (6, 3, 96, 96) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    ids = _ids(dm.test_set)
    assert [_index_of(image) for image in x] == [index_of[i] for i in ids]  # the right file ...
    assert [_label_of(image) for image in x] == y.tolist() == [labels[i] for i in ids]  # ... and label


def test_default_resize_to_224_and_center_crop(hcd):
    root, index_of = hcd
    dm = HCDDataModule(root=root, test_size=6, val_size=3, train_size=None)  # image_size 224 by default
    dm.setup("test")
    x, _ = dm.test_set[0]
    assert x.shape == (3, 224, 224) and 0.0 <= x.min() and x.max() <= 1.0
    assert _index_of(x) == index_of[_ids(dm.test_set)[0]]  # the flat corner survives the resize
    cropped = _module(root, center_crop=32, image_size=32)
    cropped.setup("test")
    x, y = cropped.test_set[1]
    tile = hcd_tile(index_of[_ids(cropped.test_set)[1]], int(y))
    assert torch.equal(x, torch.from_numpy(tile[32:64, 32:64]).permute(2, 0, 1) / 255.0)


def test_predict_yields_unlabelled_test_images_in_id_order(hcd):
    root, index_of = hcd
    dm = _module(root)
    dm.setup("predict")
    assert dm.test_set is None  # prediction needs no labelled split
    batches = list(dm.predict_dataloader())
    assert all(isinstance(batch, torch.Tensor) for batch in batches)
    images = torch.cat(batches)
    assert images.shape == (N_TEST, 3, 96, 96) and 0.0 <= images.min() and images.max() <= 1.0
    assert dm.predict_set.ids == sorted(p.stem for p in (root / "test").iterdir())
    assert [_index_of(x) for x in images] == [index_of[i] for i in dm.predict_set.ids]


def test_test_folder_is_optional(tmp_path):
    root = tmp_path / "no_test"
    write_hcd(root, n_neg=6, n_pos=4, n_test=0)
    dm = _module(root, test_size=2, val_size=2, train_size=None)
    dm.setup()
    assert len(dm.train_set) == 6
    with pytest.raises(
        FileNotFoundError, match=r"has no test/ folder: prediction reads .*<root>/test/\*\.tif"
    ):
        dm.predict_dataloader()


def test_csv_ids_stay_text(tmp_path):
    # Were the column parsed as numbers, an all-digit id would lose its leading zero and match no file.
    path = tmp_path / "train_labels.csv"
    path.write_text("id,label\n0123,1\n4567,0\n")
    assert read_label_csv(path) == {"0123": 1, "4567": 0}


def test_stratified_draw_is_exact_and_disjoint():
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 1)
    a, b, rest = stratified_draw(labels, (5, 3, None), seed=3)
    assert (len(a), len(b), len(rest)) == (5, 3, 3)
    assert len(set(torch.cat([a, b, rest]).tolist())) == 11
    assert torch.bincount(labels[a], minlength=3).tolist() == [3, 1, 1]  # 3.18, 1.36, 0.45: largest remainder


# --- mismatches between train/ and the CSV ------------------------------------------------------


@pytest.fixture
def mismatched(tmp_path) -> tuple[Path, str, str]:
    root = tmp_path / "mismatch"
    ids = write_hcd(root, n_neg=8, n_pos=4, n_test=0)
    gone = sorted(ids)[0]
    (root / "train" / f"{gone}.tif").unlink()
    tifffile.imwrite(root / "train" / ("f" * 40 + ".tif"), hcd_tile(50, 0), photometric="rgb")
    return root, gone, "f" * 40 + ".tif"


def test_mismatch_fails_by_default_with_counts_and_names(mismatched):
    root, gone, extra = mismatched
    with pytest.raises(
        ValueError,
        match=rf"1 id\(s\) of train_labels.csv have no file .*first: {gone}\).*"
        rf"1 file\(s\) .* have no row in train_labels.csv \(first: {extra}\).*data.on_mismatch=skip",
    ):
        _module(root, test_size=2, val_size=2, train_size=None).setup()


def test_mismatch_skip_warns_and_drops(mismatched):
    root, gone, extra = mismatched
    dm = _module(root, test_size=2, val_size=2, train_size=None, on_mismatch="skip")
    with pytest.warns(UserWarning, match=rf"1 id\(s\) .*{gone}.*1 file\(s\) .*{extra}.*dropped"):
        dm.setup()
    ids = set(_ids(dm.train_set)) | set(_ids(dm.val_set)) | set(_ids(dm.test_set))
    assert len(ids) == 11 and gone not in ids and extra[:-4] not in ids


def test_many_mismatches_list_only_the_first_few(tmp_path):
    root = tmp_path / "many"
    write_hcd(root, n_neg=8, n_pos=4, n_test=0)
    for path in sorted((root / "train").iterdir())[:7]:
        path.unlink()
    with pytest.raises(ValueError, match=r"7 id\(s\) .*\(first: (\w+, ){4}\w+, \.\.\.\)"):
        _module(root, test_size=1, val_size=1, train_size=None).setup()


# --- bad input ----------------------------------------------------------------------------------


def _with_csv(tmp_path, text: str) -> Path:
    root = tmp_path / "csv"
    write_hcd(root, n_neg=4, n_pos=2, n_test=0)
    (root / "train_labels.csv").write_text(text)
    return root


def test_csv_without_id_label_columns(tmp_path):
    root = _with_csv(tmp_path, "image,target\nabc,0\n")
    with pytest.raises(ValueError, match=r"columns \['image', 'target'\]; expected a header 'id,label'"):
        _module(root, test_size=1, val_size=1).setup()


def test_labels_other_than_0_or_1(tmp_path):
    root = _with_csv(tmp_path, "id,label\na,0\nb,2\nc,\nd,1\n")
    with pytest.raises(
        ValueError, match=r"labels must be 0 or 1, but 2 row\(s\) have others \(b='2', c=''\)"
    ):
        _module(root, test_size=1, val_size=1).setup()


def test_duplicated_ids(tmp_path):
    root = _with_csv(tmp_path, "id,label\na,0\na,1\n")
    with pytest.raises(ValueError, match=r"1 duplicated id\(s\) \(first: a\)"):
        _module(root, test_size=1, val_size=1).setup()


def test_missing_csv_or_train_folder(tmp_path):
    root = tmp_path / "parts"
    write_hcd(root, n_neg=4, n_pos=2, n_test=0)
    (root / "train_labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"label file .*train_labels.csv is missing.*ADVMED_HCD_ROOT"):
        _module(root, test_size=1, val_size=1).setup()
    (root / "train").rename(root / "elsewhere")
    with pytest.raises(FileNotFoundError, match=r"has no train/ folder .*kaggle competitions download"):
        _module(root, test_size=1, val_size=1).setup()


def test_sizes_larger_than_the_data(hcd):
    root, _ = hcd
    with pytest.raises(
        ValueError,
        match=r"test_size=6 \+ val_size=3 \+ train_size=22 = 31 tiles, but .* only 30 labelled tiles.*"
        r"data.train_size=null",
    ):
        _module(root, train_size=22).setup()
    with pytest.raises(ValueError, match=r"test_size=20 \+ val_size=10 = 30 tiles leave none of the 30"):
        _module(root, test_size=20, val_size=10, train_size=None).setup()


def test_bad_arguments_and_root(hcd, monkeypatch):
    root, _ = hcd
    with pytest.raises(ValueError, match=r"on_mismatch must be one of \['fail', 'skip'\], got 'ignore'"):
        _module(root, on_mismatch="ignore")
    with pytest.raises(ValueError, match=r"val_size must be at least 1 \(a whole number\), got 0"):
        _module(root, val_size=0)
    with pytest.raises(ValueError, match=r"2 RGB classes \['no_metastasis', 'metastasis'\]"):
        _module(root, num_classes=3)
    with pytest.raises(FileNotFoundError, match=r"not set.*kaggle competitions download.*ADVMED_HCD_ROOT"):
        HCDDataModule(root=None)


# --- config -------------------------------------------------------------------------------------


def test_config_keys_are_the_constructor_arguments():
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "hcd.yaml")
    assert set(cfg) - {"_target_"} == set(inspect.signature(get_class(cfg._target_)).parameters)
    assert list(cfg.class_names) == list(CLASS_NAMES)
    assert (cfg.image_size, cfg.train_size, cfg.val_size) == (224, 8000, 2000)  # SNAP paper


def test_config_composes_and_instantiates_from_the_environment(hcd, monkeypatch):
    root, _ = hcd
    monkeypatch.setenv("ADVMED_HCD_ROOT", str(root))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        overrides = ["data.test_size=4", "data.val_size=4", "data.train_size=null", "data.num_workers=0"]
        cfg = compose(overrides=["+data=hcd", *overrides])
    dm = instantiate(cfg.data)
    assert dm.root == root
    dm.setup("test")
    assert dm.test_set[0][0].shape == (3, 224, 224)


# --- the real sample ----------------------------------------------------------------------------


@pytest.mark.data
def test_real_sample(shared_data):
    root = shared_data / "hcd"
    labels = pd.read_csv(root / "train_labels.csv", dtype=str).set_index("id")["label"].astype(int)
    dm = HCDDataModule(root=root, train_size=None, val_size=2, test_size=3, batch_size=4)
    dm.setup()
    splits = (dm.train_set, dm.val_set, dm.test_set)
    assert [len(s) for s in splits] == [10, 2, 3]
    assert torch.bincount(dm.test_set.targets).tolist() == [2, 1]  # 10 neg / 5 pos, stratified
    for split in splits:
        assert split.targets.tolist() == [labels[i] for i in _ids(split)]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.02
    native = TileFileDataset(dm.test_set.dataset.paths, dm.test_set.dataset.targets, image_size=None)
    assert native[0][0].shape == (3, 96, 96)
    assert abs(float(native[0][0].mean() - dm.test_set.dataset[0][0].mean())) < 0.01  # antialiased resize

    dm.setup("predict")
    assert isinstance(dm.predict_set, UnlabelledTileDataset) and len(dm.predict_set) == 11
    assert dm.predict_set.ids == sorted(p.stem for p in (root / "test").glob("*.tif"))
    images = torch.cat(list(dm.predict_dataloader()))
    assert images.shape == (11, 3, 224, 224) and images.std() > 0.02
