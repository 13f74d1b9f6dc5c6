"""`python -m advmed.augment`: attacked copies of a split, read back as extra training folders."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import open_dict
from torch import nn

import advmed.models
from advmed.attacks import FGSM
from advmed.data import writers
from advmed.data.histology.synthetic_histology import SyntheticHistologyDataModule
from advmed.data.writers import OutputDirError, read_manifest
from advmed.models import ClassifierModule
from advmed.models.base import CLASS_KEY, AdvmedModule, class_path
from tests.data.test_writers import TinySegDataModule, tree_bytes
from tests.entrypoints.conftest import compose_config, kill_writer_at_batch, run_module

# 2 tiles per class at 32 px: 18 training items, batches of 4 (the last one of 2).
DATA = {"image_size": 32, "train_per_class": 2, "val_per_class": 1, "test_per_class": 1, "batch_size": 4}
DATA_ARGS = [f"data.{k}={v}" for k, v in DATA.items()]
SEG_DATA = {"_target_": "tests.data.test_writers.TinySegDataModule", "n": 7, "image_size": 16, "batch_size": 3}


def save_checkpoint(module: AdvmedModule, path):
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), CLASS_KEY: class_path(type(module))}, path)
    return path


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory):
    """An untrained 32-px ResNet18 of the 9 synthetic-histology classes (gradients are all FGSM needs)."""
    torch.manual_seed(0)
    dm = SyntheticHistologyDataModule(**DATA)
    module = ClassifierModule("resnet18", num_classes=9, class_names=dm.class_names, image_size=32)
    return save_checkpoint(module, tmp_path_factory.mktemp("ckpt") / "resnet18.ckpt")


class TinySegmenter(AdvmedModule):
    """A 1x1 convolution to K logits per pixel. Its __module__ names advmed.models, where the
    fixture below registers it: load_module only rebuilds advmed's own classes."""

    __module__ = "advmed.models"

    def __init__(self, num_classes: int = 3, in_channels: int = 1, class_names: list[str] | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def segmenter_ckpt(tmp_path, monkeypatch):
    monkeypatch.setattr(advmed.models, "TinySegmenter", TinySegmenter, raising=False)
    torch.manual_seed(0)
    module = TinySegmenter(class_names=["background", "liver", "spleen"])
    return save_checkpoint(module, tmp_path / "tiny_seg.ckpt")


def augment_cfg(tmp_path, ckpt, out, *overrides, data=None):
    cfg = compose_config("augment", [*DATA_ARGS, f"ckpt_path={ckpt}", f"output_dir={out}", *overrides], tmp_path / "hydra")
    if data is not None:
        with open_dict(cfg):
            cfg.data = data
    return cfg


def run_augment(*args, **kwargs):
    from advmed.augment import augment

    return augment(augment_cfg(*args, **kwargs))


def test_fgsm_copy_of_the_training_split_reads_back(classifier_ckpt, tmp_path):
    out = tmp_path / "fgsm"
    n, written = run_augment(tmp_path, classifier_ckpt, out, "attack=fgsm", "attack.eps=0.1")
    assert (n, written) == (18, out)

    dm = SyntheticHistologyDataModule(**DATA, extra_train_roots=[str(out)])
    dm.setup("fit")
    original = dm.full_split("train")
    assert len(dm.train_set) == 2 * len(original) == 36
    model = advmed.models.load_module(classifier_ckpt)
    x, y = (torch.stack(t) for t in zip(*(original[i] for i in range(18))))
    x_adv = torch.cat([FGSM(eps=0.1)(model, x[s : s + 4], y[s : s + 4]) for s in range(0, 18, 4)])
    extra = dm.train_set.datasets[1]
    seen = set()
    for j, name in enumerate(extra.names):  # <CLASS>/train_<index>
        i = int(name.rsplit("_", 1)[1])
        x_back, y_back = extra[j]
        seen.add(i)
        assert y_back == y[i] and name.split("/")[0] == dm.class_names[y[i]]
        assert (x_back - x_adv[i]).abs().max() <= 0.5 / 255 + 1e-5
        assert (x_back - x[i]).abs().max() <= 0.1 + 0.5 / 255 + 1e-5
        assert (x_back - x[i]).abs().max() > 0.05  # FGSM moved it
    assert seen == set(range(18))

    rows = read_manifest(out)
    assert len(rows) == 18 and rows[1]["image"] == "BACK/train_000001.png" and rows[1]["class"] == "BACK"
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["num_items"] == 18 and run["module"] == "ClassifierModule"
    assert run["identity"]["attack"]["eps"] == 0.1 and run["identity"]["split"] == "train"
    assert len(run["identity"]["checkpoint_sha256"]) == 64 and run["checkpoint"] == str(classifier_ckpt)


def test_inverse_fgsm_copy_of_segmentation_data(segmenter_ckpt, tmp_path):
    out = tmp_path / "inv"
    n, _ = run_augment(tmp_path, segmenter_ckpt, out, "attack=inverse_fgsm", "attack.eps=0.01", data=SEG_DATA)
    assert n == 7
    dm = TinySegDataModule(n=7, image_size=16, extra_train_roots=[str(out)])
    dm.setup("fit")
    assert len(dm.train_set) == 14
    original, extra = dm.full_split("train"), dm.train_set.datasets[1]
    model = advmed.models.load_module(segmenter_ckpt)
    for j, name in enumerate(extra.names):
        i = original.names.index(name.replace("__", "/"))
        (x, y), (x_back, y_back) = original[i], extra[j]
        s = 3 * (i // 3)  # the item's batch
        batch = [original[k] for k in range(s, min(s + 3, 7))]
        x_adv = writers_attack(model, batch)[i - s]
        assert torch.equal(y_back, y)  # masks are the ground truth, unchanged
        assert (x_back - x_adv).abs().max() <= 0.5 / 65535 + 1e-6  # 16-bit: eps=0.01 survives
        assert 0.009 < (x_back - x).abs().max() <= 0.01 + 1e-4
    assert [r["mask"] for r in read_manifest(out)][:2] == ["masks/vol0__s0.png", "masks/vol0__s1.png"]


def writers_attack(model, batch):
    from advmed.attacks import InverseFGSM

    x, y = (torch.stack(t) for t in zip(*batch))
    return InverseFGSM(eps=0.01)(model, x, y)


def test_a_unet_checkpoint_gives_a_png_pair_copy_naming_its_module(tmp_path):
    from advmed.models import segmentation

    torch.manual_seed(0)
    module = segmentation.SegmentationModule(
        num_classes=3, in_channels=1, class_names=["background", "liver", "spleen"], image_size=16, base_width=4, depth=2
    )
    ckpt = save_checkpoint(module, tmp_path / "unet.ckpt")
    n, out = run_augment(tmp_path, ckpt, tmp_path / "unet", "attack=fgsm", "attack.eps=0.02", data=SEG_DATA)
    assert n == 7 and len(list((out / "images").glob("*.png"))) == 7
    assert json.loads((out / "run.json").read_text())["module"] == "SegmentationModule"


def test_killed_pgd_run_is_completed_with_the_bytes_of_an_uninterrupted_one(classifier_ckpt, tmp_path, monkeypatch):
    pgd = ["attack=pgd", "attack.eps=0.05", "attack.steps=2"]  # random start from the global RNG
    run_augment(tmp_path, classifier_ckpt, tmp_path / "clean", *pgd)

    real_seed_batch = kill_writer_at_batch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_augment(tmp_path, classifier_ckpt, tmp_path / "resumed", *pgd)
    assert len(list((tmp_path / "resumed").rglob("*.png"))) == 8
    monkeypatch.setattr(writers, "seed_batch", real_seed_batch)

    assert run_augment(tmp_path, classifier_ckpt, tmp_path / "resumed", *pgd)[0] == 18
    assert tree_bytes(tmp_path / "resumed") == tree_bytes(tmp_path / "clean")
    assert len(read_manifest(tmp_path / "resumed")) == 18
    assert not list((tmp_path / "resumed").rglob("*.tmp"))


def test_another_run_in_the_same_folder_is_refused(classifier_ckpt, tmp_path):
    out = tmp_path / "copy"
    run_augment(tmp_path, classifier_ckpt, out, "attack=fgsm", "attack.eps=0.1")
    with pytest.raises(OutputDirError, match=r"attack\.eps differ.*overwrite=true"):
        run_augment(tmp_path, classifier_ckpt, out, "attack=fgsm", "attack.eps=0.2")
    with pytest.raises(OutputDirError, match=r"split differ"):
        run_augment(tmp_path, classifier_ckpt, out, "attack=fgsm", "attack.eps=0.1", "split=val")
    n, _ = run_augment(tmp_path, classifier_ckpt, out, "attack=fgsm", "attack.eps=0.2", "overwrite=true")
    assert n == 18 and json.loads((out / "run.json").read_text())["identity"]["attack"]["eps"] == 0.2
    # Settings that do not change the bytes (workers, training subset) resume the same run.
    assert run_augment(tmp_path, classifier_ckpt, out, "attack=fgsm", "attack.eps=0.2", "data.train_fraction=0.5")[0] == 18


def test_val_split_copy(classifier_ckpt, tmp_path):
    n, out = run_augment(tmp_path, classifier_ckpt, tmp_path / "val", "attack=fgsm", "split=val")
    assert n == 9 and (out / "ADI" / "val_000000.png").is_file()


@pytest.mark.parametrize("attack", [[], ["attack=none"]])
def test_an_attack_is_required(classifier_ckpt, tmp_path, attack):
    with pytest.raises(ValueError, match="advmed.augment needs an attack: choose one with attack=<name>"):
        run_augment(tmp_path, classifier_ckpt, tmp_path / "out", *attack)
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt' does not exist"):
        run_augment(tmp_path, tmp_path / "nope.ckpt", tmp_path / "out", "attack=fgsm")


def test_checkpoint_of_other_classes_is_refused(tmp_path):
    module = ClassifierModule("resnet18", num_classes=3)
    ckpt = save_checkpoint(module, tmp_path / "three.ckpt")
    with pytest.raises(ValueError, match="three.ckpt': the model was trained with num_classes=3 but the data config has num_classes=9"):
        run_augment(tmp_path, ckpt, tmp_path / "out", "attack=fgsm")
    assert not (tmp_path / "out").exists()


def test_config_needs_a_checkpoint_and_an_output_dir(tmp_path):
    from advmed.augment import augment

    with pytest.raises(Exception, match="output_dir"):
        augment(compose_config("augment", ["attack=fgsm", "ckpt_path=x"], tmp_path))


def test_command_line(classifier_ckpt, tmp_path):
    out = tmp_path / "cli"
    args = [*DATA_ARGS, f"ckpt_path={classifier_ckpt}", "attack=fgsm", "attack.eps=0.1", f"output_dir={out}", "progress_every_s=0"]
    proc = run_module("advmed.augment", args, cwd=tmp_path)
    assert f"18 attacked train items written to {out}" in proc.stdout
    (log,) = (tmp_path / "outputs" / "augment" / "runs").glob("*/augment.log")
    assert "18/18 items (100.0 %)" in log.read_text() and "\r" not in log.read_text()
    assert len(read_manifest(out)) == 18


@pytest.mark.parametrize("experiment", ["demo", "pervin/unet"])
def test_experiments_compose_with_augment(tmp_path, experiment):
    """The README commands: `python -m advmed.augment experiment=pervin/unet ckpt_path=... attack=... output_dir=...`."""

    cfg = compose_config("augment", [f"experiment={experiment}", "ckpt_path=c.ckpt", "attack=inverse_fgsm", "output_dir=o"], tmp_path)
    assert cfg.attack._target_ == "advmed.attacks.InverseFGSM" and cfg.batch_size == cfg.data.batch_size


def test_a_copy_of_the_training_set_with_its_extra_roots_covers_every_item_once(classifier_ckpt, tmp_path):
    """include_extra_train_roots: the attacked copy of real + an earlier copy (Lockshin's real + synthetic)."""
    first = tmp_path / "first"
    run_augment(tmp_path, classifier_ckpt, first, "attack=fgsm", "attack.eps=0.05")
    out = tmp_path / "both"
    n, _ = run_augment(tmp_path, classifier_ckpt, out, "attack=fgsm", "attack.eps=0.1", "include_extra_train_roots=true",
                       f"data.extra_train_roots=[{first}]")
    assert n == 36
    rows = read_manifest(out)
    files = [row["image"] for row in rows]
    assert len(set(files)) == 36 and sum("/first_train_" in f for f in files) == 18  # the extra items named apart
    assert all((out / f).is_file() for f in files)
    identity = json.loads((out / "run.json").read_text())["identity"]
    assert identity["extra_train_roots"] == [{"path": str(first.resolve()),
                                               "manifest_sha256": writers.file_sha256(first / "manifest.csv")}]
    # Real items first, then the extra folder's, each under its class: <CLASS>/first_<its name there>.
    assert [row["source"] for row in rows[:18]] == [f"train_{i:06d}" for i in range(18)]
    earlier = SyntheticHistologyDataModule(**DATA, extra_train_roots=[str(first)]).extra_train_datasets()[0]
    assert [row["source"] for row in rows[18:]] == [name.replace("/", "/first_") for name in earlier.names]


def test_extra_roots_must_be_finished_copies_and_the_option_needs_them(classifier_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"include_extra_train_roots=true .* data\.extra_train_roots=\[\]"):
        run_augment(tmp_path, classifier_ckpt, tmp_path / "a", "attack=fgsm", "include_extra_train_roots=true")
    first = tmp_path / "first"
    run_augment(tmp_path, classifier_ckpt, first, "attack=fgsm", "attack.eps=0.05")
    victim = first / read_manifest(first)[3]["image"]
    victim.unlink()
    with pytest.raises(writers.IncompleteCopyError, match=rf"manifest\.csv lists 18 files but 1 are missing .*{victim.name}"):
        run_augment(tmp_path, classifier_ckpt, tmp_path / "b", "attack=fgsm", "include_extra_train_roots=true",
                    f"data.extra_train_roots=[{first}]")
