"""SRGANModule (Lockshin et al. 2022, sec. 3.2): training on the fly-made (I_HR, I_LR) pairs, the
pixel pre-training phase, the PSNR / SSIM plumbing against bicubic, upscaling, the generator loader,
the missing-VGG19 cases and the sizes it refuses. Tiny networks on 28 px tiles: seconds on a CPU."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advmed.data.histology.synthetic_histology import SyntheticHistologyDataModule
from advmed.models.srgan import SRGANModule, load_srgan_generator
from advmed.nets.srgan_pairs import bicubic_upscale

TILE, HR, LR = 28, 32, 16  # the paper's 224 -> 256 / 128, divided by 8
ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3, "betas": [0.9, 0.999]}
TINY = dict(in_channels=3, image_size=TILE, hr_size=HR, lr_size=LR, num_blocks=1, channels=8, critic_width=4,
            critic_pool_size=2, alpha=1.0, grid_images=2, generator_optimizer=ADAM, critic_optimizer=ADAM)
VGG_WARNING = "VGG19 PERCEPTUAL FEATURES UNAVAILABLE"


def tiny_features() -> nn.Module:
    """A stand-in for the VGG19: one seeded conv + ReLU (no weights file needed)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())


def srgan(**kwargs) -> SRGANModule:
    torch.manual_seed(0)
    return SRGANModule(**{**TINY, "feature_network": tiny_features(), **kwargs})


def histology(**kwargs) -> SyntheticHistologyDataModule:
    """18 training tiles (3 batches of 6), 9 validation and 9 test tiles."""
    return SyntheticHistologyDataModule(**{"image_size": TILE, "train_per_class": 2, "val_per_class": 1,
                                           "test_per_class": 1, "batch_size": 6, "augment": {"enabled": False},
                                           **kwargs})


def trainer(root, max_steps: int = -1, **kwargs) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, max_epochs=-1 if max_steps > 0 else 1, accelerator="cpu", logger=False,
                     enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                     default_root_dir=root, deterministic=True, inference_mode=False, num_sanity_val_steps=0, **kwargs)


def fit(model: SRGANModule, root, max_steps: int) -> dict[str, float]:
    L.seed_everything(0)
    run = trainer(root, max_steps)
    run.fit(model, datamodule=histology())
    return {key: float(value) for key, value in run.callback_metrics.items()}


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def changed(module: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(value, before[key]) for key, value in module.state_dict().items())


