"""SA-Med2D / SAM-Med2D slices through data=ct_slices, on files written in the exact layouts: SAM-Med2D's
data_demo (images/, masks/<image>_<organ>_<NNN>.png, image2label_train.json + label2image_test.json with
paths under the data folder's name) and the SA-Med2D-20M release (SAMed2D_v1.json, numbered masks
<image>--<class id>_<instance>.png named by SAMed2D_v1_class_mapping_id.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from advmed.data.ct.ct_slices import CTSliceDataModule
from advmed.data.ct.sa_med2d import case_of, read_slice
from tests.conftest import CONFIG_DIR

SIZE = 16
# Organ boxes (rows, cols) and intensities: the spleen overlaps the liver's corner, the aorta is never asked.
BOXES = {"liver": (slice(2, 10), slice(2, 10)), "spleen": (slice(8, 12), slice(8, 12)),
         "aorta": (slice(12, 14), slice(2, 4))}
VALUE = {"liver": 150, "spleen": 200, "aorta": 250}
CASES = {"amos_0004": (75, 76), "amos_0006": (90, 91), "s0114": (111, 112)}
LIVER_SPLEEN = {"organs": {"liver": ["liver"], "spleen": ["spleen"]}, "num_classes": 3,
                "class_names": ["background", "liver", "spleen"]}


def slice_image(rgb: bool) -> np.ndarray:
    image = np.full((SIZE, SIZE), 50, np.uint8)
    for organ, box in BOXES.items():
        image[box] = VALUE[organ]
    return np.stack([image] * 3, axis=-1) if rgb else image


def save_mask(path: Path, organ: str) -> None:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[BOXES[organ]] = 255  # SAM-Med2D masks are 0 / 255
    Image.fromarray(mask).save(path)


def write_sam_med2d(root: Path) -> Path:
    """data_demo layout: two slices per case, grey-RGB images (as SAM-Med2D's are), json paths under
    ``<root name>/``; the last case is listed in label2image_test.json (mask -> image), the rest in
    image2label_train.json (image -> [masks])."""
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    train, test = {}, {}
    for case, slices in CASES.items():
        for k in slices:
            stem = f"{case}_{k}"
            Image.fromarray(slice_image(rgb=True)).save(root / "images" / f"{stem}.png")
            masks = []
            for organ in BOXES:
                save_mask(root / "masks" / f"{stem}_{organ}_000.png", organ)
                masks.append(f"{root.name}/masks/{stem}_{organ}_000.png")
            image = f"{root.name}/images/{stem}.png"
            if case == "s0114":
                test.update({mask: image for mask in masks})
            else:
                train[image] = masks
    (root / "image2label_train.json").write_text(json.dumps(train, indent=4))
    (root / "label2image_test.json").write_text(json.dumps(test, indent=4))
    return root


def make(root: Path, **overrides) -> CTSliceDataModule:
    args = {"root": root, "image_size": SIZE, "batch_size": 4, "val_fraction": 0.0, "test_fraction": 0.0,
            **LIVER_SPLEEN}
    return CTSliceDataModule(**{**args, **overrides})


@pytest.fixture
def demo(tmp_path) -> Path:
    return write_sam_med2d(tmp_path / "data_demo")


def test_images_and_masks_read_back_with_the_class_ids(demo):
    dm = make(demo)
    assert dm.layout["format"] == "sa_med2d"  # found by format=auto (images/ + masks/ + json)
    dm.setup("fit")
    assert len(dm.train_set) == 6 and dm.train_set.names[0] == "amos_0004_75"
    x, y = dm.train_set[0]
    assert x.shape == (1, SIZE, SIZE) and 0 <= x.min() and x.max() <= 1
    assert (y == 2).sum() == 16 and (y == 1).sum() == 64 - 4  # the spleen wins its 4 px of overlap
    for label, organ in ((1, "liver"), (2, "spleen")):  # float16 in memory: 5e-4
        assert torch.allclose(x[0][y == label], torch.tensor(VALUE[organ] / 255), atol=1e-3)
    assert (y[BOXES["aorta"]] == 0).all()  # aorta not asked: background


def test_an_organ_not_asked_is_not_read_and_an_unseen_one_is_named(demo):
    for mask in (demo / "masks").glob("*_aorta_000.png"):
        mask.unlink()  # listed in the json but never read
    unseen = r"organ 'kidneys': mask organ name\(s\) \['kidney_left'\] occur in no volume"
    with pytest.warns(UserWarning, match=unseen):
        make(demo, organs={"liver": ["liver"], "kidneys": ["kidney_left"]},
             class_names=["background", "liver", "kidneys"]).setup("fit")
    with pytest.raises(ValueError, match="organ names as in masks/<image>_<organ>_<NNN>.png"):
        make(demo, organs={"liver": [6]}, num_classes=2, class_names=["background", "liver"])


def test_overlap_the_smaller_mask_wins_whatever_the_class_order_ties_to_the_later_class(demo, tmp_path):
    dm = make(demo, organs={"spleen": ["spleen"], "liver": ["liver"]},
              class_names=["background", "spleen", "liver"])
    dm.setup("fit")
    _, y = dm.train_set[0]
    assert (y == 1).sum() == 16 and (y == 2).sum() == 60
    Image.fromarray(slice_image(rgb=False)).save(tmp_path / "a_1.png")
    for name, rows in (("first", slice(0, 8)), ("second", slice(4, 12))):  # equal sizes, rows 4..7 overlap
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[rows, :4] = 1  # 0 / 1 masks read too
        Image.fromarray(mask).save(tmp_path / f"a_1_{name}_000.png")
    masks = [(name, tmp_path / f"a_1_{name}_000.png", "map.json") for name in ("first", "second")]
    for ids, winner in (({"first": 1, "second": 2}, 2), ({"second": 1, "first": 2}, 2)):
        _, labels = read_slice(tmp_path / "a_1.png", masks, ids)
        assert (labels[4:8, :4] == winner).all() and (labels[:4, :4] == ids["first"]).all()


def test_a_listed_mask_missing_on_disk_names_the_file_and_the_json(demo):
    (demo / "masks" / "amos_0006_91_spleen_000.png").unlink()
    missing = r"amos_0006_91_spleen_000\.png \(listed in image2label_train\.json for image amos_0006_91\.png"
    with pytest.raises(FileNotFoundError, match=missing):
        make(demo).setup("fit")


def test_a_mask_of_another_size_than_its_image_is_an_error(demo):
    Image.fromarray(np.zeros((SIZE, SIZE + 2), np.uint8)).save(demo / "masks" / "s0114_112_liver_000.png")
    size = r"s0114_112_liver_000\.png is 18x16 \(WxH\) but its image .*s0114_112\.png is 16x16; a mask must"
    with pytest.raises(ValueError, match=size):
        make(demo).setup("fit")


def test_volumes_group_slices_by_case_so_splits_never_share_a_case(demo):
    assert case_of("amos_0004_75") == "amos_0004" and case_of("s0114_111") == "s0114"
    release = "ct_00--AbdomenCT1K--Case_00011"  # SA-Med2D-20M slices a case along x, y and z: one volume
    assert case_of(f"{release}--x_0040") == case_of(f"{release}--y_0100") == release
    assert case_of("ct_00--AbdomenCT-1K--Case_00001_x_0001") == "ct_00--AbdomenCT-1K--Case_00001"
    dm = make(demo, val_fraction=0.34, test_fraction=0.34)
    dm.setup()
    splits = ("train", "val", "test")
    cases = {split: {case_of(n) for n in getattr(dm, f"{split}_set").names} for split in splits}
    assert sorted(c for names in cases.values() for c in names) == sorted(CASES)  # one case per split
    assert all(len(getattr(dm, f"{split}_set")) == 2 for split in cases)  # both slices of a case together
    assert {split: sorted(names) for split, names in cases.items()} == {
        split: dm.volume_names(split) for split in cases}


def test_sa_med2d_20m_release_names_and_class_ids(tmp_path):
    root = tmp_path / "SAMed2Dv1"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    listed = {}
    for axis, index in (("x", "0040"), ("y", "0100")):
        stem = f"ct_00--AbdomenCT1K--Case_00011--{axis}_{index}"
        Image.fromarray(slice_image(rgb=False)).save(root / "images" / f"{stem}.png")
        save_mask(root / "masks" / f"{stem}--0000_000.png", "liver")
        save_mask(root / "masks" / f"{stem}--0002_000.png", "spleen")
        listed[f"images/{stem}.png"] = [f"masks/{stem}--0000_000.png", f"masks/{stem}--0002_000.png"]
    (root / "SAMed2D_v1.json").write_text(json.dumps(listed))
    with pytest.raises(FileNotFoundError, match="SAMed2D_v1_class_mapping_id.json does not exist"):
        make(root).setup("fit")
    (root / "SAMed2D_v1_class_mapping_id.json").write_text(
        json.dumps({"AbdomenCT1K": {"liver": 0, "kidney": 1, "spleen": 2, "pancreas": 3}}))
    dm = make(root)
    dm.setup("fit")
    assert dm.volume_names("train") == ["ct_00--AbdomenCT1K--Case_00011"] and len(dm.train_set) == 2
    _, y = dm.train_set[1]
    assert (y == 1).sum() == 60 and (y == 2).sum() == 16


def test_hydra_compose_format_sa_med2d_gives_batches_in_unit_range(demo):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(overrides=[
            "+data=ct_slices", "data.format=sa_med2d", f"data.root={demo}", "data.image_size=16",
            "data.num_workers=0", "data.batch_size=6", "data.val_fraction=0", "data.test_fraction=0",
            "~data.organs", "+data.organs={liver:[liver],spleen:[spleen]}", "data.num_classes=3",
            "data.class_names=[background,liver,spleen]",
        ])
    dm = instantiate(cfg.data)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (6, 1, SIZE, SIZE) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert set(y.unique().tolist()) == {0, 1, 2}
