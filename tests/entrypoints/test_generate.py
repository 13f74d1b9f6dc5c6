"""`python -m advmed.generate`: a synthetic dataset of a StyleGAN2 checkpoint (optionally SRGAN-upscaled)
in the NCT layout, written resumably, read back as extra training data by the histology DataModules."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from advmed.data import writers
from advmed.data.histology.nct_crc_he import NCTCRCHEDataModule
from advmed.data.histology.synthetic_histology import CLASS_NAMES, SyntheticHistologyDataModule
from advmed.data.writers import OutputDirError, read_manifest
from advmed.models.base import CLASS_KEY, AdvmedModule, class_path
from advmed.models.checkpoint import load_module
from advmed.models.srgan import SRGANModule
from advmed.models.stylegan2 import StyleGAN2Module
from advmed.nets.srgan_pairs import resize
from tests.data.histology.test_nct_crc_he import write_nct_layout
from tests.data.test_writers import tree_bytes
from tests.entrypoints.conftest import compose_config, kill_writer_at_batch, run_module
from tests.models import stylegan2_toy as toy

N_PER_CLASS, BATCH = 2, 4  # 18 tiles of 16 px in 5 batches (the last one of 2)
TOTAL = 9 * N_PER_CLASS


def save_checkpoint(module: AdvmedModule, path):
    """What Lightning's checkpoint holds for advmed's loaders: weights, hyper-parameters, module class."""
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                CLASS_KEY: class_path(type(module))}, path)
    return path


@pytest.fixture(scope="module")
def stylegan_ckpt(tmp_path_factory):
    """The tiny 16-px StyleGAN2 of the 9 synthetic-histology classes, untrained (sampling needs no training)."""
    torch.manual_seed(0)
    return save_checkpoint(toy.module(None), tmp_path_factory.mktemp("stylegan2") / "stylegan2.ckpt")


def srgan_module(in_channels: int = 3) -> SRGANModule:
    torch.manual_seed(1)
    # feature_network: a stand-in for the VGG19, which upscaling never calls (and never needs on disk)
    return SRGANModule(in_channels=in_channels, scale=2, hr_size=32, lr_size=16, num_blocks=1, channels=4,
                       critic_width=4, feature_network=nn.Identity())


@pytest.fixture(scope="module")
def srgan_ckpt(tmp_path_factory):
    return save_checkpoint(srgan_module(), tmp_path_factory.mktemp("srgan") / "srgan.ckpt")


def generate_cfg(tmp_path, ckpt, out, *overrides):
    args = [f"ckpt_path={ckpt}", f"output_dir={out}", f"n_per_class={N_PER_CLASS}", f"batch_size={BATCH}",
            "progress_every_s=0", *overrides]
    return compose_config("generate", args, tmp_path / "hydra")


def run_generate(tmp_path, ckpt, out, *overrides):
    from advmed.generate import generate

    return generate(generate_cfg(tmp_path, ckpt, out, *overrides))


def expected_tiles(ckpt, seed: int = 42, psi: float | None = None) -> torch.Tensor:
    """The documented sampling: class by class, batch b's latents from a CPU generator seeded by one
    draw of the global RNG seeded with the writer's batch seed."""
    module = load_module(ckpt, StyleGAN2Module)
    labels = torch.arange(9).repeat_interleave(N_PER_CLASS)
    tiles = []
    for b, batch in enumerate(labels.split(BATCH)):
        torch.manual_seed(writers.batch_seed(seed, b))
        latents = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        tiles.append(module.sample(batch, truncation_psi=psi, generator=latents))
    return torch.cat(tiles)


