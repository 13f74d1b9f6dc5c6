"""Lockshin et al. 2022, sec. 3.1: a class-conditional StyleGAN2 (Karras et al. 2020) that generates
histology tiles of each tissue class, trained on the GAN base.

    python -m advmed.train experiment=lockshin/stylegan2 data.root=<NCT-CRC-HE-100K> model.fid.weights_path=...
    python -m advmed.train experiment=lockshin/stylegan2_tiny model.fid.classifier_ckpt=<classifier run>/checkpoints/best.ckpt

The networks are in :mod:`advmed.nets.stylegan2`, the losses in :mod:`advmed.losses.stylegan2`, the
schedule (lazy regularisation, EMA) in :class:`~advmed.models.gan.GANModule`. FID over training and
per-class sample grids are callbacks (:mod:`advmed.callbacks.fid_history`,
:mod:`advmed.callbacks.class_samples`); the test step reports the FID of eq. 2 against the
configured split and, with a judge classifier, how often it recognises each generated tile's class.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from advmed.losses.stylegan2 import NonSaturatingLoss, PathLengthPenalty, R1Penalty
from advmed.metrics.fid import ClassConditionalFID, InceptionV3Features
from advmed.metrics.generator_fid import (
    ClassifierFeatures,
    add_generated_images,
    add_real_images,
    check_fid_settings,
    reference_loader,
    resize_to,
)
from advmed.models.base import build_untrained_target
from advmed.models.classifier import ClassifierModule
from advmed.models.fid_judge import load_judge
from advmed.models.gan import GANModule, LossTerms, lazy_reg_optimizer_kwargs
from advmed.nets.diff_augment import DiffAugment
from advmed.nets.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from advmed.utils.files import file_sha256
from advmed.utils.run import plain

# StyleGAN2 config F / StyleGAN2-ADA: Adam lr 0.0025, betas (0, 0.99), eps 1e-8, for both networks;
# the values before the lazy-regularisation rescaling, which configure_optimizers applies.
STYLEGAN2_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 0.0025, "betas": (0.0, 0.99), "eps": 1e-8}
# StyleGAN2-ADA's R1 rule of thumb 0.0002 * R^2 / batch at the paper's 128 px and batch 32: 0.1024.
DEFAULT_R1_GAMMA = 0.0002 * 128**2 / 32
# StyleGAN2-ADA's ema_kimg = batch * 10 / 32 = 10 at batch 32: a half-life of 10,000 images, i.e.
# beta = 0.5 ** (32 / 10000) = 0.99778 per generator step (ramped up with ema_rampup = 0.05).
DEFAULT_EMA_DECAY = 0.5 ** (32 / 10_000)
# What the FID features and the judge are called when model.untrained_judge stands in for fid.classifier_ckpt.
UNTRAINED_JUDGE = "an untrained classifier (model.untrained_judge, debug=tiny)"


def lazy_reg_optimizer(cfg: dict[str, Any] | None, interval: int | None, name: str) -> dict[str, Any]:
    """The ``_target_`` dict of model.<name> with lr (and Adam-style ``betas``) rescaled for a
    network regularised every ``interval`` steps (:func:`~advmed.models.gan.lazy_reg_optimizer_kwargs`);
    None: StyleGAN2's Adam. Keys set to null are dropped."""
    cfg = {k: v for k, v in (cfg or STYLEGAN2_OPTIMIZER).items() if v is not None}
    if not isinstance(cfg.get("lr"), int | float):
        raise ValueError(f"model.{name} needs an explicit lr (got {cfg.get('lr')!r}): lazy regularisation rescales it "
                         "by k / (k + 1); StyleGAN2 uses lr 0.0025")
    betas = cfg.get("betas", (1.0, 1.0))  # an optimiser without betas (SGD): only lr is rescaled
    rescaled = lazy_reg_optimizer_kwargs(float(cfg["lr"]), tuple(betas), interval)
    cfg["lr"] = rescaled["lr"]
    if "betas" in cfg:
        cfg["betas"] = list(rescaled["betas"])
    return cfg