def adam_steps(optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"]) if optimizer.state else 0


def test_a_few_steps_train_both_networks_with_every_term_finite(tmp_path):
    model = srgan()
    generator, critic, features = snapshot(model.generator), snapshot(model.critic), snapshot(model.perceptual_features)
    metrics = fit(model, tmp_path, max_steps=6)  # 3 iterations of one critic and one generator step
    terms = ("train/g_content", "train/g_adversarial", "train/g_loss", "train/d_real", "train/d_fake", "train/d_loss")
    assert set(terms) <= set(metrics) and "train/g_pixel" not in metrics
    assert all(math.isfinite(metrics[term]) for term in terms)
    assert metrics["train/d_loss"] == pytest.approx(metrics["train/d_real"] + metrics["train/d_fake"], rel=1e-5)
    assert model.generator_steps == 3 and model.critic_steps == 3
    g_opt, d_opt = model.optimizers()
    assert adam_steps(g_opt) == 3 and adam_steps(d_opt) == 3
    assert changed(model.generator, generator) and changed(model.critic, critic)
    # The feature network is frozen and stays out of the checkpoint.
    assert not changed(model.perceptual_features, features) and not model.perceptual_features.training
    assert not any(key.startswith("perceptual_features.") for key in model.state_dict())
    assert {"val/psnr", "val/ssim", "val/bicubic_psnr", "val/bicubic_ssim"} <= set(metrics)


def test_pretraining_steps_only_the_generator_and_logs_only_the_pixel_term(tmp_path):
    model = srgan(pretrain_steps=100)
    generator, critic = snapshot(model.generator), snapshot(model.critic)
    metrics = fit(model, tmp_path, max_steps=3)
    train_terms = {key for key in metrics if key.startswith("train/")}
    assert train_terms == {"train/g_pixel", "train/g_loss"}
    assert metrics["train/g_loss"] == pytest.approx(metrics["train/g_pixel"])
    g_opt, d_opt = model.optimizers()
    assert adam_steps(g_opt) == 3 and adam_steps(d_opt) == 0
    assert changed(model.generator, generator)
    assert not changed(model.critic, critic)  # weights and batch-norm statistics: never called


def test_the_adversarial_phase_starts_after_pretrain_steps(tmp_path):
    model = srgan(pretrain_steps=2)
    fit(model, tmp_path, max_steps=4)  # 2 generator-only steps, then one critic and one generator step
    g_opt, d_opt = model.optimizers()
    assert adam_steps(g_opt) == 3 and adam_steps(d_opt) == 1
    assert model.generator_steps == 3 and not model.in_pretraining


def test_the_pixel_pretraining_term_is_the_mse_of_the_pair(tmp_path):
    """The logged pre-training term on one batch equals the pixel MSE of G(I_LR) and I_HR computed
    here with torch's interpolate and a hand-written mean of squares."""
    model = srgan(pretrain_steps=10)
    tiles = torch.rand(4, 3, TILE, TILE, generator=torch.Generator().manual_seed(3))
    hr = F.interpolate(tiles, size=(HR, HR), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    lr = F.interpolate(tiles, size=(LR, LR), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    with torch.no_grad():
        terms = model.generator_loss((tiles, torch.zeros(4)))
        expected = ((model.generator(lr) - hr) ** 2).sum() / hr.numel()
    assert list(terms) == ["pixel"] and terms["pixel"].item() == pytest.approx(expected.item(), rel=1e-5)


class Upscaler(nn.Module):
    """A fixed "generator": bicubic or nearest-neighbour (pixel replication) x2 upscaling."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.head = nn.Sequential(nn.Conv2d(3, 1, 1))  # upscale_images reads the channel count here

    def forward(self, x):
        return bicubic_upscale(x, 2) if self.mode == "bicubic" else F.interpolate(x, scale_factor=2, mode="nearest")


def validate_with(generator: nn.Module, tiles: torch.Tensor, tmp_path) -> dict[str, float]:
    model = srgan()
    model.generator = generator
    loader = DataLoader(TensorDataset(tiles, torch.zeros(len(tiles), dtype=torch.long)), batch_size=4)
    return trainer(tmp_path).validate(model, dataloaders=loader, verbose=False)[0]


def smooth_tiles(n: int = 6) -> torch.Tensor:
    """Low-frequency colour waves (periods of 14-28 px on 28 px tiles): what bicubic interpolates well."""
    g = torch.Generator().manual_seed(5)
    coords = torch.arange(TILE, dtype=torch.float32) / TILE
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    freq, phase = 1 + torch.rand(n, 3, 2, generator=g), 2 * math.pi * torch.rand(n, 3, 1, 1, generator=g)
    waves = torch.sin(2 * math.pi * (freq[..., 0, None, None] * xx + freq[..., 1, None, None] * yy) + phase)
    return 0.5 + 0.3 * waves


def test_a_bicubic_generator_scores_exactly_the_bicubic_baseline_and_the_hand_psnr(tmp_path):
    tiles = smooth_tiles()
    m = validate_with(Upscaler("bicubic"), tiles, tmp_path)
    assert m["val/psnr"] == m["val/bicubic_psnr"] and m["val/ssim"] == m["val/bicubic_ssim"]
    # Independently: the pair by interpolate, PSNR = 10 log10(1 / MSE) per image, then the mean.
    hr = F.interpolate(tiles, size=(HR, HR), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    lr = F.interpolate(tiles, size=(LR, LR), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    up = F.interpolate(lr, size=(HR, HR), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    mse = ((up.double() - hr.double()) ** 2).flatten(1).mean(1)
    assert m["val/bicubic_psnr"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-5)
    assert 20.0 < m["val/bicubic_psnr"] < 100.0 and 0.5 < m["val/bicubic_ssim"] < 1.0


def test_pixel_replication_scores_below_bicubic_on_smooth_tiles(tmp_path):
    m = validate_with(Upscaler("nearest"), smooth_tiles(), tmp_path)
    assert m["val/psnr"] < m["val/bicubic_psnr"] - 1.0 and m["val/ssim"] < m["val/bicubic_ssim"]


def test_a_flat_tile_is_reproduced_exactly_by_both(tmp_path):
    """A constant colour survives any interpolation: PSNR at its documented 100 dB cap, SSIM 1."""
    tiles = torch.tensor([0.8, 0.4, 0.6]).view(1, 3, 1, 1).expand(4, 3, TILE, TILE).contiguous()
    m = validate_with(Upscaler("nearest"), tiles, tmp_path)
    assert m["val/psnr"] == m["val/bicubic_psnr"] == pytest.approx(100.0)
    # SSIM is computed in float64 (float32 gives 0.9996 for two identical flat 0.6 images).
    assert m["val/ssim"] == pytest.approx(1.0, abs=1e-9) and m["val/bicubic_ssim"] == pytest.approx(1.0, abs=1e-9)


def test_the_test_writes_the_quality_table_and_the_figure(tmp_path):
    model = srgan()
    run = trainer(tmp_path)
    m = run.test(model, datamodule=histology(), verbose=False)[0]
    with (tmp_path / "sr_quality.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["model"] for row in rows] == ["srgan", "bicubic"] and all(row["images"] == "9" for row in rows)
    assert float(rows[0]["psnr"]) == pytest.approx(m["test/psnr"]) and float(rows[1]["ssim"]) == pytest.approx(m["test/bicubic_ssim"])
    assert "| srgan |" in (tmp_path / "sr_quality.md").read_text()
    assert (tmp_path / "sr_examples.png").stat().st_size > 0
    # An untrained generator is far worse than bicubic: the table shows it.
    assert m["test/psnr"] < m["test/bicubic_psnr"]


def test_upscale_doubles_the_side_in_range_without_gradients_and_keeps_the_mode():
    model = srgan()
    images = torch.rand(5, 3, 10, 12)
    assert model.generator.training
    out = model.upscale(images)
    assert out.shape == (5, 3, 20, 24) and not out.requires_grad
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert model.generator.training  # restored
    # Eval-mode batch norm: chunks give the same images (up to float rounding of the convolutions;
    # training-mode statistics would move them by about 1e-2).
    torch.testing.assert_close(model.upscale(images, batch_size=2), out, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"images must be a float tensor \(N, C, h, w\) in \[0, 1\], got a torch\.uint8"):
        model.upscale((images * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"images must be in \[0, 1\], got values in \[-1, 1\]"):
        model.upscale(torch.linspace(-1, 1, 3 * 16).view(1, 3, 4, 4))  # [-1, 1]: a normalised image
    with pytest.raises(ValueError, match="the generator takes 3-channel images, got 1 channels"):
        model.upscale(images[:, :1])


def test_the_generator_loads_from_a_checkpoint_alone(tmp_path):
    model = srgan(ema_decay=0.5)
    run = trainer(tmp_path, max_steps=4)
    run.fit(model, datamodule=histology())
    run.save_checkpoint(tmp_path / "srgan.ckpt")
    generator, hparams = load_srgan_generator(tmp_path / "srgan.ckpt")
    assert hparams["hr_size"] == HR and not generator.training
    images = torch.rand(2, 3, LR, LR)
    with torch.no_grad():
        assert torch.equal(generator(images), model.generator_ema(images))  # the EMA copy is what samples
    assert torch.equal(model.upscale(images), generator(images).clamp(0, 1))
    torch.save({"state_dict": {}, "advmed_module": "advmed.models.classifier.ClassifierModule"}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match=r"'.*other\.ckpt' is not an advmed SRGANModule checkpoint \(it holds advmed\.models\.classifier"):
        load_srgan_generator(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*missing\.ckpt' does not exist"):
        load_srgan_generator(tmp_path / "missing.ckpt")


def test_missing_vgg19_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(FileNotFoundError, match=f"save it as '{expected}'"):
        SRGANModule(**TINY, perceptual={"layer": "relu1_2"})  # a shallow layer: built in no time
    with pytest.raises(FileNotFoundError, match=r"VGG19 weights 'mine\.pth' not found in '.*weights'"):
        SRGANModule(**TINY, perceptual={"layer": "relu1_2", "weights_path": str(tmp_path / "weights" / "mine.pth")})


def test_missing_vgg19_weights_can_warn_and_train_on_pixel_mse(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.warns(UserWarning, match=VGG_WARNING):
        model = SRGANModule(**TINY, perceptual={"layer": "relu1_2", "on_missing": "warn", "fallback": "pixel"})
    assert not model.sr_loss.perceptual
    metrics = fit(model, tmp_path, max_steps=4)
    assert {"train/g_pixel", "train/g_adversarial", "train/d_real"} <= set(metrics) and "train/g_content" not in metrics
    assert all(math.isfinite(metrics[k]) for k in ("train/g_pixel", "train/g_adversarial"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hr_size": 30}, r"model\.hr_size=30 must equal model\.scale \* model\.lr_size = 2 \* 16 = 32"),
        ({"image_size": 16}, r"data\.image_size=16 must be larger than model\.lr_size=16"),
        ({"scale": 3}, r"model\.scale=3 must be one of \(2, 4\)"),
        ({"hr_size": 8, "lr_size": 4}, r"model\.hr_size=8 must be at least 11"),
        ({"lr_kernel": "lanczos"}, r"model\.lr_kernel='lanczos' must be one of"),
        ({"pretrain_steps": -1}, r"model\.pretrain_steps=-1 must be an integer >= 0"),
        ({"grid_images": -2}, r"model\.grid_images=-2 must be an integer >= 0"),
        ({"perceptual": {"layers": "relu5_4"}}, r"model\.perceptual has unknown key\(s\) \['layers'\]"),
        ({"perceptual": {"on_missing": "skip"}}, r"model\.perceptual\.on_missing='skip' must be one of"),
        ({"perceptual": {"fallback": "l1"}}, r"model\.perceptual\.fallback='l1' must be one of"),
    ],
)
def test_bad_settings_are_refused_with_the_value_and_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        srgan(**kwargs)


def test_data_of_another_tile_size_is_refused(tmp_path):
    model = srgan()
    with pytest.raises(ValueError, match=r"built for data\.image_size=28 but the data has image_size=40"):
        model.check_datamodule(histology(image_size=40))
    with pytest.raises(ValueError, match=r"built for data\.image_size=28 but the data has image_size=40"):
        trainer(tmp_path, max_steps=2).fit(model, datamodule=histology(image_size=40))
    loader = DataLoader(TensorDataset(torch.rand(2, 3, 20, 20), torch.zeros(2, dtype=torch.long)), batch_size=2)
    with pytest.raises(ValueError, match=r"the data gives 20x20 tiles but model\.image_size=28"):
        trainer(tmp_path).validate(model, dataloaders=loader, verbose=False)
    unsized = srgan(image_size=None)
    with pytest.raises(ValueError, match=r"data\.image_size=16 must be larger than model\.lr_size=16"):
        unsized.check_datamodule(histology(image_size=16))
