"""Write a synthetic histology dataset from a trained class-conditional StyleGAN2 (Lockshin et al.
2022, sec. 3.1), optionally upscaled by a trained SRGAN x2 and resized (sec. 3.2: 128 -> 256 -> 224),
in the NCT-CRC-HE layout ``<output_dir>/<CLASS>/gen_<CLASS>_<index>.png`` that the histology
DataModules read back as extra training data.

    python -m advmed.generate ckpt_path=<stylegan2 run>/checkpoints/best.ckpt n_per_class=2000 output_dir=data/gen
    python -m advmed.generate ckpt_path=... n_per_class=2000 output_dir=data/gen_224 \\
        upscale.ckpt_path=<srgan run>/checkpoints/best.ckpt upscale.final_size=224
    python -m advmed.train data.extra_train_roots=[data/gen_224]       # real + synthetic training set

The paper generates 18,000 tiles (2,000 per class) and adds them to its 18,000 real training tiles.
Files go through the same writer as ``advmed.augment`` (:class:`~advmed.data.writers.DatasetWriter`):
atomic, resumable (rerunning the same command completes a killed run with identical bytes), a
folder holding another run refused unless ``overwrite=true``. ``run.json`` records the provenance
(generator and upscaler checkpoint sha256, seed, truncation, noise mode, final size, kernel) and
``manifest.csv`` the items (file, label, class).

Every batch's latents come from a CPU generator seeded from ``(seed, batch index)``, so a tile
depends only on the seed, the batch size and its place in the class-by-class order, never on what
ran before it (on a GPU the synthesis itself may still round differently from a CPU).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import Dataset

from advmed.augment import pick_device
from advmed.data.copy_layouts import ClassFolderLayout
from advmed.data.writers import DatasetWriter, code_version
from advmed.models.checkpoint import load_module
from advmed.models.srgan import load_srgan_generator, upscale_images
from advmed.models.stylegan2 import StyleGAN2Module
from advmed.nets.srgan_pairs import KERNELS, resize
from advmed.nets.stylegan2_layers import NOISE_MODES
from advmed.utils.files import file_sha256
from advmed.utils.job_status import record_job_status
from advmed.utils.library_noise import quiet_library_noise
from advmed.utils.resolvers import register_resolvers
from advmed.utils.run import check_required, plain, seed_run

register_resolvers()
quiet_library_noise()

log = logging.getLogger(__name__)

UPSCALE_KEYS = ("ckpt_path", "final_size", "kernel")


class LabelOnlyDataset(Dataset):
    """``n_per_class`` items of every class, class by class: ``(zeros of shape, label)``.

    The writer feeds ``(x, y)`` batches to its producer and checks that the producer returns images
    shaped like ``x``; here ``x`` carries only that output shape (the generator ignores it) and
    ``y`` the classes to generate. ``targets`` and ``names`` (``gen_<CLASS>_<index:06d>``) give
    the writer its class folders and file names.
    """

    def __init__(self, class_names: Sequence[str], n_per_class: int, shape: tuple[int, int, int]) -> None:
        self.class_names = [str(c) for c in class_names]
        self.shape = tuple(shape)
        self.targets = torch.arange(len(self.class_names)).repeat_interleave(int(n_per_class))
        self.names = [f"gen_{name}_{i:06d}" for name in self.class_names for i in range(int(n_per_class))]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return torch.zeros(self.shape), self.targets[index]


# --------------------------------------------------------------------------- settings


def check_count(name: str, value: Any, low: int, hint: str) -> int:
    """``value`` as an int >= ``low``, or a ValueError naming ``name`` and ``hint``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low} ({hint})")
    return value


