"""CT segmentation through the entry points: the U-Net trains on generated NIfTI and PNG-pair
folders, and `make paper-pervin` (train, augment x2, retrain x2, eps sweeps, tables) at tiny sizes."""

from __future__ import annotations

import csv
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from tests.data.ct.test_ct_slices import write_btcv
from tests.entrypoints.conftest import compose_config, read_metrics

# A seconds-long U-Net: 32 px, two poolings, 8 base channels, two epochs.
SMALL_UNET = ["model=unet", "data.image_size=32", "model.depth=2", "model.base_width=8", "data.batch_size=8",
              "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "attack=fgsm", "attack.eps=0.1",
              "callbacks.adversarial_examples.num_images=2"]


def write_png_cases(root, cases: int = 5, slices: int = 3):
    """images/ + masks/ of a few cases: a bright liver box (BTCV id 6) on gray, at moving positions."""
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for case in range(1, cases + 1):
        for k in range(slices):
            image = rng.normal(100, 10, (32, 32)).clip(0, 255).astype(np.uint8)
            ids = np.zeros((32, 32), np.uint8)
            top, left = rng.integers(2, 18, 2)
            image[top : top + 12, left : left + 12] += 80
            ids[top : top + 12, left : left + 12] = 6
            Image.fromarray(image).save(root / "images" / f"case{case:04d}_{k:03d}.png")
            Image.fromarray(ids).save(root / "masks" / f"case{case:04d}_{k:03d}.png")
    return root


@pytest.mark.parametrize("layout", ["nifti", "png"])
def test_unet_trains_and_tests_on_a_ct_folder(layout, tmp_path):
    from advmed.train import train

    root = write_btcv(tmp_path / "btcv", 5) if layout == "nifti" else write_png_cases(tmp_path / "png")
    # The PNG run also trains online on FGSM images (half of every batch), as the README shows.
    online = ["attack@train_attack=fgsm", "train_attack.eps=0.05", "model.adv_fraction=0.5"] if layout == "png" else []
    run = tmp_path / "run"
    metrics = train(compose_config("train", ["data=ct_slices", f"data.root={root}", *SMALL_UNET, *online], run))
    assert {"test/dice", "test/iou", "test/adv_dice", "test/dice_drop", "test/dice_liver"} <= set(metrics)
    assert 0.0 <= metrics["test/dice_liver"] <= 1.0 and metrics["test/linf"] == pytest.approx(0.1, abs=1e-4)
    with (run / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    assert [row["epoch"] for row in history] == ["0", "1"] and all(row["val/iou"] for row in history)
    report = (run / "report.md").read_text()
    assert "## Per class" in report and "| liver |" in report
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "adversarial_examples.png").is_file()


def test_augmented_experiments_need_the_copy_folder(tmp_path):
    from advmed.train import train

    cfg = compose_config("train", ["experiment=pervin/unet_fgsm"], tmp_path)
    with pytest.raises(Exception, match="required config value.*augmented_root"):
        train(cfg)


def test_make_paper_pervin_writes_both_tables(tmp_path):
    out = tmp_path / "paper_pervin"
    data = "data.image_size=32 data.train_size=40 data.val_size=10 data.test_size=10 data.slices_per_volume=5"
    args = ("trainer.max_epochs=2 model.depth=2 model.base_width=8 trainer.enable_progress_bar=false "
            "callbacks.adversarial_examples.num_images=2")
    proc = subprocess.run(
        ["make", "-o", ".venv/.installed-stamp", "paper-pervin", f"PAPER_PERVIN_DIR={out}", f"PAPER_PERVIN_DATA={data}",
         f"PAPER_PERVIN_ARGS={args}", "PAPER_PERVIN_EPS=0,0.1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with (out / "table1_iou_over_epochs.csv").open() as f:
        table1 = list(csv.DictReader(f))
    with (out / "table2_iou_vs_eps.csv").open() as f:
        table2 = list(csv.DictReader(f))
    models = ["unet", "unet_fgsm", "unet_invfgsm"]
    assert list(table1[0]) == ["model", "epoch", "iou"] and list(table2[0]) == ["model", "eps", "iou"]
    assert [(r["model"], r["epoch"]) for r in table1] == [(m, e) for m in models for e in ("0", "1")]
    assert [(r["model"], float(r["eps"])) for r in table2] == [(m, e) for m in models for e in (0.0, 0.1)]
    # eps 0 leaves the images unchanged: the sweep's IoU there is the model's clean test IoU.
    for model in models:
        clean = read_metrics(out / model)["test/iou"]
        at_zero = next(float(r["iou"]) for r in table2 if r["model"] == model and float(r["eps"]) == 0.0)
        assert at_zero == pytest.approx(clean, abs=1e-6)
    # The augmented runs trained on twice the slices: the copies are complete.
    for copy in ("augment_fgsm", "augment_invfgsm"):
        assert len(list((out / copy / "images").glob("*.png"))) == 40
    assert "Table 2" in (out / "summary.md").read_text()