def read_png(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255


def test_tiles_read_back_as_extra_training_data_with_their_labels(stylegan_ckpt, tmp_path):
    out = tmp_path / "gen"
    assert run_generate(tmp_path, stylegan_ckpt, out) == (TOTAL, out)

    dm = toy.data(extra_train_roots=[str(out)])
    dm.setup("fit")
    assert len(dm.train_set) == 18 + TOTAL
    extra = dm.train_set.datasets[1]
    expected = expected_tiles(stylegan_ckpt)
    assert expected.std() > 0.01  # a check of tiles, not of a constant grey
    assert sorted(extra.names) == sorted(f"{CLASS_NAMES[c]}/gen_{CLASS_NAMES[c]}_{i:06d}" for c in range(9)
                                         for i in range(N_PER_CLASS))
    for j, name in enumerate(extra.names):
        c, i = CLASS_NAMES.index(name.split("/")[0]), int(name.rsplit("_", 1)[1])
        x_back, y_back = extra[j]
        assert int(y_back) == c
        assert (x_back - expected[c * N_PER_CLASS + i]).abs().max() <= 0.5 / 255 + 1e-5  # 8-bit rounding only

    rows = read_manifest(out)
    assert len(rows) == TOTAL and rows[2] == {"index": "2", "source": "gen_BACK_000000", "image": "BACK/gen_BACK_000000.png",
                                              "label": "1", "class": "BACK"}
    run = json.loads((out / "run.json").read_text())
    identity = run["identity"]
    assert identity["checkpoint_sha256"] == hashlib.sha256(stylegan_ckpt.read_bytes()).hexdigest()
    assert (identity["seed"], identity["n_per_class"], identity["truncation_psi"], identity["noise_mode"]) == (42, 2, 1.0, "const")
    assert identity["upscale"] == {"checkpoint_sha256": None, "final_size": 16, "kernel": None}
    assert run["complete"] and run["task"] == "advmed.generate" and run["module"] == "StyleGAN2Module"
    assert run["class_names"] == list(CLASS_NAMES) and run["upscaler_checkpoint"] is None


def test_the_nct_datamodule_reads_the_folder_back(stylegan_ckpt, tmp_path):
    out = tmp_path / "gen"
    run_generate(tmp_path, stylegan_ckpt, out, "data=nct_crc_he")  # the NCT data config: same 9 classes
    root = write_nct_layout(tmp_path / "nct", per_class=4)
    dm = NCTCRCHEDataModule(root=root, per_class=None, test_fraction=0.25, val_fraction=0.34, image_size=16,
                            extra_train_roots=[str(out)])
    dm.setup("fit")
    real, extra = dm.train_set.datasets
    assert len(extra) == TOTAL and len(dm.train_set) == len(real) + TOTAL
    assert torch.equal(extra.targets, torch.arange(9).repeat_interleave(N_PER_CLASS))
    x, y = extra[5]  # DEB/gen_DEB_000001.png
    assert int(y) == 2 and x.shape == (3, 16, 16)
    assert torch.allclose(x, read_png(out / "DEB" / "gen_DEB_000001.png"))


def test_srgan_upscales_then_resizes_to_the_final_size(stylegan_ckpt, srgan_ckpt, tmp_path):
    out = tmp_path / "sr"
    run_generate(tmp_path, stylegan_ckpt, out, f"upscale.ckpt_path={srgan_ckpt}", "upscale.final_size=24")
    sr = srgan_module()  # the same seeded weights as the checkpoint, applied by hand
    sr.eval()
    with torch.no_grad():
        upscaled = sr.generator(expected_tiles(stylegan_ckpt)).clamp(0, 1)
    assert upscaled.shape[-1] == 32
    expected = resize(upscaled, 24, "bicubic")
    for k, name in ((0, "ADI/gen_ADI_000000.png"), (17, "TUM/gen_TUM_000001.png")):
        tile = read_png(out / name)
        assert tile.shape == (3, 24, 24)
        assert (tile - expected[k]).abs().max() <= 0.5 / 255 + 1e-4
    run = json.loads((out / "run.json").read_text())
    assert run["identity"]["upscale"] == {"checkpoint_sha256": hashlib.sha256(srgan_ckpt.read_bytes()).hexdigest(),
                                          "final_size": 24, "kernel": "bicubic"}
    assert run["upscaler_hparams"]["scale"] == 2 and run["upscaler_checkpoint"] == str(srgan_ckpt)


@pytest.mark.parametrize(("sr", "final_size", "side"), [(True, "null", 32), (False, "24", 24)])
def test_final_size_is_optional_and_also_resizes_without_srgan(stylegan_ckpt, srgan_ckpt, tmp_path, sr, final_size, side):
    out = tmp_path / "out"
    sr_arg = f"upscale.ckpt_path={srgan_ckpt}" if sr else "upscale.ckpt_path=null"
    run_generate(tmp_path, stylegan_ckpt, out, sr_arg, f"upscale.final_size={final_size}", "upscale.kernel=area")
    assert Image.open(out / "MUS" / "gen_MUS_000000.png").size == (side, side)
    kernel = json.loads((out / "run.json").read_text())["identity"]["upscale"]["kernel"]
    assert kernel == (None if sr else "area")  # recorded only when a resize happens
    if not sr:  # the generated tiles resized directly (the interpolation baseline)
        expected = resize(expected_tiles(stylegan_ckpt), 24, "area")
        assert (read_png(out / "MUS" / "gen_MUS_000000.png") - expected[10]).abs().max() <= 0.5 / 255 + 1e-4


def test_same_seed_same_bytes_and_a_killed_run_completes_identically(stylegan_ckpt, tmp_path, monkeypatch):
    run_generate(tmp_path, stylegan_ckpt, tmp_path / "a")
    run_generate(tmp_path, stylegan_ckpt, tmp_path / "b")
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    run_generate(tmp_path, stylegan_ckpt, tmp_path / "other_seed", "seed=7")
    assert (tmp_path / "a" / "ADI" / "gen_ADI_000000.png").read_bytes() != \
        (tmp_path / "other_seed" / "ADI" / "gen_ADI_000000.png").read_bytes()

    real_seed_batch = kill_writer_at_batch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_generate(tmp_path, stylegan_ckpt, tmp_path / "resumed")
    assert len(list((tmp_path / "resumed").rglob("*.png"))) == 2 * BATCH
    monkeypatch.setattr(writers, "seed_batch", real_seed_batch)
    assert run_generate(tmp_path, stylegan_ckpt, tmp_path / "resumed")[0] == TOTAL
    assert tree_bytes(tmp_path / "resumed") == tree_bytes(tmp_path / "a")
    assert not list((tmp_path / "resumed").rglob("*.tmp"))


def test_a_folder_holding_another_run_is_refused_unless_overwrite(stylegan_ckpt, tmp_path):
    out = tmp_path / "gen"
    run_generate(tmp_path, stylegan_ckpt, out, "seed=1")
    with pytest.raises(OutputDirError, match=r"holds another run: seed differ.*overwrite=true"):
        run_generate(tmp_path, stylegan_ckpt, out, "seed=2")
    with pytest.raises(OutputDirError, match=r"truncation_psi differ"):
        run_generate(tmp_path, stylegan_ckpt, out, "seed=1", "truncation_psi=0.7")
    assert run_generate(tmp_path, stylegan_ckpt, out, "seed=2", "overwrite=true")[0] == TOTAL
    assert json.loads((out / "run.json").read_text())["identity"]["seed"] == 2


def test_truncation_toward_the_class_mean_is_applied(stylegan_ckpt, tmp_path):
    out = tmp_path / "psi"
    run_generate(tmp_path, stylegan_ckpt, out, "truncation_psi=0.5")
    expected = expected_tiles(stylegan_ckpt, psi=0.5)
    untruncated = expected_tiles(stylegan_ckpt, psi=1.0)
    tile = read_png(out / "LYM" / "gen_LYM_000001.png")
    assert (tile - expected[7]).abs().max() <= 0.5 / 255 + 1e-5
    assert (tile - untruncated[7]).abs().max() > 2 / 255
    assert json.loads((out / "run.json").read_text())["identity"]["truncation_psi"] == 0.5


@pytest.mark.parametrize(("override", "message"), [
    ("n_per_class=0", r"n_per_class=0 must be an integer >= 1 \(tiles written per class"),
    ("n_per_class=-3", r"n_per_class=-3 must be an integer >= 1"),
    ("batch_size=0", r"batch_size=0 must be an integer >= 1"),
    ("noise_mode=fresh", r"noise_mode='fresh' must be one of \('random', 'const', 'none'\)"),
    ("upscale.final_size=0", r"upscale.final_size=0 must be an integer >= 1"),
    ("upscale.kernel=nearest", r"upscale.kernel='nearest' must be one of \('bicubic', 'bilinear', 'area'\)"),
    ("+upscale.factor=4", r"upscale has no key\(s\) \['factor'\]"),
    ("truncation_psi=inf", r"truncation_psi=inf must be a finite number"),
])
def test_bad_settings_are_refused_before_writing(stylegan_ckpt, tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        run_generate(tmp_path, stylegan_ckpt, tmp_path / "out", override)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.num_classes=3", "data.class_names=[A,B,C]"],
     r"stylegan2.ckpt': the model was trained with num_classes=9 but the data config has num_classes=3"),
    (["data.class_names=[A,B,C,D,E,F,G,H,I]"], r"the model was trained with class_names=\['ADI'.*data config has class_names=\['A'"),
])
def test_a_data_config_of_other_labels_is_refused(stylegan_ckpt, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_generate(tmp_path, stylegan_ckpt, tmp_path / "out", "data=synthetic_histology", *overrides)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_that_is_not_a_stylegan2_is_refused_by_name(srgan_ckpt, stylegan_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"srgan.ckpt' is not an advmed StyleGAN2Module checkpoint: it holds a SRGANModule"):
        run_generate(tmp_path, srgan_ckpt, tmp_path / "out")
    with pytest.raises(ValueError, match=r"stylegan2.ckpt' is not an advmed SRGANModule checkpoint"):
        run_generate(tmp_path, stylegan_ckpt, tmp_path / "out", f"upscale.ckpt_path={stylegan_ckpt}")
    with pytest.raises(FileNotFoundError, match=r"nope.ckpt' does not exist"):
        run_generate(tmp_path, tmp_path / "nope.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_srgan_of_other_channels_is_refused(stylegan_ckpt, tmp_path):
    gray = save_checkpoint(srgan_module(in_channels=1), tmp_path / "gray_srgan.ckpt")
    with pytest.raises(ValueError, match=r"gray_srgan.ckpt' upscales 1-channel images but the StyleGAN2 generator makes "
                                         r"3-channel tiles"):
        run_generate(tmp_path, stylegan_ckpt, tmp_path / "out", f"upscale.ckpt_path={gray}")
    assert not (tmp_path / "out").exists()


def test_config_needs_a_checkpoint_and_an_output_dir(tmp_path):
    from advmed.generate import generate

    with pytest.raises(ValueError, match=r"required config value\(s\) not set: ckpt_path, output_dir"):
        generate(compose_config("generate", [], tmp_path))


def test_the_stylegan2_experiments_compose_with_generate(tmp_path):
    cfg = compose_config("generate", ["experiment=lockshin/stylegan2", "ckpt_path=c.ckpt", "output_dir=o"], tmp_path)
    assert cfg.data.class_names == list(CLASS_NAMES) and cfg.n_per_class == 2000 and cfg.upscale.final_size is None


def test_command_line(stylegan_ckpt, tmp_path):
    out = tmp_path / "cli"
    args = [f"ckpt_path={stylegan_ckpt}", f"output_dir={out}", "n_per_class=2", "batch_size=4", "progress_every_s=0"]
    proc = run_module("advmed.generate", args, cwd=tmp_path)
    assert f"18 generated tiles (2 per class, 16 px) written to {out}" in proc.stdout
    (log,) = (tmp_path / "outputs" / "generate" / "runs").glob("*/generate.log")
    assert "18/18 items (100.0 %)" in log.read_text() and "\r" not in log.read_text()
    assert len(read_manifest(out)) == 18 and len(list(out.rglob("*.png"))) == 18


def test_synthetic_histology_default_module_reads_an_upscaled_folder_at_its_own_size(stylegan_ckpt, srgan_ckpt, tmp_path):
    out = tmp_path / "sr"
    run_generate(tmp_path, stylegan_ckpt, out, f"upscale.ckpt_path={srgan_ckpt}")
    dm = SyntheticHistologyDataModule(image_size=16, train_per_class=1, val_per_class=1, test_per_class=1,
                                      extra_train_roots=[str(out)])
    dm.setup("fit")
    x, y = dm.train_set.datasets[1][0]
    assert x.shape == (3, 16, 16) and int(y) == 0  # 32 px tiles resized by the DataModule on read