def upscale_settings(upscale: Any) -> dict[str, Any]:
    """``upscale.*`` (``ckpt_path``, ``final_size``, ``kernel``) checked, with defaults for missing keys."""
    given = dict(plain(upscale) or {})
    unknown = sorted(set(given) - set(UPSCALE_KEYS))
    if unknown:
        raise ValueError(f"upscale has no key(s) {unknown}: the keys are {list(UPSCALE_KEYS)}")
    cfg = {"ckpt_path": None, "final_size": None, "kernel": "bicubic", **given}
    if cfg["final_size"] is not None:
        check_count("upscale.final_size", cfg["final_size"], 1, "the side of the written tiles in px, e.g. 224, "
                    "or null to keep the generated / upscaled size")
    if cfg["kernel"] not in KERNELS:
        raise ValueError(f"upscale.kernel={cfg['kernel']!r} must be one of {KERNELS}")
    return cfg


def truncation(value: Any, module: StyleGAN2Module) -> float:
    """The truncation psi the run uses: ``value``, or the checkpoint's ``truncation_psi`` when null."""
    psi = module.hparams.truncation_psi if value is None else value
    if isinstance(psi, bool) or not isinstance(psi, int | float) or not math.isfinite(psi):
        raise ValueError(f"truncation_psi={psi!r} must be a finite number (1: no truncation, 0.7 is usual) "
                         "or null for the checkpoint's")
    return float(psi)


def data_classes(data: Any) -> SimpleNamespace | None:
    """The classes and channels a data config states (None without a data config), in the shape
    :meth:`~advmed.models.base.AdvmedModule.check_datamodule` compares. Read from the config, not
    from an instantiated DataModule: checking the labels needs no dataset on disk. The tile size is
    left out on purpose: the DataModules resize extra training tiles to their own size."""
    data = plain(data)
    if not data:
        return None
    return SimpleNamespace(**{key: data.get(key) for key in ("num_classes", "class_names", "in_channels")})


# --------------------------------------------------------------------------- the upscaler


@dataclass
class Upscaler:
    """The SRGAN step and the final resize of generated tiles (Lockshin et al. 2022, sec. 3.2:
    128 -> 256 by SRGAN, then 256 -> 224). Call it on (N, C, R, R) tiles in [0, 1]."""

    network: nn.Module | None  # the SRGAN generator; None: no SRGAN step
    hparams: dict[str, Any]  # its checkpoint's hyper-parameters ({} without one)
    upscaled_size: int  # the side after the SRGAN step
    final_size: int  # the side written
    kernel: str

    @property
    def resizes(self) -> bool:
        return self.final_size != self.upscaled_size

    def __call__(self, tiles: Tensor) -> Tensor:
        if self.network is not None:
            tiles = upscale_images(self.network, tiles)
        return resize(tiles, self.final_size, self.kernel) if self.resizes else tiles


def load_upscaler(settings: dict[str, Any], in_channels: int, image_size: int, device: torch.device) -> Upscaler:
    """The :class:`Upscaler` of ``upscale.*`` for a generator of ``in_channels``-channel tiles of
    side ``image_size``: the SRGAN generator of ``ckpt_path`` (when set; its channels must match),
    then a resize to ``final_size`` with ``kernel`` (when set and different). Without an SRGAN
    checkpoint, ``final_size`` resizes the generated tiles directly (the interpolation baseline the
    paper compares SRGAN against)."""
    network, hparams, scale = None, {}, 1
    if settings["ckpt_path"] is not None:
        path = Path(settings["ckpt_path"]).expanduser()
        network, hparams = load_srgan_generator(path)
        theirs = int(hparams.get("in_channels", 3))
        if theirs != in_channels:
            raise ValueError(
                f"upscale.ckpt_path '{path}' upscales {theirs}-channel images but the StyleGAN2 generator makes "
                f"{in_channels}-channel tiles: pass an SRGAN trained on data of the same channels "
                "(or upscale.ckpt_path=null)"
            )
        scale = int(hparams.get("scale", 2))
        lr_size = hparams.get("lr_size")
        if lr_size is not None and int(lr_size) != image_size:
            log.warning("the SRGAN of %s was trained on %s px inputs but the generator makes %d px tiles; "
                        "SRResNet is fully convolutional, so it runs, but out of its training distribution",
                        path, lr_size, image_size)
        network = network.to(device)
    upscaled = image_size * scale
    final = upscaled if settings["final_size"] is None else int(settings["final_size"])
    return Upscaler(network, hparams, upscaled, final, str(settings["kernel"]))


