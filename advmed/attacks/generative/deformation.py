"""A trained deformation + intensity attacker (Chen et al. 2019) as an attack: ``attack=deformation
attack.ckpt_path=<attacker run>/checkpoints/best.ckpt`` in any ``advmed.evaluate`` or
``advmed.augment`` run, against any segmentation checkpoint (the U-Net it was trained on, or another)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from advmed.attacks.core.base import Attack
from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.result import AttackResult
from advmed.nets.deformation import COMPONENTS, DeformationGenerator
from advmed.utils.checkpoint_file import load_generator

ATTACKER_CLASS = "advmed.models.deformation.DeformationAttackerModule"
GENERATOR_KEYS = ("in_channels", "base_width", "depth", "latent_channels", "components")


def load_deformation_generator(path: str | Path) -> tuple[DeformationGenerator, dict]:
    """The generator (its EMA copy when one was kept) of a ``DeformationAttackerModule`` checkpoint,
    in eval mode, and the checkpoint's hyper-parameters. The attacked U-Net is not needed."""
    return load_generator(path, ATTACKER_CLASS,
                          lambda hparams: DeformationGenerator(**{k: hparams[k] for k in GENERATOR_KEYS if k in hparams}),
                          "python -m advmed.train experiment=chen/deformation")


class DeformationAttack(Attack):
    """Apply a trained Chen et al. 2019 attacker: ``x_adv = warp(x, D) + V`` (clipped to [0, 1])
    with ``D``, ``V`` decoded from latents sampled for each image (or their means).

    A generative attack: its budget is what the attacker learnt (``xi`` and the realism critic),
    not an eps-ball, so ``norm`` is ``"generative"`` and ``eps`` is 1. The model passed at call
    time is not queried (a transfer attack from the U-Net the attacker was trained on); the
    report's L-inf / L2 and the ``p`` stat (eq. 7, per image) measure what it did.

    Args:
        ckpt_path: ``checkpoints/best.ckpt`` of a ``DeformationAttackerModule`` run.
        fields: apply ``dv`` (both), ``d`` (the deformation alone, ``I_D``) or ``v`` (the intensity
            alone, ``I_V``) of the attacker; None: everything it learnt.
        sample: sample the latents (several attacks per image, the paper's) or decode their means.
        seed: seeds the latent samples with a generator of the attack's own, kept for its life;
            None (the default): torch's global RNG, which the entry points seed (``advmed.augment``
            per batch, so that a resumed copy matches an uninterrupted one).

    Stats per image: ``p`` (mean |x_adv - x|) and ``displacement`` (mean |D| in pixels).
    """

    norm = "generative"

    def __init__(self, ckpt_path: str, fields: str | None = None, sample: bool = True, seed: int | None = None) -> None:
        super().__init__(1.0)
        self.ckpt_path = str(ckpt_path)
        self._generator, hparams = load_deformation_generator(ckpt_path)
        self.image_size = hparams.get("image_size")
        trained = self._generator.components
        if fields is not None and fields not in COMPONENTS:
            raise ValueError(f"attack.fields={fields!r} must be one of {COMPONENTS} or null (all the attacker learnt)")
        if fields is not None and not set(fields) <= set(trained):
            raise ValueError(f"attack.fields={fields!r}: the attacker '{self.ckpt_path}' was trained with "
                             f"components={trained!r} and has no {'V' if 'v' in fields else 'D'} field")
        self.fields = fields or trained
        self.sample = bool(sample)
        self.seed = seed
        self._rng: torch.Generator | None = None

    def _check_images(self, x: Tensor) -> None:
        size, channels = self.image_size, self._generator.encoder[0][0].in_channels
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            raise ValueError(
                f"the deformation attacker '{self.ckpt_path}' was trained on {size}x{size} images but got "
                f"{x.shape[-2]}x{x.shape[-1]}: evaluate on data.image_size={size}, or train an attacker at this size"
            )
        if x.shape[1] != channels:
            raise ValueError(f"the deformation attacker '{self.ckpt_path}' takes {channels}-channel images, got {x.shape[1]}")

    def _perturb(self, batch: AttackBatch) -> AttackResult:
        x = batch.x
        self._check_images(x)
        generator = self._generator.to(device=x.device)
        if self.seed is not None and (self._rng is None or self._rng.device != x.device):
            self._rng = torch.Generator(device=x.device).manual_seed(self.seed)
        with torch.no_grad():
            out = generator(x.float(), sample=self.sample, generator=self._rng)
            if self.fields == "d" and generator.components == "dv":
                x_adv = out.x_warped
            elif self.fields == "v" and generator.components == "dv":
                x_adv = x.float() + out.intensity
            else:
                x_adv = out.x_adv
            x_adv = x_adv.clamp(0.0, 1.0).to(x.dtype)
        stats = {
            "p": (x_adv - x).abs().flatten(1).mean(1),
            "displacement": (out.deformation.norm(dim=1).flatten(1).mean(1) if "d" in self.fields
                             else x.new_zeros(x.shape[0])),
        }
        return AttackResult(x_adv, stats=stats)

    def __repr__(self) -> str:
        return f"DeformationAttack(ckpt_path={self.ckpt_path!r}, fields={self.fields!r}, sample={self.sample}, seed={self.seed})"
