"""Chen et al. 2019: a VAE-GAN style generator that deforms and re-shades CT slices so that a frozen
U-Net's segmentation breaks by an amount set by ``xi``, trained on the GAN base.

    python -m advmed.train experiment=chen/deformation model.unet_ckpt=<unet run>/checkpoints/best.ckpt model.xi=2.0

The networks are in :mod:`advmed.nets.deformation`, the losses in :mod:`advmed.losses`; a trained
attacker is applied to any segmentation checkpoint by :class:`advmed.attacks.DeformationAttack`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from advmed.losses import DeformationAttackLoss, WassersteinLoss, masked_cross_entropy
from advmed.metrics.perceptibility import Perceptibility
from advmed.metrics.segmentation import SegmentationScores
from advmed.models.base import build_untrained_target
from advmed.models.checkpoint import load_module
from advmed.models.gan import GANModule, LossTerms
from advmed.nets.deformation import AttackFields, Critic, DeformationGenerator
from advmed.utils.run import plain

CRITIC_CONSTRAINTS = ("gradient_penalty", "weight_clipping")
# The attacked images of the test step: the attacker's whole output and, for a D+V attacker, each field alone.
VARIANTS = {"dv": ("adv", "d_only", "v_only"), "d": ("adv",), "v": ("adv",)}
# Prefix of each variant's test metrics (test/adv_dice_liver, test/d_only_dice_liver, ...).
PREFIX = {"clean": "", "adv": "adv_", "d_only": "d_only_", "v_only": "v_only_"}


def attacked_images(x: Tensor, fields: AttackFields, variant: str) -> Tensor:
    """``I_DV`` (``adv``), ``I_D = warp(I0, D)`` (``d_only``) or ``I_V = I0 + V`` (``v_only``), in [0, 1]."""
    if variant == "adv":
        return fields.x_adv
    if variant == "d_only":
        return fields.x_warped.clamp(0.0, 1.0)
    if variant == "v_only":
        return (x + fields.intensity).clamp(0.0, 1.0)
    raise ValueError(f"variant {variant!r} must be one of adv, d_only, v_only")


class DeformationAttackerModule(GANModule):
    """Trains the deformation + intensity attacker of Chen et al. 2019 against a frozen U-Net.

    Generator loss (paper eq. 6): ``L_adv^gen + (xi - f_xent^M(S0, S_DV))^2 + lambda_D ||D||^2 +
    lambda_V ||V||^2`` (eqs. 2-5, :class:`~advmed.losses.DeformationAttackLoss`), critic loss
    ``L_adv^disc`` (eq. 3) with the WGAN-GP gradient penalty or the original weight clipping. The
    paper adds no KL term to the latents ("different from a VAE", sec. 3.1), nor do we.

    Logged: ``train/g_adv``, ``train/g_xi``, ``train/g_deformation``, ``train/g_intensity``,
    ``train/d_wasserstein`` (and ``train/d_gradient_penalty``), ``train/xent`` (eq. 5, batch mean);
    ``val/xent``, ``val/p`` (eq. 7) and ``val/adv_dice`` (latents sampled with fixed noise, or their
    means when ``test_sample`` is false); in the test, per organ
    the U-Net's Dice on ``I0`` (``test/dice_<organ>``), on the attacker's output
    (``test/adv_dice_<organ>``) and, for a D+V attacker, on ``I_D`` and ``I_V`` alone
    (``test/d_only_dice_<organ>``, ``test/v_only_dice_<organ>``), the perceptibility of each
    (``test/p``, ``test/d_only_p``, ...), the masked cross-entropy that xi asks for (``test/xent``,
    eq. 5, mean over slices), the drop ``test/dice_drop_<organ>`` and the paper's success
    criterion ``test/success_<organ>`` (1 when Dice fell by at least ``success_drop`` of its clean
    value, paper sec. 4) with ``test/success_rate`` the fraction of organs attacked successfully.

    Args:
        unet_ckpt: the :class:`~advmed.models.segmentation.SegmentationModule` checkpoint under attack;
            frozen, and checked against ``num_classes`` / ``in_channels`` / ``class_names``.
        untrained_target: SegmentationModule settings (e.g. ``{base_width: 8, depth: 2}``; the
            data-derived ones come from this module's) of a freshly initialised U-Net to attack when
            ``unet_ckpt`` is unset. Only ``debug=tiny`` sets it (a smoke run checks the pipeline, not
            the figure); None: the checkpoint is required.
        num_classes, in_channels, class_names, image_size: of the data (checked; ``image_size`` is
            what :class:`~advmed.attacks.DeformationAttack` later demands).
        components: ``dv`` (the paper), ``d`` (deformation only) or ``v`` (intensity only).
        xi, lambda_D, lambda_V: eq. 4's damage target and eq. 2's field weights (paper: 0.1, 0.01).
        base_width, depth, latent_channels: :class:`~advmed.nets.deformation.DeformationGenerator`.
        critic_width, critic_depth: :class:`~advmed.nets.deformation.Critic`.
        critic_constraint: ``gradient_penalty`` (weight ``gp_weight``) or ``weight_clipping`` (each
            critic weight clamped to ``[-clip_value, clip_value]`` after every critic step).
        test_sample: sample the latents in the test (the paper's attacks) instead of their means.
        success_drop: relative Dice drop that counts as a successful attack on an organ (paper: 0.3).
        generator_optimizer, critic_optimizer, n_critic, gradient_clip_val, accumulate_grad_batches, ema_decay, ema_rampup:
            the GAN base's (:class:`~advmed.models.gan.GANModule`).
        train_attack, test_attack: accepted from the entry point and unused (the attack is the generator).
    """

    monitor = None  # a GAN has no validation metric that picks its best epoch: the last one is kept

    def __init__(
        self,
        unet_ckpt: str | None = None,
        num_classes: int = 5,
        in_channels: int = 1,
        class_names: list[str] | None = None,
        image_size: int | None = None,
        components: str = "dv",
        xi: float = 2.0,
        lambda_D: float = 0.1,  # noqa: N803 - the paper's symbols, as in the config
        lambda_V: float = 0.01,  # noqa: N803
        base_width: int = 16,
        depth: int = 3,
        latent_channels: int = 8,
        critic_width: int = 16,
        critic_depth: int = 4,
        critic_constraint: str = "gradient_penalty",
        gp_weight: float = 10.0,
        clip_value: float = 0.01,
        test_sample: bool = True,
        success_drop: float = 0.3,
        generator_optimizer: dict[str, Any] | None = None,
        critic_optimizer: dict[str, Any] | None = None,
        n_critic: int = 1,
        gradient_clip_val: float | None = None,
        accumulate_grad_batches: int = 1,
        ema_decay: float | None = None,
        ema_rampup: float | None = None,
        untrained_target: dict[str, Any] | None = None,
        train_attack=None,
        test_attack=None,
    ) -> None:
        super().__init__()
        if critic_constraint not in CRITIC_CONSTRAINTS:
            raise ValueError(f"model.critic_constraint={critic_constraint!r} must be one of {CRITIC_CONSTRAINTS}")
        if critic_constraint == "weight_clipping" and not clip_value > 0:
            raise ValueError(f"model.clip_value={clip_value} must be > 0 for weight clipping")
        if not 0.0 < success_drop < 1.0:
            raise ValueError(f"model.success_drop={success_drop} must be in (0, 1) (the paper's: 0.3)")
        class_names = ["background", *(f"class_{i}" for i in range(1, num_classes))] if class_names is None else plain(class_names)
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}")
        untrained_target = plain(untrained_target)
        self.save_hyperparameters(ignore=["train_attack", "test_attack"])
        self.hparams.class_names = class_names
        self.attack_loss = DeformationAttackLoss(xi, lambda_D, lambda_V)
        self.wgan = WassersteinLoss(gp_weight if critic_constraint == "gradient_penalty" else 0.0)
        self.generator = DeformationGenerator(in_channels, base_width, depth, latent_channels, components)
        self.critic = Critic(in_channels, critic_width, critic_depth)
        self.freeze_target("unet", self._load_unet(unet_ckpt))
        self.init_gan()
        self.val_p = Perceptibility()
        self.val_scores = SegmentationScores(class_names)
        self.test_scores = nn.ModuleDict({v: SegmentationScores(class_names) for v in ("clean", *VARIANTS[components])})
        self.test_p = nn.ModuleDict({v: Perceptibility() for v in VARIANTS[components]})
        self.test_xent = MeanMetric()

    def _load_unet(self, path: str | None) -> nn.Module:
        from advmed.models.segmentation import SegmentationModule

        h = self.hparams
        if path is None and h.untrained_target is not None:
            data = {"num_classes": h.num_classes, "in_channels": h.in_channels, "class_names": list(h.class_names),
                    "image_size": h.image_size}
            return build_untrained_target(SegmentationModule, {**data, **h.untrained_target}, "model.unet_ckpt")
        if path is None:
            raise ValueError("model.unet_ckpt is not set: pass the checkpoints/best.ckpt of the U-Net to attack "
                             "(train one with python -m advmed.train experiment=chen/unet)")
        unet = load_module(path, SegmentationModule)
        theirs = {"num_classes": unet.hparams.num_classes, "in_channels": unet.hparams.in_channels,
                  "class_names": list(unet.hparams.class_names)}
        ours = {"num_classes": h.num_classes, "in_channels": h.in_channels, "class_names": list(h.class_names)}
        for name in ours:
            if ours[name] != theirs[name]:
                raise ValueError(
                    f"the U-Net checkpoint '{Path(path).expanduser()}' was trained with {name}={theirs[name]} but the "
                    f"data has {name}={ours[name]}: attack a U-Net trained on this data "
                    "(python -m advmed.train experiment=chen/unet), or choose its data with data=..."
                )
        return unet

    # ------------------------------------------------------------------ training

    def forward(self, x: Tensor, sample: bool = True) -> AttackFields:
        return self.generator(x, sample=sample)

    def generator_loss(self, batch) -> LossTerms:
        x, _ = batch
        fields = self.generator(x)
        with torch.no_grad():
            clean_probs = self.unet(x).softmax(1)
        terms, xent = self.attack_loss(clean_probs, self.unet(fields.x_adv), fields.deformation, fields.intensity)
        self.log("train/xent", xent, prog_bar=True)
        return {"adv": self.wgan.generator(self.critic(x), self.critic(fields.x_adv)), **terms}

    def critic_loss(self, batch) -> LossTerms:
        x, _ = batch
        with torch.no_grad():
            fake = self.generator(x).x_adv
        return self.wgan.critic(self.critic, x, fake)

    def after_critic_step(self) -> None:
        if self.hparams.critic_constraint == "weight_clipping":  # Arjovsky et al. 2017, Algorithm 1
            with torch.no_grad():
                for p in self.critic.parameters():
                    p.clamp_(-self.hparams.clip_value, self.hparams.clip_value)

    # ------------------------------------------------------------------ validation and test

    def on_validation_epoch_start(self) -> None:
        # The same latent noise every epoch, from a generator of its own: epochs compare like for like
        # and validation leaves the training RNG stream alone.
        self._val_rng = torch.Generator(device=self.device).manual_seed(0)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        fields = self.generator(x, sample=self.hparams.test_sample, generator=self._val_rng)
        adv_logits = self.unet(fields.x_adv)
        self.log("val/xent", masked_cross_entropy(self.unet(x).softmax(1), adv_logits).mean(), prog_bar=True)
        self.val_p.update(x, fields.x_adv)
        self.val_scores.update(adv_logits.argmax(1), y)

    def on_validation_epoch_end(self) -> None:
        self.log("val/p", self.val_p.compute())
        self.log("val/adv_dice", self.val_scores.compute()["dice"], prog_bar=True)
        self.val_p.reset()
        self.val_scores.reset()

    def test_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        fields = self.generator(x, sample=self.hparams.test_sample)
        clean_logits = self.unet(x)
        pred = clean_logits.argmax(1)
        self.test_scores["clean"].update(pred, y)
        for variant in self.test_p:
            attacked = attacked_images(x, fields, variant)
            self.test_scores[variant].update(self.unet(attacked).argmax(1), y)
            self.test_p[variant].update(x, attacked)
        adv_logits = self.unet(fields.x_adv)
        self.test_xent.update(masked_cross_entropy(clean_logits.softmax(1), adv_logits))
        adv_pred = adv_logits.argmax(1)
        return {"x": x, "y": y, "pred": pred, "x_adv": fields.x_adv, "adv_pred": adv_pred,
                "deformation": fields.deformation, "intensity": fields.intensity}

    def on_test_epoch_end(self) -> None:
        scores = {variant: metric.compute() for variant, metric in self.test_scores.items()}
        for variant, values in scores.items():
            for name, value in values.items():
                self.log(f"test/{PREFIX[variant]}{name}", value)
        for variant, metric in self.test_p.items():
            self.log(f"test/{'' if variant == 'adv' else PREFIX[variant]}p", metric.compute())
        self.log("test/xent", self.test_xent.compute())
        organs = self.hparams.class_names[1:]
        successes = []
        for organ in organs:
            clean, adv = scores["clean"][f"dice_{organ}"], scores["adv"][f"dice_{organ}"]
            success = (adv <= (1.0 - self.hparams.success_drop) * clean).float()
            self.log(f"test/dice_drop_{organ}", clean - adv)
            self.log(f"test/success_{organ}", success)
            if not clean.isnan():  # an organ absent from the split is neither a success nor a failure
                successes.append(success)
        if successes:
            self.log("test/success_rate", torch.stack(successes).mean())
        for metric in (*self.test_scores.values(), *self.test_p.values(), self.test_xent):
            metric.reset()
