"""Dataset-copy writers: layouts read back by their DataModules, atomic files, resumable runs,
refusal of a folder holding another run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from advmed.data import copy_layouts, writers
from advmed.data.base import ClassificationDataModule
from advmed.data.classification_datasets import TensorImageDataset
from advmed.data.copy_layouts import ClassFolderLayout, PNGPairLayout, file_stem
from advmed.data.segmentation import SegmentationDataModule
from advmed.data.segmentation_datasets import TensorSegmentationDataset
from advmed.data.writers import DatasetWriter, OutputDirError, differing_keys, item_names, read_manifest

IDENTITY = {"checkpoint_sha256": "abc", "attack": {"eps": 0.1}, "split": "train", "seed": 0}


class TinyClassDataModule(ClassificationDataModule):
    """11 random RGB 8x8 images of 3 classes (no item names)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("batch_size", 4)
        super().__init__(num_classes=3, class_names=["a", "b", "c"], in_channels=3, image_size=8, **kwargs)

    def _build_split(self, split):
        g = torch.Generator().manual_seed(len(split))
        images = torch.randint(0, 256, (11, 3, 8, 8), dtype=torch.uint8, generator=g)
        return TensorImageDataset(images, torch.arange(11) % 3)


class TinySegDataModule(SegmentationDataModule):
    """``n`` float slices (1 or 3 channels) with 3-class masks, 3 slices per volume, names ``vol<g>/s<i>``."""

    def __init__(self, n: int = 7, in_channels: int = 1, image_size: int = 16, **kwargs):
        kwargs.setdefault("batch_size", 3)
        super().__init__(
            num_classes=3, class_names=["background", "liver", "spleen"], in_channels=in_channels,
            image_size=image_size, **kwargs,
        )
        self.n = n

    def _build_split(self, split):
        g = torch.Generator().manual_seed(7 + len(split))
        size = self.image_size
        images = torch.rand(self.n, self.in_channels, size, size, generator=g)
        masks = torch.randint(0, 3, (self.n, size, size), generator=g)
        groups = torch.arange(self.n) // 3
        names = [f"vol{int(gr)}/s{i}" for i, gr in enumerate(groups)]
        return TensorSegmentationDataset(images, masks, groups, names)


def darken(x, y):
    """A deterministic stand-in for an attack."""
    return (x * 0.9).clamp(0, 1)


def noisy(x, y):
    """A random producer: reproducible only through the per-batch seed."""
    return (x + 0.05 * torch.randn_like(x)).clamp(0, 1)


def write(dm, root, produce=darken, identity=IDENTITY, split="train", **kwargs):
    dataset = dm.full_split(split)
    writer = DatasetWriter(root, dm.copy_layout(), identity, {"note": "test"}, **kwargs)
    return writer.write(dataset, produce, names=item_names(dataset, split), batch_size=dm.batch_size, seed=3)


def tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "run.json"}


# --------------------------------------------------------------------------- layouts


def test_file_stems_are_safe_and_class_prefixes_dropped():
    assert file_stem("vol3/slice 7") == "vol3__slice_7"
    assert file_stem(".hidden") == "_.hidden"
    layout = ClassFolderLayout(["ADI", "BACK"])
    assert layout.files("BACK/tile-01", 1) == {"image": "BACK/tile-01.png"}
    assert layout.files("train_000003", 0) == {"image": "ADI/train_000003.png"}
    assert layout.columns(1) == {"label": 1, "class": "BACK"}
    with pytest.raises(ValueError, match="not a class index"):
        layout.files("x", 2)
    assert PNGPairLayout().files("vol1/s2", None) == {"image": "images/vol1__s2.png", "mask": "masks/vol1__s2.png"}


def test_png_encodings_keep_their_precision(tmp_path):
    x = torch.rand(1, 5, 6)
    images = PNGPairLayout().encode(x, torch.tensor([[0, 1, 2, 3, 4, 5]] * 5))
    writers.save_png(tmp_path / "i.png", images["image"])
    writers.save_png(tmp_path / "m.png", images["mask"])
    back = np.asarray(Image.open(tmp_path / "i.png")).astype(np.float64) / 65535
    assert Image.open(tmp_path / "i.png").mode.startswith("I")
    assert np.abs(back - x[0].numpy()).max() <= 0.5 / 65535 + 1e-7
    assert Image.open(tmp_path / "m.png").mode == "L"
    assert np.asarray(Image.open(tmp_path / "m.png"))[0].tolist() == [0, 1, 2, 3, 4, 5]
    rgb = PNGPairLayout().encode(torch.rand(3, 4, 4), torch.zeros(4, 4, dtype=torch.long))["image"]
    assert rgb.mode == "RGB"


def test_differing_keys_are_dotted():
    assert differing_keys({"a": {"eps": 0.1, "s": 1}, "b": 2}, {"a": {"eps": 0.2, "s": 1}, "b": 2, "c": 0}) == ["a.eps", "c"]


def test_names_default_to_split_and_index():
    dm = TinyClassDataModule()
    assert item_names(dm.full_split("val"), "val")[:2] == ["val_000000", "val_000001"]
    assert item_names(TinySegDataModule().full_split("train"), "train")[3] == "vol1/s3"


# --------------------------------------------------------------------------- read back


