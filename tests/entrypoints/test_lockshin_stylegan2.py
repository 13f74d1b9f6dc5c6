"""Lockshin et al. 2022 StyleGAN2 stage through `python -m advmed.train`: the tiny experiment at even
tinier sizes (fid.csv, sample grids, test FID and judge accuracy, a checkpoint that samples), the
missing judge, and the full-size experiment's documented settings."""

from __future__ import annotations

import csv

import pytest
import torch
from omegaconf import OmegaConf

from advmed.models.checkpoint import load_module
from advmed.models.gan import COUNTERS_KEY
from advmed.models.stylegan2 import StyleGAN2Module
from tests.entrypoints.conftest import compose_config, read_metrics, run_module
from tests.models.stylegan2_toy import save_judge

TINIER = ["data.image_size=16", "data.train_per_class=2", "data.test_per_class=1", "data.batch_size=6",
          "model.z_dim=8", "model.w_dim=8", "model.channel_base=64", "model.channel_max=16",
          "model.fid.num_images=18", "model.fid.batch_size=8", "trainer.max_epochs=2",
          "callbacks.fid_history.every_n_epochs=1", "callbacks.fid_history.num_images=18",
          "callbacks.class_samples.every_n_epochs=1", "callbacks.class_samples.samples_per_class=2"]


@pytest.fixture(scope="module")
def judge_ckpt(tmp_path_factory):
    return save_judge(tmp_path_factory.mktemp("judge"))


def test_the_tiny_experiment_trains_writes_fid_csv_and_grids_and_tests(tmp_path, judge_ckpt):
    from advmed.train import train

    run = tmp_path / "run"
    cfg = compose_config("train", ["experiment=lockshin/stylegan2_tiny", *TINIER,
                                   f"model.fid.classifier_ckpt={judge_ckpt}"], run)
    metrics = train(cfg)
    with (run / "fid.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 3, 6] and all(float(r["fid"]) > 0 for r in rows)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    saved = read_metrics(run)
    for key in ("test/fid", "test/fid_ADI", "test/judge_acc", "test/judge_real_acc", "train/fid_first", "train/fid_last"):
        assert key in saved and key in metrics, key
    assert saved["train/fid_last"] == pytest.approx(float(rows[-1]["fid"]), rel=1e-5)
    assert 0.0 <= saved["test/judge_acc"] <= 1.0 and saved["test/fid_num_real"] == 18
    assert "test/fid" in (run / "report.md").read_text()
    assert "advmed classifier penultimate" in (run / "fid.json").read_text()
    best = run / "checkpoints" / "best.ckpt"
    assert torch.load(best, weights_only=True)[COUNTERS_KEY]["generator_steps"] == 6  # the last epoch (no monitor)
    model = load_module(best, StyleGAN2Module)
    tiles = model.sample(torch.arange(9))
    assert tiles.shape == (9, 3, 16, 16) and 0.0 <= tiles.min() and tiles.max() <= 1.0


def test_the_tiny_experiment_without_a_judge_says_what_to_train(tmp_path):
    from advmed.train import train

    cfg = compose_config("train", ["experiment=lockshin/stylegan2_tiny", *TINIER], tmp_path / "run")
    # Hydra's instantiate wraps the module's ValueError, keeping its message.
    with pytest.raises(Exception, match=r"ValueError\('model\.fid\.features=classifier needs model\.fid\.classifier_ckpt=.*"
                                        r"experiment=lockshin/classifier_tiny"):
        train(cfg)


def test_the_full_size_experiment_holds_the_papers_settings(tmp_path):
    cfg = compose_config("train", ["experiment=lockshin/stylegan2"], tmp_path / "run")
    c = OmegaConf.to_container(cfg, resolve=True)
    model, data, trainer = c["model"], c["data"], c["trainer"]
    assert (data["image_size"], data["batch_size"], data["per_class"]) == (128, 32, 2500)
    assert (model["z_dim"], model["channel_base"], model["channel_max"], model["mapping_layers"]) == (512, 32768, 512, 8)
    assert model["r1_gamma"] == pytest.approx(0.0002 * 128**2 / 32)
    assert model["ema_decay"] == pytest.approx(0.5 ** (32 / 10_000), abs=1e-6) and model["ema_rampup"] == 0.05
    assert model["generator_optimizer"]["lr"] == 0.0025 and model["generator_optimizer"]["betas"] == [0.0, 0.99]
    assert (model["critic_reg_interval"], model["generator_reg_interval"]) == (16, 4)
    assert model["fid"]["features"] == "inception" and model["fid"]["reference_split"] == "train"
    assert trainer["max_steps"] == 280_000 * (2 + 1 / 16 + 1 / 4) and trainer["precision"] == "bf16-mixed"


@pytest.mark.slow
def test_the_tiny_acceptance_run_lowers_fid_and_generates_tiles_of_the_asked_class(tmp_path):
    """The issue's acceptance commands as a user types them (about 3 + 9 minutes on 2 CPU cores): the
    last FID of fid.csv is well below the first (taken before any training), and the judge trained on
    real tiles labels the generated tiles far above chance (1/9). Measured: 6252 -> 74, accuracy 0.65."""
    judge_run, gan_run = tmp_path / "judge", tmp_path / "stylegan2"
    run_module("advmed.train", ["experiment=lockshin/classifier_tiny", f"hydra.run.dir={judge_run}"], tmp_path,
               timeout=1800)
    run_module("advmed.train", ["experiment=lockshin/stylegan2_tiny", f"hydra.run.dir={gan_run}",
                                f"model.fid.classifier_ckpt={judge_run / 'checkpoints' / 'best.ckpt'}"], tmp_path,
               timeout=3600)
    with (gan_run / "fid.csv").open() as f:
        fids = [float(row["fid"]) for row in csv.DictReader(f)]
    assert len(fids) >= 5 and fids[-1] < 0.25 * fids[0], fids
    metrics = read_metrics(gan_run)
    assert metrics["test/judge_acc"] > 3 / 9, metrics["test/judge_acc"]
    assert metrics["test/judge_real_acc"] > 0.6  # the judge itself knows the real classes
