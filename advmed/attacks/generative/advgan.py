"""A trained AdvGAN generator (Xiao et al. 2018; Lockshin et al. 2022 sec. 3.3) as an attack:
``attack=advgan attack.ckpt_path=<AdvGAN run>/checkpoints/best.ckpt`` in any ``advmed.evaluate`` or
``advmed.augment`` run, or ``attack@train_attack=advgan`` for adversarial training, against any
classifier (the one it was trained on, or another)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from advmed.attacks.core.base import Attack
from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.result import AttackResult
from advmed.nets.advgan import AdvGANGenerator, apply_perturbation
from advmed.utils.checkpoint_file import load_generator

ADVGAN_CLASS = "advmed.models.advgan.AdvGANModule"
GENERATOR_KEYS = ("in_channels", "base_width", "depth", "residual_blocks", "max_perturbation", "upsampling")
TRAIN_COMMAND = "python -m advmed.train experiment=lockshin/advgan"


def mean_abs_noise(x: Tensor, x_adv: Tensor) -> Tensor:
    """Per image (N,): the mean over pixels and channels of ``|x_adv - x|``, the noise actually added
    (after clamping; the quantity Chen et al.'s eq. 7 calls perceptibility, the deformation attack's ``p``)."""
    return (x_adv - x).abs().flatten(1).mean(1)


def load_advgan_generator(path: str | Path) -> tuple[AdvGANGenerator, dict]:
    """The generator (its EMA copy when one was kept) of an ``AdvGANModule`` checkpoint, in eval mode,
    and the checkpoint's hyper-parameters. The attacked classifier is not needed."""
    return load_generator(path, ADVGAN_CLASS,
                          lambda hparams: AdvGANGenerator(**{k: hparams[k] for k in GENERATOR_KEYS if k in hparams}),
                          TRAIN_COMMAND)


class AdvGANAttack(Attack):
    """Apply a trained AdvGAN generator: ``x_adv = clamp(x + G(x), 0, 1)``, one forward pass.

    A generative attack: its budget is what the generator learnt (the threshold loss, eq. 6, and the
    discriminator), not an eps-ball, so ``norm`` is ``"generative"`` and ``eps`` is 1. The model passed
    at call time is not queried (a transfer attack from the classifier the generator was trained
    against); a generator trained targeted reports ``targeted`` and its ``target_class``, so that the
    success rate counts images moved to that class.

    Args:
        ckpt_path: ``checkpoints/best.ckpt`` of an ``AdvGANModule`` run.

    Stats per image: ``mean_abs_noise`` (mean of ``|x_adv - x|`` over pixels and channels); the
    callers measure L-inf and L2 (``test/linf``, ``test/l2``) for every attack.
    """

    norm = "generative"

    def __init__(self, ckpt_path: str) -> None:
        self.ckpt_path = str(ckpt_path)
        self._generator, hparams = load_advgan_generator(ckpt_path)
        targeted = bool(hparams.get("targeted", False))
        super().__init__(1.0, targeted=targeted, target_class=hparams.get("target_class") if targeted else None)
        self.image_size = hparams.get("image_size")

    def _check_images(self, x: Tensor) -> None:
        size, channels = self.image_size, self._generator.in_channels
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            raise ValueError(
                f"the AdvGAN generator '{self.ckpt_path}' was trained on {size}x{size} images but got "
                f"{x.shape[-2]}x{x.shape[-1]}: evaluate on data.image_size={size}, or train an AdvGAN at this size"
            )
        if x.shape[1] != channels:
            raise ValueError(f"the AdvGAN generator '{self.ckpt_path}' takes {channels}-channel images, got "
                             f"{x.shape[1]}: use data with in_channels={channels}, or train an AdvGAN on this data")

    def _perturb(self, batch: AttackBatch) -> AttackResult:
        x = batch.x
        self._check_images(x)
        generator = self._generator.to(device=x.device)
        with torch.no_grad():
            x_adv = apply_perturbation(x.float(), generator(x.float())).to(x.dtype)
        return AttackResult(x_adv, stats={"mean_abs_noise": mean_abs_noise(x, x_adv)})

    def __repr__(self) -> str:
        return f"AdvGANAttack(ckpt_path={self.ckpt_path!r})"
