"""CT segmentation through the entry points: the U-Net trains on generated NIfTI and PNG-pair
folders, `make paper-pervin` (train, augment x2, retrain x2, FGSM and SEA eps sweeps, tables) at tiny
sizes, and experiments/pervin/aggregate.py reads both sweeps, or a folder from before the SEA sweep."""

from __future__ import annotations

import csv
import importlib.util
import json
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
         f"PAPER_PERVIN_ARGS={args}", "PAPER_PERVIN_EPS=0,0.1", "PAPER_PERVIN_SEA_EPS=0.1",
         "PAPER_PERVIN_SEA_ARGS=attack.steps=3"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800,  # 12 processes, minutes each on a loaded CPU
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with (out / "table1_iou_over_epochs.csv").open() as f:
        table1 = list(csv.DictReader(f))
    with (out / "table2_iou_vs_eps.csv").open() as f:
        table2 = list(csv.DictReader(f))
    models = ["unet", "unet_fgsm", "unet_invfgsm"]
    assert list(table1[0]) == ["model", "epoch", "iou"] and list(table2[0]) == ["model", "eps", "iou", "sea_iou"]
    assert [(r["model"], r["epoch"]) for r in table1] == [(m, e) for m in models for e in ("0", "1")]
    assert [(r["model"], float(r["eps"])) for r in table2] == [(m, e) for m in models for e in (0.0, 0.1)]
    # eps 0 leaves the images unchanged: the sweep's IoU there is the model's clean test IoU.
    for model in models:
        clean = read_metrics(out / model)["test/iou"]
        at_zero = next(r for r in table2 if r["model"] == model and float(r["eps"]) == 0.0)
        assert float(at_zero["iou"]) == pytest.approx(clean, abs=1e-6) and at_zero["sea_iou"] == ""  # SEA: eps 0.1 only
        # The SEA cell is the SEA job's adversarial IoU; the job attacked the model's checkpoint with the given settings.
        (job,) = [p.parent for p in (out / "eps_sweep_sea" / model).rglob("metrics.json")]
        record = json.loads((job / "metrics.json").read_text())
        at_sea = next(r for r in table2 if r["model"] == model and float(r["eps"]) == 0.1)
        assert float(at_sea["sea_iou"]) == pytest.approx(record["metrics"]["test/adv_iou"])
        assert record["metrics"]["test/iou"] == pytest.approx(clean, abs=1e-6)
        assert record["attack"]["_target_"].endswith("SEA") and record["attack"]["steps"] == 3
        # SEA's per-image worst case, averaged over slices of one size, is the module's pooled pixel accuracy.
        assert 0.0 <= record["metrics"]["test/adv_pixel_acc"] <= record["metrics"]["test/pixel_acc"] <= 1.0
        assert record["metrics"]["test/worst_pixel_acc"] == pytest.approx(record["metrics"]["test/adv_pixel_acc"], abs=1e-5)
    # The augmented runs trained on twice the slices: the copies are complete.
    for copy in ("augment_fgsm", "augment_invfgsm"):
        assert len(list((out / copy / "images").glob("*.png"))) == 40
    summary = (out / "summary.md").read_text()
    assert "Table 2: test IoU under FGSM and SEA" in summary and "SEA: L-inf APGD, 3 iterations per loss" in summary


def load_aggregate():
    spec = importlib.util.spec_from_file_location("pervin_aggregate", REPO_ROOT / "experiments" / "pervin" / "aggregate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SEA_CONFIG = {"_target_": "advmed.attacks.ensembles.sea.SEA", "eps": 0.1, "steps": 300,
              "losses": ["mask-ce-bal", "mask-ce", "js"], "schedule": [[0.3, 2.0], [0.3, 1.5], [0.4, 1.0]],
              "select": "pixel_acc", "seed": 0}