# --------------------------------------------------------------------------- the run


def generate(cfg: DictConfig) -> tuple[int, Path]:
    """Write ``cfg.n_per_class`` generated tiles of every class of the StyleGAN2 checkpoint
    ``cfg.ckpt_path`` to ``cfg.output_dir``; return ``(number of tiles, output folder)``."""
    check_required(cfg)
    n_per_class = check_count("n_per_class", cfg.n_per_class, 1, "tiles written per class; the paper: 2000")
    out = Path(cfg.output_dir).expanduser()
    seed = check_count("seed", cfg.seed, 0, "the seed of the latents")
    batch_size = check_count("batch_size", cfg.batch_size, 1, "tiles generated together")
    noise_mode = str(cfg.noise_mode)
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode={noise_mode!r} must be one of {NOISE_MODES} (const: the generator's stored "
                         "noise, as StyleGAN2's generate script)")
    upscale_cfg = upscale_settings(cfg.get("upscale"))
    device = pick_device(str(cfg.device))
    ckpt_path = Path(cfg.ckpt_path).expanduser()
    module = load_module(ckpt_path, StyleGAN2Module, datamodule=data_classes(cfg.get("data")), map_location=device)
    psi = truncation(cfg.get("truncation_psi"), module)
    h = module.hparams
    upscale = load_upscaler(upscale_cfg, int(h.in_channels), int(h.image_size), device)
    size = upscale.final_size
    if device.type == "cuda":  # reproducible bytes for a resumed run (as far as CUDA allows)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    seed_run(cfg)

    sr_path = None if upscale_cfg["ckpt_path"] is None else Path(upscale_cfg["ckpt_path"]).expanduser()
    identity = {
        "checkpoint_sha256": file_sha256(ckpt_path),
        "n_per_class": n_per_class,
        "truncation_psi": psi,
        "noise_mode": noise_mode,
        "seed": seed,
        "batch_size": batch_size,
        "upscale": {
            "checkpoint_sha256": None if sr_path is None else file_sha256(sr_path),
            "final_size": size,
            "kernel": upscale.kernel if upscale.resizes else None,  # no resize: the kernel changes no byte
        },
    }
    provenance = {
        "task": "advmed.generate",
        "checkpoint": str(ckpt_path.resolve()),
        "module": type(module).__name__,
        "class_names": list(h.class_names),
        "generator_image_size": int(h.image_size),
        "upscaler_checkpoint": None if sr_path is None else str(sr_path.resolve()),
        "upscaler_hparams": {k: upscale.hparams.get(k) for k in ("scale", "lr_size", "hr_size", "num_blocks", "channels")}
        if sr_path else None,
        "data_config": plain(cfg.get("data")),
        "device": str(device),
        "command": " ".join(sys.argv),
        **code_version(),
    }
    writer = DatasetWriter(
        out, ClassFolderLayout(h.class_names), identity, provenance,
        overwrite=bool(cfg.overwrite), progress_every_s=float(cfg.progress_every_s),
    )
    dataset = LabelOnlyDataset(h.class_names, n_per_class, (int(h.in_channels), size, size))

    def produce(x: Tensor, y: Tensor) -> Tensor:
        # The writer has seeded the global RNG for this batch; one draw from it seeds a CPU
        # generator for the latents (and random noise), the same on any device.
        latents = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        tiles = module.sample(y.to(device), truncation_psi=psi, generator=latents, noise_mode=noise_mode)
        return upscale(tiles).cpu()

    n = writer.write(dataset, produce, names=dataset.names, batch_size=batch_size, seed=seed)
    print(f"{n} generated tiles ({n_per_class} per class, {size} px) written to {out} "
          f"(add them to training with data.extra_train_roots=[{out}])")
    return n, out


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
@record_job_status
def main(cfg: DictConfig) -> None:
    generate(cfg)


if __name__ == "__main__":
    main()
