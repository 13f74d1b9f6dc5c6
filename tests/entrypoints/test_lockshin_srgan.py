"""The SRGAN x2 step of Lockshin et al. 2022 through `python -m advmed.train`: the tiny experiment
trains, tests and writes its quality table; the paper's experiment states the paper's settings and
asks for the VGG19 file by its path."""

from __future__ import annotations

import csv

import pytest
import torch
from hydra.errors import InstantiationException

from tests.entrypoints.conftest import compose_config

VGG_WARNING = "VGG19 PERCEPTUAL FEATURES UNAVAILABLE"
# A few steps of experiment=lockshin/srgan_tiny: 18 training tiles in batches of 6, 2 pre-training steps.
TINY = ["experiment=lockshin/srgan_tiny", "data.train_per_class=2", "data.val_per_class=1", "data.test_per_class=1",
        "data.batch_size=6", "model.pretrain_steps=2", "trainer.max_steps=6", "trainer.log_every_n_steps=1"]


def test_srgan_tiny_trains_tests_and_writes_the_quality_table(tmp_path, monkeypatch):
    from advmed.models.srgan import load_srgan_generator
    from advmed.train import train

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no VGG19 file: the experiment warns, pixel MSE
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match=VGG_WARNING):
        metrics = train(compose_config("train", TINY, run))
    with (run / "sr_quality.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["model"] for row in rows] == ["srgan", "bicubic"] and all(row["images"] == "9" for row in rows)
    assert float(rows[0]["psnr"]) == pytest.approx(metrics["test/psnr"])
    assert float(rows[1]["psnr"]) == pytest.approx(metrics["test/bicubic_psnr"])
    assert 0.0 < metrics["test/ssim"] <= 1.0 and metrics["test/bicubic_psnr"] > 15.0
    assert {"train/g_pixel", "train/g_adversarial", "train/d_real", "val/psnr", "val/bicubic_ssim"} <= set(metrics)
    assert (run / "sr_examples.png").stat().st_size > 0 and (run / "sr_quality.md").is_file()
    # The best checkpoint (by val/psnr) holds a generator that upscales 16 px tiles to 32 px on its own.
    generator, hparams = load_srgan_generator(run / "checkpoints" / "best.ckpt")
    assert (hparams["lr_size"], hparams["hr_size"], hparams["num_blocks"]) == (16, 32, 2)
    with torch.no_grad():
        assert generator(torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)


def test_the_paper_experiment_has_the_papers_settings_and_names_the_missing_vgg19(tmp_path, monkeypatch):
    from advmed.train import build_model

    cfg = compose_config("train", ["experiment=lockshin/srgan"], tmp_path / "run")
    assert cfg.data._target_ == "advmed.data.histology.nct_crc_he.NCTCRCHEDataModule"
    assert (cfg.data.image_size, cfg.data.batch_size) == (224, 32)
    assert (cfg.model.image_size, cfg.model.hr_size, cfg.model.lr_size, cfg.model.scale) == (224, 256, 128, 2)
    assert cfg.model.perceptual.layer == "relu5_4" and cfg.model.perceptual.on_missing == "error"
    assert cfg.trainer.max_steps == 12000 and cfg.model.n_critic == 1 and cfg.model.pretrain_steps == 0
    assert cfg.model.generator_optimizer == {"_target_": "torch.optim.Adam", "lr": 1e-4, "betas": [0.9, 0.999]}
    assert cfg.model.critic_optimizer == cfg.model.generator_optimizer
    assert cfg.attack == {} and cfg.optimized_metric == "test/psnr"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(InstantiationException, match=f"save it as '{expected}'") as error:
        build_model(cfg)  # Hydra wraps what the constructor raised
    assert isinstance(error.value.__cause__, FileNotFoundError)