def test_classification_copy_reads_back_through_extra_train_roots(tmp_path):
    dm = TinyClassDataModule()
    assert write(dm, tmp_path / "copy") == 11
    original = dm.full_split("train")
    back = TinyClassDataModule(extra_train_roots=[str(tmp_path / "copy")])
    back.setup("fit")
    assert len(back.train_set) == 2 * len(original)
    extra = back.train_set.datasets[1]
    for j, name in enumerate(extra.names):
        i = int(name.rsplit("_", 1)[1])
        x, y = original[i]
        x_back, y_back = extra[j]
        assert y_back == y and name.startswith(f"{dm.class_names[y]}/")
        assert (x_back - darken(x, y)).abs().max() <= 0.5 / 255 + 1e-6
    rows = read_manifest(tmp_path / "copy")
    assert len(rows) == 11 and rows[4] == {"index": "4", "source": "train_000004", "image": "b/train_000004.png", "label": "1", "class": "b"}
    run = json.loads((tmp_path / "copy" / "run.json").read_text())
    assert run["complete"] and run["num_items"] == 11 and run["identity"] == IDENTITY and run["note"] == "test"


@pytest.mark.parametrize("channels", [1, 3])
def test_segmentation_copy_reads_back_through_extra_train_roots(tmp_path, channels):
    dm = TinySegDataModule(in_channels=channels)
    assert write(dm, tmp_path / "copy") == 7
    original = dm.full_split("train")
    back = TinySegDataModule(in_channels=channels, extra_train_roots=[str(tmp_path / "copy")])
    back.setup("fit")
    assert len(back.train_set) == 14
    extra = back.train_set.datasets[1]
    step = 65535 if channels == 1 else 255
    for j, name in enumerate(extra.names):
        i = original.names.index(name.replace("__", "/"))
        x, y = original[i]
        x_back, y_back = extra[j]
        assert torch.equal(y_back, y)
        assert (x_back - darken(x, y)).abs().max() <= 0.5 / step + 1e-6
    rows = read_manifest(tmp_path / "copy")
    assert [r["group"] for r in rows] == ["0", "0", "0", "1", "1", "1", "2"]
    assert rows[3]["mask"] == "masks/vol1__s3.png"


# --------------------------------------------------------------------------- resumable, atomic


def test_killed_run_is_completed_with_the_same_bytes(tmp_path, monkeypatch):
    dm = TinySegDataModule(n=10)
    write(dm, tmp_path / "clean", noisy)

    real_save, saved = writers.save_png, []

    def dying_save(path, image):
        if len(saved) == 7:  # 2 files per item: a kill in the middle of the second batch, mid-write
            copy_layouts.tmp_path(path).write_bytes(b"\x89PNG trunc")
            raise KeyboardInterrupt
        saved.append(path)
        return real_save(path, image)

    monkeypatch.setattr(writers, "save_png", dying_save)
    with pytest.raises(KeyboardInterrupt):
        write(dm, tmp_path / "resumed", noisy)
    assert list((tmp_path / "resumed").rglob("*.tmp"))  # the killed write's leftover
    assert not json.loads((tmp_path / "resumed" / "run.json").read_text())["complete"]
    monkeypatch.setattr(writers, "save_png", real_save)

    calls = []
    assert write(dm, tmp_path / "resumed", lambda x, y: calls.append(len(x)) or noisy(x, y)) == 10
    assert calls == [3, 3, 1]  # the first, complete batch is skipped
    assert not list((tmp_path / "resumed").rglob("*.tmp"))
    assert tree_bytes(tmp_path / "resumed") == tree_bytes(tmp_path / "clean")
    assert len(read_manifest(tmp_path / "resumed")) == 10
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["complete"]

    calls.clear()  # a complete run: nothing to do
    write(dm, tmp_path / "resumed", lambda x, y: calls.append(len(x)) or noisy(x, y))
    assert calls == []


def test_folder_of_another_run_is_refused_unless_overwritten(tmp_path):
    dm = TinyClassDataModule()
    write(dm, tmp_path / "copy")
    other = {**IDENTITY, "attack": {"eps": 0.2}}
    with pytest.raises(OutputDirError, match=r"attack\.eps differ .*0\.1 there, 0\.2 here.*another output_dir.*overwrite=true"):
        write(dm, tmp_path / "copy", identity=other)
    (tmp_path / "copy" / "a" / "stale.png").write_bytes(b"")
    assert write(dm, tmp_path / "copy", identity=other, overwrite=True) == 11
    assert not (tmp_path / "copy" / "a" / "stale.png").exists()
    assert json.loads((tmp_path / "copy" / "run.json").read_text())["identity"]["attack"]["eps"] == 0.2


def test_non_empty_folder_without_run_json_is_never_used(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(OutputDirError, match="not empty and holds no run.json"):
            write(TinyClassDataModule(), tmp_path, overwrite=overwrite)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_duplicate_item_names_are_refused(tmp_path):
    dm = TinySegDataModule()
    dataset = dm.full_split("train")
    writer = DatasetWriter(tmp_path, dm.copy_layout(), IDENTITY)
    with pytest.raises(ValueError, match="written twice"):
        writer.write(dataset, darken, names=["same"] * len(dataset), batch_size=2, seed=0)


def test_progress_lines_are_plain(tmp_path, caplog):
    caplog.set_level("INFO", logger="advmed.data.writers")
    write(TinyClassDataModule(), tmp_path / "copy", progress_every_s=0)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("11/11 items (100.0 %)") and "items/s" in line for line in lines)
    assert not any("\r" in line for line in lines)