class StyleGAN2Module(GANModule):
    """Class-conditional StyleGAN2 of Lockshin et al. 2022 (sec. 3.1; StyleGAN2 config F at 128 px).

    Generator loss: the non-saturating form of the paper's eq. 1, ``softplus(-D(G(z, c), c))``, with
    ``z ~ N(0, I)``, the labels ``c`` of the real batch (so generated class frequencies follow the
    data) and style mixing; critic loss: eq. 1 on the real batch and fakes of the same labels.
    Lazy R1 on the reals (``critic_reg_interval``) and path-length regularisation
    (``generator_reg_interval``, on ``N // pl_batch_shrink`` samples) run as the base's regulariser
    steps; the optimisers' lr and betas are rescaled by ``k / (k + 1)`` for them (StyleGAN2
    appendix B), so the config holds the unrescaled values. Both regularisers compute in float32 with
    autocast off, and the GAN loss takes float32 logits, so ``bf16-mixed`` stays numerically safe.

    Logged: ``train/d_real``, ``train/d_fake``, ``train/d_r1``, ``train/g_adversarial``,
    ``train/g_path_length``, ``train/pl_mean``; in the test, ``test/fid`` and ``test/fid_<class>``
    (eq. 2, generated images with the label counts of the reference split), the image counts
    ``test/fid_num_real`` / ``test/fid_num_generated``, and with ``fid.classifier_ckpt`` the judge's
    accuracy on generated tiles of known labels (``test/judge_acc``; chance is 1 / num_classes) and on
    the real test tiles (``test/judge_real_acc``). The validation loop does nothing: FID over
    training is :class:`~advmed.callbacks.fid_history.FidHistoryCallback`'s job.

    Args:
        num_classes, in_channels, class_names: of the data (checked against it).
        image_size: tile side, a power of two (the paper: 128; checked against the data).
        z_dim, w_dim, mapping_layers, channel_base, channel_max: the networks
            (:class:`~advmed.nets.stylegan2.StyleGAN2Generator`; config F: 512, 512, 8, 32768, 512).
        style_mixing_prob: probability of style mixing per batch (0.9).
        truncation_psi: truncation of :meth:`sample` toward the class's mean ``w`` (1: none).
        diff_augment: DiffAugment policy (Zhao et al. 2020; :class:`~advmed.nets.diff_augment.DiffAugment`)
            applied to every image the discriminator sees, reals and fakes, in both steps and in R1:
            ``color,translation,cutout`` for small training sets; None (the paper's): none.
        r1_gamma: R1 weight (StyleGAN2-ADA's ``0.0002 R^2 / batch``: 0.1024 at 128 px, batch 32).
        pl_weight, pl_decay, pl_batch_shrink: path-length regularisation (2, 0.01, 2).
        critic_reg_interval, generator_reg_interval: lazy regularisation intervals (16, 4); null: off.
        ema_decay, ema_rampup: the generator EMA that samples (ADA's ema_kimg 10 at batch 32, ramp-up 0.05).
        generator_optimizer, critic_optimizer: ``_target_`` dicts before the lazy rescaling; None:
            Adam lr 0.0025, betas (0, 0.99), eps 1e-8.
        n_critic, gradient_clip_val, accumulate_grad_batches: the GAN base's.
        fid: the FID / judge settings of :data:`~advmed.metrics.generator_fid.FID_DEFAULTS`
            (``features: inception | classifier``, ``classifier_ckpt``, ``reference_split``, ...).
        untrained_judge: ClassifierModule settings (e.g. ``{arch: resnet18}``; the data-derived ones
            come from this module's) of a freshly initialised judge that stands in for
            ``fid.classifier_ckpt`` when that is unset: its features give the FID of
            ``fid.features=classifier``. Only ``debug=tiny`` sets it (a smoke run checks the pipeline,
            not the figure; no Inception weights needed); None: as ``fid`` says.
        train_attack, test_attack: accepted from the entry point and unused.
    """

    monitor = None  # no validation metric picks a GAN's best epoch: the last one is kept

    def __init__(
        self,
        num_classes: int = 9,
        in_channels: int = 3,
        class_names: list[str] | None = None,
        image_size: int = 128,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        channel_base: int = 32768,
        channel_max: int = 512,
        style_mixing_prob: float = 0.9,
        truncation_psi: float = 1.0,
        diff_augment: str | None = None,
        r1_gamma: float = DEFAULT_R1_GAMMA,
        pl_weight: float = 2.0,
        pl_decay: float = 0.01,
        pl_batch_shrink: int = 2,
        critic_reg_interval: int | None = 16,
        generator_reg_interval: int | None = 4,
        ema_decay: float | None = DEFAULT_EMA_DECAY,
        ema_rampup: float | None = 0.05,
        generator_optimizer: dict[str, Any] | None = None,
        critic_optimizer: dict[str, Any] | None = None,
        n_critic: int = 1,
        gradient_clip_val: float | None = None,
        accumulate_grad_batches: int = 1,
        fid: dict[str, Any] | None = None,
        untrained_judge: dict[str, Any] | None = None,
        train_attack=None,
        test_attack=None,
    ) -> None:
        super().__init__()
        class_names = [f"class_{i}" for i in range(num_classes)] if class_names is None else list(plain(class_names))
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}")
        if not 0.0 <= style_mixing_prob <= 1.0:
            raise ValueError(f"model.style_mixing_prob={style_mixing_prob} must be in [0, 1] (0.9 in StyleGAN2, 0 disables it)")
        if not (isinstance(truncation_psi, int | float) and math.isfinite(truncation_psi)):
            raise ValueError(f"model.truncation_psi={truncation_psi} must be a finite number (1: no truncation; 0.7 is usual)")
        fid, untrained_judge = plain(fid) or {}, plain(untrained_judge)
        self.save_hyperparameters(ignore=["train_attack", "test_attack"])
        self.hparams.class_names = class_names
        # Without fid.classifier_ckpt, an untrained judge (debug=tiny) gives the classifier features.
        stand_in = untrained_judge is not None and not fid.get("classifier_ckpt")
        self.hparams.fid = check_fid_settings(fid, judge_given=stand_in)
        self.generator = StyleGAN2Generator(z_dim, w_dim, num_classes, image_size, in_channels, channel_base,
                                            channel_max, mapping_layers)
        self.critic = StyleGAN2Discriminator(num_classes, image_size, in_channels, channel_base, channel_max)
        self.augment = DiffAugment(diff_augment)
        self.gan_loss = NonSaturatingLoss()
        self.r1 = R1Penalty(r1_gamma)
        self.path_length = PathLengthPenalty(pl_weight, pl_decay, pl_batch_shrink)  # a submodule: pl_mean in the checkpoint
        self.init_gan()
        for name, interval in (("generator_optimizer", generator_reg_interval), ("critic_optimizer", critic_reg_interval)):
            lazy_reg_optimizer(self.hparams[name], interval, name)  # a bad optimiser config fails here, not at fit
        self.test_judge_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_judge_real_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self._fid_cache: dict[str, Any] = {}  # extractor and judge: loaded once, never in the checkpoint
        self.test_fid_result: dict[str, Any] | None = None

    # ------------------------------------------------------------------ training

    def configure_optimizers(self):
        """``[generator Adam, critic Adam]`` with lr and betas rescaled for lazy regularisation."""
        h = self.hparams
        return [instantiate(lazy_reg_optimizer(h.generator_optimizer, h.generator_reg_interval, "generator_optimizer"),
                            params=list(self.generator_parameters()), _convert_="all"),
                instantiate(lazy_reg_optimizer(h.critic_optimizer, h.critic_reg_interval, "critic_optimizer"),
                            params=list(self.critic_parameters()), _convert_="all")]

    def _latents(self, labels: Tensor) -> Tensor:
        return torch.randn(labels.shape[0], self.hparams.z_dim, device=labels.device)

    def _training_ws(self, labels: Tensor) -> Tensor:
        return self.generator.training_ws(self._latents(labels), labels, self.hparams.style_mixing_prob)

    def generator_loss(self, batch) -> LossTerms:
        _, y = batch
        fake = self.generator.synthesis(self._training_ws(y))
        return self.gan_loss.generator(self.critic(self.augment(fake), y))

    def critic_loss(self, batch) -> LossTerms:
        x, y = batch
        with torch.no_grad():  # the critic's step needs no generator graph
            fake = self.generator.synthesis(self._training_ws(y))
        return self.gan_loss.critic(self.critic(self.augment(x), y), self.critic(self.augment(fake), y))

    def critic_regularizer(self, batch) -> LossTerms | None:
        if self.r1.gamma == 0:
            return None
        x, y = batch
        # Through the augmentation, as DiffAugment's StyleGAN2 does: the gradient is w.r.t. the un-augmented reals.
        return self.r1(lambda images: self.critic(self.augment(images), y), x)

    def generator_regularizer(self, batch) -> LossTerms | None:
        if self.path_length.pl_weight == 0:
            return None
        _, y = batch
        # Full-batch ws (the mapping is cheap); the penalty keeps the first N // pl_batch_shrink.
        terms = self.path_length(self.generator.synthesis, self._training_ws(y))
        self.log("train/pl_mean", self.path_length.pl_mean.detach().clone())  # the buffer moves in place later
        return terms

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(self, labels: Tensor, truncation_psi: float | None = None, generator: torch.Generator | None = None,
               batch_size: int | None = None, noise_mode: str = "const") -> Tensor:
        """Tiles (N, C, R, R) in [0, 1], float32, of the classes ``labels`` (N,) on the module's
        device, from the EMA generator (:attr:`sampling_generator`), by default with its stored
        noise (``noise_mode="const"``, as StyleGAN2's generate script). The latents ``z ~ N(0, I)``
        are drawn from ``generator`` (on its device; None: the global RNG), and so is the per-tile
        noise of ``noise_mode="random"`` (the FID's, as StyleGAN2's metrics), so a seeded generator
        fixes the images and the training RNG stream is left alone. ``truncation_psi`` None: the
        model's. ``batch_size`` splits the synthesis (None: one batch); const-noise images depend on
        it only through float rounding (the latents are drawn up front)."""
        if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point():
            raise ValueError(f"labels must be a 1-D integer tensor of class indices, got {getattr(labels, 'dtype', type(labels))} "
                             f"of shape {tuple(getattr(labels, 'shape', ()))}")
        psi = self.hparams.truncation_psi if truncation_psi is None else truncation_psi
        h = self.hparams
        device = generator.device if generator is not None else self.device
        z = torch.randn(labels.shape[0], h.z_dim, generator=generator, device=device).to(self.device)
        labels = labels.to(self.device)
        if labels.shape[0] == 0:
            return torch.zeros(0, h.in_channels, h.image_size, h.image_size, device=self.device)
        size = batch_size or labels.shape[0]
        network = self.sampling_generator
        noise_seed = int(torch.randint(2**62, (), generator=generator, device=device)) if noise_mode == "random" else None
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=noise_seed is not None):
            if noise_seed is not None:  # the synthesis layers draw their noise from the global RNG: seed a fork of it
                torch.manual_seed(noise_seed)
            images = [network.sample(zs, ls, psi, noise_mode=noise_mode).float()
                      for zs, ls in zip(z.split(size), labels.split(size))]
        return torch.cat(images)

    # ------------------------------------------------------------------ data

    def check_datamodule(self, datamodule) -> None:
        super().check_datamodule(datamodule)
        size = getattr(datamodule, "image_size", None)
        if size is not None and size != self.hparams.image_size:
            raise ValueError(
                f"the model generates image_size={self.hparams.image_size} tiles but the data has image_size={size}: "
                f"set data.image_size={self.hparams.image_size}, or train a generator at that size (model.image_size={size})"
            )

    # ------------------------------------------------------------------ FID and the judge

    def judge(self):
        """The :class:`~advmed.models.classifier.ClassifierModule` of ``fid.classifier_ckpt`` (None
        when not set), loaded once and checked against the generator's classes and image size."""
        path, h = self.hparams.fid["classifier_ckpt"], self.hparams
        if path and "judge" not in self._fid_cache:
            self._fid_cache["judge"] = load_judge(path, h.num_classes, h.in_channels, h.class_names, h.image_size,
                                                  resize=h.fid["resize"])
            self._fid_cache["judge_name"] = f"{path} (sha256 {file_sha256(Path(path).expanduser())[:12]})"
        elif not path and h.untrained_judge is not None and "judge" not in self._fid_cache:
            data = {"num_classes": h.num_classes, "in_channels": h.in_channels, "class_names": list(h.class_names),
                    "image_size": h.image_size}
            judge = build_untrained_target(ClassifierModule, {**data, **h.untrained_judge}, "model.fid.classifier_ckpt")
            self._fid_cache["judge"] = judge.requires_grad_(False)
            self._fid_cache["judge_name"] = UNTRAINED_JUDGE
        return self._fid_cache.get("judge")

    def _judge_size(self) -> int | None:
        """The side the judge's images are resized to (``fid.resize``), or None: as generated."""
        return self.judge().hparams.get("image_size") if self.hparams.fid["resize"] else None

    def fid_feature_extractor(self) -> nn.Module:
        """The FID features of ``fid.features``: Inception-v3 (weights from ``fid.weights_path`` or
        the torch hub cache; never downloaded) or the judge classifier's penultimate layer."""
        if "extractor" not in self._fid_cache:
            cfg = self.hparams.fid
            if cfg["features"] == "inception":
                self._fid_cache["extractor"] = InceptionV3Features(cfg["weights_path"])
            else:
                self._fid_cache["extractor"] = ClassifierFeatures(self.judge().net, self._fid_cache["judge_name"],
                                                                  self._judge_size())
        return self._fid_cache["extractor"]

    def build_fid(self, class_names: list[str] | None = None, reset_real_features: bool = True) -> ClassConditionalFID:
        """A fresh :class:`~advmed.metrics.fid.ClassConditionalFID` on the configured features and
        the module's device (``class_names`` None: the model's)."""
        names = list(self.hparams.class_names) if class_names is None else class_names
        return ClassConditionalFID(names, feature_extractor=self.fid_feature_extractor(),
                                   reset_real_features=reset_real_features).to(self.device)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage in ("fit", "test"):  # a missing weights file or checkpoint fails now, not after training
            self.judge()
            self.fid_feature_extractor()

    def validation_step(self, batch, batch_idx: int) -> None:
        """Nothing: a GAN has no cheap validation metric (see FidHistoryCallback)."""

    def on_test_epoch_start(self) -> None:
        self._test_rng = torch.Generator().manual_seed(self.hparams.fid["seed"] + self.global_rank)
        if self.judge() is not None:
            self.judge().to(self.device)

    def test_step(self, batch, batch_idx: int) -> None:
        judge = self.judge()
        if judge is None:
            return
        x, y = batch
        cfg = self.hparams.fid
        fake = self.sample(y, generator=self._test_rng, batch_size=cfg["batch_size"], noise_mode=cfg["noise_mode"])
        with torch.no_grad():
            size = self._judge_size()
            self.test_judge_acc.update(judge(resize_to(fake, size)).argmax(1), y)
            self.test_judge_real_acc.update(judge(resize_to(x, size)).argmax(1), y)

    def on_test_epoch_end(self) -> None:
        if self.judge() is not None:
            self.log("test/judge_acc", self.test_judge_acc.compute())
            self.log("test/judge_real_acc", self.test_judge_real_acc.compute())
            self.test_judge_acc.reset()
            self.test_judge_real_acc.reset()
        cfg = self.hparams.fid
        metric = self.build_fid()
        rank, world = self.global_rank, self.trainer.world_size
        real = reference_loader(self.trainer.datamodule, cfg["reference_split"])
        labels = add_real_images(metric, real, cfg["num_images"], rank=rank, world_size=world)
        rng = torch.Generator().manual_seed(cfg["seed"] + rank)
        add_generated_images(metric, self.sample, labels, cfg["batch_size"], rng, noise_mode=cfg["noise_mode"])
        result = metric.compute()
        for key, value in result.items():
            if key == "fid" or (key.startswith("fid_")):
                self.log(f"test/{key}", float(value))
        self.log("test/fid_num_real", float(result["num_real"]))
        self.log("test/fid_num_generated", float(result["num_generated"]))
        self.test_fid_result = {**result, "reference_split": cfg["reference_split"]}
