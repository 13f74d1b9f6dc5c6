"""CTSliceDataModule on every layout it reads (BTCV NIfTI folders, nnU-Net names, pairs CSV with a
DICOM series, TransUNet .npz slices, PNG pairs), its splits by volume, slice selection, config,
bad input, Lightning loaders, and the real TotalSegmentator sample."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import OverrideParseException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from PIL import Image

from advmed.data.ct.ct_slices import CTSliceDataModule
from advmed.data.ct.sources import pair_key
from tests.conftest import CONFIG_DIR
from tests.data.ct.test_readers import (
    ORGAN_HU,
    SHAPE,
    phantom,
    ras_affine,
    save_nifti,
    write_dicom_series,
    write_nifti_pair,
    write_npz_slices,
)

BTCV = {"organs": {"spleen": [1], "kidneys": [2, 3], "liver": [6], "pancreas": [11]}, "num_classes": 5,
        "class_names": ["background", "spleen", "kidneys", "liver", "pancreas"]}
# Windowed (40 / 400) intensity range of each output class of BTCV: spleen, kidneys (2 ids), liver, pancreas.
EXPECTED = {k: ((min(ORGAN_HU[i] for i in ids) + 160) / 400, (max(ORGAN_HU[i] for i in ids) + 160) / 400)
            for k, ids in enumerate(BTCV["organs"].values(), start=1)}
LIVER = {"organs": {"liver": [6]}, "num_classes": 2, "class_names": ["background", "liver"]}
TS = {"label_preset": "totalsegmentator", "organs": {"liver": ["liver"]}, "num_classes": 2,
      "class_names": ["background", "liver"]}


def make(root, **overrides) -> CTSliceDataModule:
    args = {"root": root, "image_size": 32, "batch_size": 4, "val_fraction": 0.0, "test_fraction": 0.0, **BTCV}
    return CTSliceDataModule(**{**args, **overrides})


def write_btcv(root: Path, n: int) -> Path:
    for i in range(1, n + 1):
        write_nifti_pair(root / "img" / f"img{i:04d}.nii.gz", root / "label" / f"label{i:04d}.nii.gz", seed=i)
    return root


@pytest.fixture(scope="module")
def btcv(tmp_path_factory) -> Path:
    return write_btcv(tmp_path_factory.mktemp("btcv"), 5)


def assert_aligned(dataset) -> None:
    """Every class's pixels carry its organ's windowed intensity (median, robust to resized edges)."""
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    y = torch.stack([dataset[i][1] for i in range(len(dataset))])
    for label, (low, high) in EXPECTED.items():
        if (y == label).any():
            assert low - 0.02 <= x[:, 0][y == label].median() <= high + 0.02, label


# ---------------------------------------------------------------------------- layouts


def test_btcv_folders_give_aligned_windowed_slices_in_loader_batches(btcv):
    dm = make(btcv, val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    assert dm.volume_names("train") + dm.volume_names("val") + dm.volume_names("test") != []
    assert len(dm.train_set) == 3 * SHAPE[2] and dm.train_set.names[0].endswith("_z000")
    assert_aligned(dm.train_set)
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape == (4, 1, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64 and y.shape == (4, 32, 32) and int(y.max()) < 5


def test_nnunet_names_pair_by_key_and_unpaired_files_are_named(tmp_path):
    assert pair_key(Path("case_01_0000.nii.gz")) == pair_key(Path("case_01.nii.gz")) == "case_01"
    assert pair_key(Path("volume-3.nii")) == pair_key(Path("segmentation-3.nii")) == "3"
    write_nifti_pair(tmp_path / "imagesTr" / "case_01_0000.nii.gz", tmp_path / "labelsTr" / "case_01.nii.gz")
    dm = make(tmp_path)
    dm.setup("fit")
    assert dm.volume_names("train") == ["case_01_0000"]
    save_nifti(phantom()[0], ras_affine(), tmp_path / "imagesTr" / "case_02_0000.nii.gz")
    with pytest.raises(ValueError, match=r"\['case_02_0000.nii.gz'\] have no label"):
        make(tmp_path).setup("fit")


def test_pairs_csv_mixes_nifti_and_dicom_volumes_in_one_folder(tmp_path):
    write_nifti_pair(tmp_path / "example_ct.nii.gz", tmp_path / "example_seg.nii.gz")
    hu, labels = phantom(seed=3)
    write_dicom_series(tmp_path / "example_ct_dicom", hu)
    save_nifti(labels, ras_affine(), tmp_path / "example_seg_dicom.nii.gz", "LAS")
    (tmp_path / "pairs.csv").write_text(
        "image,label\nexample_ct.nii.gz,example_seg.nii.gz\nexample_ct_dicom,example_seg_dicom.nii.gz\n"
    )
    dm = make(tmp_path, pairs="pairs.csv", split_volumes={"test": ["example_ct_dicom"]})
    dm.setup()
    assert dm.volume_names("train") == ["example_ct"] and dm.volume_names("test") == ["example_ct_dicom"]
    assert dm.test_set.names[0] == "example_ct_dicom_z000"
    assert_aligned(dm.train_set)
    assert_aligned(dm.test_set)
    listed = make(tmp_path, pairs=[["example_ct_dicom", "example_seg_dicom.nii.gz"]])
    listed.setup("fit")
    assert len(listed.train_set) == SHAPE[2]


def test_transunet_npz_slices_group_by_case(tmp_path):
    write_npz_slices(tmp_path / "train_npz")
    organs = {"liver": ["liver"], "spleen": ["spleen"], "kidneys": ["kidney_left", "kidney_right"]}
    dm = make(tmp_path, label_preset="transunet_synapse", organs=organs, num_classes=4,
              class_names=["background", "liver", "spleen", "kidneys"], image_size=24)
    with pytest.warns(UserWarning, match=r"organ 'kidneys': label id\(s\) \[3\] occur in no volume"):
        dm.setup("fit")
    assert dm.volume_names("train") == ["case0005", "case0007"]
    assert dm.train_set.groups.tolist() == [0, 0, 0, 1, 1, 1]
    assert dm.train_set.names[:2] == ["case0005_slice000", "case0005_slice001"]
    x, y = dm.train_set[1]
    assert torch.allclose(x[0][y == 1], torch.tensor(0.75), atol=1e-3) and (y == 2).sum() == 36  # liver, spleen
    assert int(dm.train_set[4][1].max()) == 3  # the second case's right kidney
    ungrouped = make(tmp_path, group_pattern="^nomatch", **dm_kwargs(dm))
    with pytest.warns(UserWarning, match="occur in no volume"):
        ungrouped.setup("fit")
    assert len(set(ungrouped.train_set.groups.tolist())) == 6  # no match: each file its own volume


def dm_kwargs(dm: CTSliceDataModule) -> dict:
    return {"label_preset": dm.organ_map.preset, "organs": dm.organ_map.organs, "num_classes": dm.num_classes,
            "class_names": dm.class_names, "image_size": 24}


def test_npz_uint8_is_scaled_and_a_slice_without_label_is_refused(tmp_path):
    write_npz_slices(tmp_path, cases=("case0001",), dtype=np.uint8)
    dm = make(tmp_path, image_size=24, unmapped="background", **{**TS, "label_preset": "transunet_synapse"})
    dm.setup("fit")
    x, y = dm.train_set[1]
    assert abs(float(x[0][y == 1].mean()) - 191 / 255) < 1e-3  # cached as float16: ~5e-4 precision
    np.savez(tmp_path / "case0002_slice000.npz", image=np.zeros((24, 24), np.float32))
    with pytest.raises(ValueError, match=r"case0002_slice000\.npz holds the arrays \['image'\]"):
        make(tmp_path, image_size=24, **TS).setup("fit")


def write_png_slices(root: Path, colours: dict[int, tuple[int, int, int]] | None = None) -> Path:
    """images/ + masks/ of two cases, two slices each: gray CT slice, liver (BTCV id 6) in a box."""
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for case in ("case0001", "case0002"):
        for k in range(2):
            image = np.full((20, 20), 100, np.uint8)
            ids = np.zeros((20, 20), np.uint8)
            image[5:12, 5:12], ids[5:12, 5:12] = 200, 6
            Image.fromarray(image).save(root / "images" / f"{case}_{k:03d}.png")
            mask = Image.fromarray(ids) if colours is None else Image.fromarray(np.array(
                [colours[int(i)] for i in ids.ravel()], np.uint8).reshape(20, 20, 3))
            mask.save(root / "masks" / f"{case}_{k:03d}.png")
    return root


@pytest.mark.parametrize("colours", [None, {0: (0, 0, 0), 6: (255, 0, 0)}])
def test_png_pairs_with_id_or_colour_masks(tmp_path, colours):
    write_png_slices(tmp_path, colours)
    colour_map = {k: list(v) for k, v in colours.items()} if colours else None
    dm = make(tmp_path, colour_map=colour_map, image_size=20, val_fraction=0.4, **LIVER)
    dm.setup("fit")
    assert len(dm.volume_names("val")) == 1 and dm.train_set.groups.unique().numel() == 1
    x, y = dm.train_set[0]
    assert (y == 1).sum() == 49 and torch.allclose(x[0][y == 1], torch.tensor(200 / 255), atol=1e-3)


def test_extra_train_roots_add_png_pairs_of_output_ids(btcv, tmp_path):
    extra = write_png_slices(tmp_path / "attacked")  # masks hold 6: rewrite them as output class 3 (liver)
    for mask in (extra / "masks").iterdir():
        Image.fromarray((np.asarray(Image.open(mask)) > 0).astype(np.uint8) * 3).save(mask)
    dm = make(btcv, extra_train_roots=[str(extra)])
    dm.setup("fit")
    assert len(dm.train_set) == 5 * SHAPE[2] + 4 and dm.train_set.names[-1] == "case0002_001"
    x, y = dm.train_set[len(dm.train_set) - 1]
    assert x.shape == (1, 32, 32) and int(y.max()) == 3


def test_png_colour_not_in_the_colour_map_is_an_error(tmp_path):
    write_png_slices(tmp_path, {0: (0, 0, 0), 6: (0, 255, 0)})
    with pytest.raises(ValueError, match=r"colour\(s\) \[\(0, 255, 0\)\] not in the colour map.*data.colour_map"):
        make(tmp_path, colour_map={0: [0, 0, 0], 6: [255, 0, 0]}, **LIVER).setup("fit")


# ---------------------------------------------------------------------------- splits, selection, channels


def test_split_is_by_volume_disjoint_and_seeded(btcv):
    def assignment(seed):
        dm = make(btcv, val_fraction=0.2, test_fraction=0.2, seed=seed)
        return {split: dm.volume_names(split) for split in ("train", "val", "test")}, dm

    first, dm = assignment(0)
    assert [len(first[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    assert set(first["train"]) | set(first["val"]) | set(first["test"]) == {f"img{i:04d}" for i in range(1, 6)}
    dm.setup()
    volumes_of = {split: {n.split("_z")[0] for n in getattr(dm, f"{split}_set").names} for split in first}
    assert volumes_of == {split: set(names) for split, names in first.items()}
    assert set(dm.train_set.groups.tolist()).isdisjoint(dm.val_set.groups.tolist() + dm.test_set.groups.tolist())
    assert assignment(0)[0] == first
    assert any(assignment(seed)[0] != first for seed in (1, 2, 3))
    half = make(btcv, val_fraction=0.2, test_fraction=0.2, train_fraction=0.5)
    half.setup("fit")
    counts = torch.bincount(half.train_set.groups)
    assert set(counts[counts > 0].tolist()) == {SHAPE[2]} and len(half.train_set) == 2 * SHAPE[2]  # whole volumes


def test_explicit_split_volumes_and_their_errors(btcv):
    dm = make(btcv, split_volumes={"val": ["img0002"], "test": ["img0003", "img0005"]})
    assert dm.volume_names("train") == ["img0001", "img0004"]
    with pytest.raises(ValueError, match=r"unknown split\(s\) \[\] / volume\(s\) \['img0009'\]"):
        make(btcv, split_volumes={"val": ["img0009"]}).setup("fit")
    with pytest.raises(ValueError, match="cannot give test_fraction"):
        make(btcv, val_fraction=0.5, test_fraction=0.4).setup("fit")


def test_slices_containing_an_organ(btcv, tmp_path):
    dm = make(btcv, slices={"contains": ["liver"]}, in_channels=3)
    dm.setup("fit")
    assert {name[-4:] for name in dm.train_set.names} == {"z001", "z002", "z003", "z004"}
    x, _ = dm.train_set[0]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[2])
    with pytest.raises(ValueError, match=r"unknown: \['lung'\]"):
        make(btcv, slices={"contains": ["lung"]})
    write_nifti_pair(tmp_path / "img" / "img0001.nii.gz", tmp_path / "label" / "label0001.nii.gz", z_organs=range(0))
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"no slice under .* shows \['liver'\]"):
        warnings.simplefilter("ignore")
        make(tmp_path, slices={"contains": ["liver"]}).setup("fit")


# ---------------------------------------------------------------------------- bad input and config


def test_label_id_outside_the_organ_map_names_the_file(tmp_path):
    hu, labels = phantom()
    labels[0, 0, 0] = 14  # BTCV has ids 0..13
    save_nifti(hu, ras_affine(), tmp_path / "img" / "img0001.nii.gz")
    save_nifti(labels, ras_affine(), tmp_path / "label" / "label0001.nii.gz")
    with pytest.raises(ValueError, match=r"label0001\.nii\.gz holds label id\(s\) \[14\].*data\.ignore_ids"):
        make(tmp_path, label_preset="btcv").setup("fit")
    make(tmp_path, label_preset="btcv", ignore_ids=[14]).setup("fit")
    with pytest.raises(ValueError, match=r"holds label id\(s\) \[14\]"):  # no preset: only the mapped ids
        make(tmp_path, label_preset=None).setup("fit")


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="CT slice dataset folder is not set.*ADVMED_CT_ROOT"):
        make(None)
    with pytest.raises(FileNotFoundError, match=r"holds no image/label volume folders.*ADVMED_CT_ROOT"):
        make(tmp_path).setup("fit")
    with pytest.raises(ValueError, match=r"data.class_names=\['background', 'spleen', 'kidneys', 'liver', 'pancreas'\]"):
        make(tmp_path, class_names=["background", "liver", "spleen", "kidneys", "pancreas"])
    with pytest.raises(ValueError, match="window_width=0 is invalid"):
        make(tmp_path, window_width=0)


def test_config_keys_are_the_constructor_arguments_and_compose(btcv, monkeypatch):
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "ct_slices.yaml")
    assert set(cfg) - {"_target_"} == set(inspect.signature(get_class(cfg._target_)).parameters)
    assert len(cfg.class_names) == cfg.num_classes
    monkeypatch.setenv("ADVMED_CT_ROOT", str(btcv))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(overrides=["+data=ct_slices", "data.image_size=32", "data.num_workers=0",
                                 "+probe.num_classes=${data.num_classes}"])
    assert cfg.data.root == str(btcv) and cfg.probe.num_classes == 5
    dm = instantiate(cfg.data)
    dm.setup("test")
    x, y = dm.test_set[0]
    assert x.shape == (1, 32, 32) and y.shape == (32, 32)


def test_group_pattern_with_a_backslash_composes_when_quoted_as_the_config_comment_shows(tmp_path):
    write_png_slices(tmp_path)
    for path in sorted(tmp_path.glob("*/case000*.png")):  # case0001_000.png -> 1_000.png
        path.rename(path.with_name(path.name.removeprefix("case000")))
    overrides = ["+data=ct_slices", f"data.root={tmp_path}", "data.image_size=20", "data.num_workers=0",
                 "data.val_fraction=0", "data.test_fraction=0", "~data.organs", "+data.organs={liver:[6]}",
                 "data.num_classes=2", "data.class_names=[background,liver]"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        with pytest.raises(OverrideParseException, match="LexerNoViableAltException"):
            compose(overrides=[*overrides, r"data.group_pattern=^(\d+)_"])
        cfg = compose(overrides=[*overrides, r'data.group_pattern="^(\d+)_"'])  # as the yaml comment shows
    assert cfg.data.group_pattern == r"^(\d+)_"
    assert instantiate(cfg.data).volume_names("train") == ["1", "2"]


class _Probe(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Conv2d(1, 5, 1)

    def training_step(self, batch, _):
        x, y = batch
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[-2:] == y.shape[-2:]
        return torch.nn.functional.cross_entropy(self.head(x), y)

    validation_step = training_step

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_trainer_runs_on_the_datamodule(btcv):
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(_Probe(), datamodule=make(btcv, val_fraction=0.2))


# ---------------------------------------------------------------------------- real sample


@pytest.mark.data
def test_real_totalsegmentator_sample_nifti_and_dicom(shared_data):
    root = shared_data / "ct_totalsegmentator"
    dm = make(root, pairs=[["example_ct_sm.nii.gz", "example_seg.nii.gz"],
                           ["example_ct_dicom", "example_seg_dicom.nii.gz"]],
              split_volumes={"test": ["example_ct_dicom"]}, image_size=64, **TS)
    dm.setup()
    assert len(dm.train_set) == 30 and len(dm.test_set) == 20
    for dataset in (dm.train_set, dm.test_set):
        x = torch.stack([dataset[i][0] for i in range(len(dataset))])[:, 0]
        y = torch.stack([dataset[i][1] for i in range(len(dataset))])
        hu = x * 400 + 40 - 200  # invert the 40 / 400 window (exact inside it: -160..240 HU)
        liver = hu[y == 1]
        assert 0 < float(liver.median()) < 200  # liver label on liver-intensity pixels
        assert float(((liver > -100) & (liver < 200)).float().mean()) > 0.9  # soft tissue, not fat / air / bone
        assert float((hu[y == 0] <= -159).float().mean()) > 0.3  # much of the rest is air or fat