def fake_paper_dir(root, fgsm: dict, sea: dict | None):
    """A `make paper-pervin` folder as the entry points leave it: each model's history.csv and metrics.json,
    and one job per eps of each sweep (``{model: {eps: iou}}``; ``sea`` None: a run from before the SEA
    sweep), each job with its Hydra overrides and metrics.json."""
    for model in fgsm:
        (root / model).mkdir(parents=True)
        (root / model / "history.csv").write_text("epoch,step,val/iou\n0,5,0.5\n1,10,0.7\n")
        (root / model / "metrics.json").write_text(json.dumps({"metrics": {"test/iou": 0.8, "test/dice": 0.85}}))
    sweeps = [("eps_sweep", "fgsm", fgsm, {"_target_": "advmed.attacks.fgsm.FGSM"}, [])]
    if sea is not None:
        sweeps.append(("eps_sweep_sea", "sea", sea, SEA_CONFIG, ["pixel accuracy of the worst case per image"]))
    for folder, attack, by_model, config, notes in sweeps:
        for model, points in by_model.items():
            for eps, iou in points.items():
                job = root / folder / model / f"attack.eps={eps}"
                (job / ".hydra").mkdir(parents=True)
                (job / ".hydra" / "overrides.yaml").write_text(
                    f"- experiment=pervin/unet\n- ckpt_path={root / model}/checkpoints/best.ckpt\n- attack={attack}\n"
                    f"- attack.eps={eps}\n")
                (job / "metrics.json").write_text(json.dumps(
                    {"metrics": {"test/iou": 0.8, "test/adv_iou": iou}, "attack": {**config, "eps": eps}, "notes": notes}))
    return root


def test_table2_carries_the_sea_sweep_beside_fgsm(tmp_path):
    fgsm = {"unet": {0: 0.8, 0.1: 0.5, 0.2: 0.3}, "unet_invfgsm": {0: 0.8, 0.1: 0.6, 0.2: 0.4}}
    sea = {"unet": {0.1: 0.2, 0.2: 0.05, 0.05: 0.4}, "unet_invfgsm": {0.1: 0.3}}  # 0.05: an eps FGSM did not run
    paper = fake_paper_dir(tmp_path / "paper", fgsm, sea)
    load_aggregate().aggregate(paper)
    with (paper / "table2_iou_vs_eps.csv").open() as f:
        rows = [(r["model"], float(r["eps"]), r["iou"], r["sea_iou"]) for r in csv.DictReader(f)]
    assert rows == [("unet", 0.0, "0.8", ""), ("unet", 0.05, "", "0.4"), ("unet", 0.1, "0.5", "0.2"),
                    ("unet", 0.2, "0.3", "0.05"), ("unet_invfgsm", 0.0, "0.8", ""), ("unet_invfgsm", 0.1, "0.6", "0.3"),
                    ("unet_invfgsm", 0.2, "0.4", "")]
    markdown = (paper / "table2_iou_vs_eps.md").read_text()
    assert "| model | attack | eps 0 | eps 0.05 | eps 0.1 | eps 0.2 |" in markdown
    assert "| UNet | SEA |  | 0.4000 | 0.2000 | 0.0500 |" in markdown
    assert "| UNet + Inverse-FGSM | FGSM | 0.8000 |  | 0.6000 | 0.4000 |" in markdown
    summary = (paper / "summary.md").read_text()
    assert "## Table 2: test IoU under FGSM and SEA" in summary
    # The attack behind each row is named with its iterations and restarts (DESIGN.md, contract 11), and its notes kept.
    assert ("SEA: L-inf APGD, 300 iterations per loss (mask-ce-bal, mask-ce, js) with progressive radius reduction "
            "(0.3 of the steps at 2 eps, 0.3 of the steps at 1.5 eps, 0.4 of the steps at 1 eps), one run per loss "
            "(no restarts)") in summary
    assert "- SEA: pixel accuracy of the worst case per image" in summary
    assert Image.open(paper / "table2_iou_vs_eps.png").format == "PNG"


def test_a_folder_from_before_the_sea_sweep_still_aggregates(tmp_path, capsys):
    fgsm = {"unet": {0: 0.8, 0.1: 0.5}, "unet_fgsm": {0: 0.8, 0.1: 0.55}, "unet_invfgsm": {0: 0.8, 0.1: 0.6}}
    paper = fake_paper_dir(tmp_path / "paper", fgsm, None)
    load_aggregate().aggregate(paper)
    assert "no SEA sweep" in capsys.readouterr().err
    with (paper / "table2_iou_vs_eps.csv").open() as f:
        rows = list(csv.DictReader(f))
    # FGSM's rows as before the SEA sweep existed, with an empty sea_iou column.
    assert [(r["model"], float(r["eps"]), float(r["iou"]), r["sea_iou"]) for r in rows] == [
        (m, eps, iou, "") for m, points in fgsm.items() for eps, iou in points.items()]
    assert "SEA" not in (paper / "table2_iou_vs_eps.md").read_text()
    summary = (paper / "summary.md").read_text()
    assert "## Table 2: test IoU under FGSM\n" in summary and "No SEA sweep in this folder" in summary
    assert Image.open(paper / "table2_iou_vs_eps.png").format == "PNG"
