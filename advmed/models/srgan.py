"""The SRGAN x2 step of Lockshin et al. 2022 (sec. 3.2): an SRResNet generator that upscales 128 px
histology tiles to 256 px, trained against a discriminator with the VGG19 content loss of Ledig et
al. 2017, on the GAN base.

    python -m advmed.train experiment=lockshin/srgan data.root=<NCT-CRC-HE-100K>
    python -m advmed.train experiment=lockshin/srgan_tiny          # seconds on a CPU

The networks are in :mod:`advmed.nets.srgan`, the training pairs and the bicubic baseline in
:mod:`advmed.nets.srgan_pairs`, the losses in :mod:`advmed.losses.srgan`, the scores in
:mod:`advmed.metrics.image_quality`. A trained generator upscales other tiles (the StyleGAN2 ones)
through :func:`load_srgan_generator` and :func:`upscale_images`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import SumMetric

from advmed.losses.srgan import CONTENT_FALLBACKS, SRGANLoss
from advmed.metrics.image_quality import SuperResolutionScores, write_quality_report
from advmed.models.gan import GANModule, LossTerms
from advmed.nets.srgan import SCALES, SRDiscriminator, SRResNet
from advmed.nets.srgan_pairs import KERNELS, bicubic_upscale, make_sr_pair
from advmed.nets.vgg_features import ON_MISSING, VGGFeatures
from advmed.studies.sr_figures import super_resolution_grid
from advmed.utils.checkpoint_file import load_generator
from advmed.utils.loggers import log_image
from advmed.utils.run import plain

SRGAN_CLASS = "advmed.models.srgan.SRGANModule"
GENERATOR_KEYS = ("scale", "num_blocks", "channels", "in_channels")
# Ledig et al. 2017, sec. 3.2: Adam with beta1 = 0.9 and lr 1e-4 (the GAN base's default is DCGAN's).
LEDIG_ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-4, "betas": [0.9, 0.999]}
PERCEPTUAL_DEFAULTS: dict[str, Any] = {"layer": "relu5_4", "weights_path": None, "on_missing": "error",
                                       "fallback": "pixel"}
SSIM_MIN_SIZE = 11  # torchmetrics' SSIM uses an 11 x 11 Gaussian window
QUALITY_REPORT = "sr_quality"  # <run dir>/sr_quality.csv and .md
GRID_FILE = "sr_examples.png"


def _perceptual_config(perceptual: dict[str, Any] | None) -> dict[str, Any]:
    given = dict(plain(perceptual) or {})
    unknown = sorted(set(given) - set(PERCEPTUAL_DEFAULTS))
    if unknown:
        raise ValueError(f"model.perceptual has unknown key(s) {unknown}; valid keys: {sorted(PERCEPTUAL_DEFAULTS)}")
    cfg = {**PERCEPTUAL_DEFAULTS, **given}
    if cfg["on_missing"] not in ON_MISSING:
        raise ValueError(f"model.perceptual.on_missing={cfg['on_missing']!r} must be one of {ON_MISSING}")
    if cfg["fallback"] not in CONTENT_FALLBACKS:
        raise ValueError(f"model.perceptual.fallback={cfg['fallback']!r} must be one of {CONTENT_FALLBACKS}")
    return cfg


def check_sizes(scale: int, hr_size: int, lr_size: int, image_size: int | None) -> None:
    """Refuse sizes that cannot make the paper's pairs, naming the config keys and the fix."""
    if scale not in SCALES:
        raise ValueError(f"model.scale={scale!r} must be one of {SCALES} (SRResNet upsamples x2 per stage)")
    for name, value in (("hr_size", hr_size), ("lr_size", lr_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"model.{name}={value!r} must be an integer >= 1 (pixels)")
    if lr_size * scale != hr_size:
        raise ValueError(f"model.hr_size={hr_size} must equal model.scale * model.lr_size = {scale} * {lr_size} = "
                         f"{scale * lr_size}: the generator enlarges I_LR exactly {scale} times "
                         f"(paper: lr_size=128, hr_size=256)")
    if hr_size < SSIM_MIN_SIZE:
        raise ValueError(f"model.hr_size={hr_size} must be at least {SSIM_MIN_SIZE} (the SSIM window of the scores)")
    if image_size is not None and image_size <= lr_size:
        raise ValueError(f"data.image_size={image_size} must be larger than model.lr_size={lr_size}: I_LR is the "
                         "data's tile downscaled, so a tile no larger than I_LR holds no detail for the generator to "
                         f"learn (paper: 224 px tiles, lr_size=128); raise data.image_size or lower model.lr_size")


def upscale_images(generator: nn.Module, images: Tensor, batch_size: int | None = None) -> Tensor:
    """``generator``'s upscaling of ``images`` (N, C, h, w) in [0, 1]: (N, C, scale*h, scale*w) in
    [0, 1] on the images' device, without gradients, the generator in eval mode for the call (its
    mode is restored). ``batch_size`` bounds the images per forward pass (None: all at once)."""
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = f"a {images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (N, C, h, w) in [0, 1], got {got} "
                         "(convert uint8 images with x.float() / 255)")
    channels = generator.head[0].in_channels
    if images.shape[1] != channels:
        raise ValueError(f"the generator takes {channels}-channel images, got {images.shape[1]} channels")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"images must be in [0, 1], got values in [{images.min().item():.4g}, {images.max().item():.4g}]")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1, or None for one pass")
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()  # batch norm with its running statistics: outputs do not depend on the batch
    try:
        with torch.no_grad():
            chunks = images.split(batch_size or max(len(images), 1))
            out = torch.cat([generator(chunk.to(device)).clamp(0.0, 1.0) for chunk in chunks])
    finally:
        generator.train(was_training)
    return out.to(images.device)


def load_srgan_generator(path: str | Path) -> tuple[SRResNet, dict[str, Any]]:
    """The generator (its EMA copy when one was kept) of an :class:`SRGANModule` checkpoint, in eval
    mode without gradients, and the checkpoint's hyper-parameters. Neither the discriminator nor the
    VGG19 weights are needed."""
    return load_generator(path, SRGAN_CLASS,
                          lambda hparams: SRResNet(**{key: hparams[key] for key in GENERATOR_KEYS if key in hparams}),
                          "python -m advmed.train experiment=lockshin/srgan")


class SRGANModule(GANModule):
    """Trains the SRGAN x2 upscaler of Lockshin et al. 2022 (sec. 3.2; Ledig et al. 2017).

    Training pairs (paper sec. 3.2): each data tile (``data.image_size`` px, 224 in the paper) is
    resized to ``hr_size`` for ``I_HR`` and, independently, to ``lr_size`` for ``I_LR``
    (:func:`~advmed.nets.srgan_pairs.make_sr_pair`), on the fly and on the device.

    Generator loss (eq. 3): ``alpha *`` the VGG19 feature MSE at ``perceptual.layer`` (eq. 4) ``+
    beta *`` the adversarial loss ``-log D(G(I_LR))`` (eq. 5); discriminator loss: the vanilla GAN
    loss (eq. 1), both from :class:`~advmed.losses.SRGANLoss`. For the first ``pretrain_steps``
    generator steps the generator learns pixel MSE alone (the SRResNet initialisation of Ledig et
    al., sec. 3.2) and the discriminator is neither called nor stepped.

    Logged: ``train/g_content`` (or ``train/g_pixel`` when the VGG19 term is off or in
    pre-training), ``train/g_adversarial``, ``train/d_real``, ``train/d_fake`` and their sums;
    ``val/psnr``, ``val/ssim`` of ``G(I_LR)`` against ``I_HR`` and ``val/bicubic_psnr``,
    ``val/bicubic_ssim`` of the bicubic upscaling of ``I_LR`` (means of per-image values,
    :class:`~advmed.metrics.image_quality.SuperResolutionScores`); the same under ``test/``, with
    ``<run dir>/sr_quality.csv`` / ``.md`` (rows srgan and bicubic, and the number of images) and
    ``<run dir>/sr_examples.png`` (``I_LR`` | bicubic | SRGAN | ``I_HR``) written at the test's end
    (the run directory is the trainer's ``default_root_dir``).

    Steps: Lightning counts every optimiser step in ``trainer.max_steps`` (GAN base), so ``N``
    SRGAN iterations after ``P`` pre-training steps are ``max_steps = P + 2 * N`` (``n_critic=1``).

    Args:
        in_channels, image_size: of the data (checked; ``image_size`` is the side of its tiles).
        scale, hr_size, lr_size: the upscaling factor and the sides of ``I_HR`` / ``I_LR``
            (``hr_size = scale * lr_size``; paper: 2, 256, 128).
        hr_kernel, lr_kernel: resize kernels of ``I_HR`` / ``I_LR`` (``bicubic``, ``bilinear``, ``area``).
        num_blocks, channels: :class:`~advmed.nets.srgan.SRResNet` (Ledig et al.: 16, 64).
        critic_width, critic_pool_size: :class:`~advmed.nets.srgan.SRDiscriminator` (64, 6).
        alpha, beta: eq. 3's weights. Ledig et al. scale the VGG features by 1/12.75, which is
            ``alpha = 1 / 12.75**2`` on unscaled features, with ``beta = 1e-3``.
        pretrain_steps: generator steps of pixel-MSE pre-training before the adversarial phase (0: none).
        perceptual: ``layer`` (a VGG19 layer name, ``relu5_4`` = phi_{5,4}), ``weights_path`` (a
            local torchvision VGG19 file; null: the torch hub cache), ``on_missing`` (``error``: a
            FileNotFoundError naming the file; ``warn``: a loud warning and the VGG term off) and
            ``fallback`` (without VGG features: ``pixel`` MSE weighted by alpha, or ``none``).
        grid_images: tiles in ``sr_examples.png`` (0: no figure).
        generator_optimizer, critic_optimizer: Hydra dicts; None: Adam lr 1e-4, betas (0.9, 0.999).
        n_critic, gradient_clip_val, accumulate_grad_batches, ema_decay, ema_rampup: the GAN base's
            (:class:`~advmed.models.gan.GANModule`).
        feature_network: a module used in place of the VGG19 (tests); not saved.
        train_attack, test_attack: accepted from the entry point and unused.
    """

    monitor = ("val/psnr", "max")

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int | None = None,
        scale: int = 2,
        hr_size: int = 256,
        lr_size: int = 128,
        hr_kernel: str = "bicubic",
        lr_kernel: str = "bicubic",
        num_blocks: int = 16,
        channels: int = 64,
        critic_width: int = 64,
        critic_pool_size: int = 6,
        alpha: float = 1.0 / 12.75**2,
        beta: float = 1e-3,
        pretrain_steps: int = 0,
        perceptual: dict[str, Any] | None = None,
        grid_images: int = 4,
        generator_optimizer: dict[str, Any] | None = None,
        critic_optimizer: dict[str, Any] | None = None,
        n_critic: int = 1,
        gradient_clip_val: float | None = None,
        accumulate_grad_batches: int = 1,
        ema_decay: float | None = None,
        ema_rampup: float | None = None,
        feature_network: nn.Module | None = None,
        train_attack=None,
        test_attack=None,
    ) -> None:
        super().__init__()
        check_sizes(scale, hr_size, lr_size, image_size)
        for name, value in (("hr_kernel", hr_kernel), ("lr_kernel", lr_kernel)):
            if value not in KERNELS:
                raise ValueError(f"model.{name}={value!r} must be one of {KERNELS}")
        if not isinstance(pretrain_steps, int) or pretrain_steps < 0:
            raise ValueError(f"model.pretrain_steps={pretrain_steps!r} must be an integer >= 0 (0: no pre-training)")
        if not isinstance(grid_images, int) or grid_images < 0:
            raise ValueError(f"model.grid_images={grid_images!r} must be an integer >= 0 (0: no figure)")
        perceptual = _perceptual_config(perceptual)
        self.save_hyperparameters(ignore=["feature_network", "train_attack", "test_attack"])
        self.hparams.perceptual = perceptual
        self.hparams.generator_optimizer = plain(generator_optimizer) or dict(LEDIG_ADAM)
        self.hparams.critic_optimizer = plain(critic_optimizer) or dict(LEDIG_ADAM)
        self.generator = SRResNet(scale, num_blocks, channels, in_channels)
        self.critic = SRDiscriminator(critic_width, critic_pool_size, in_channels)
        features = VGGFeatures(perceptual["layer"], perceptual["weights_path"], perceptual["on_missing"],
                               network=feature_network)
        # The loss only calls the extractor; registered here it follows the device and stays out of
        # the checkpoint (rebuilt from the recorded layer and weights path).
        self.freeze_target("perceptual_features", features)
        self.sr_loss = SRGANLoss(features, alpha, beta, content_fallback=perceptual["fallback"])
        self.init_gan()
        self.val_scores = SuperResolutionScores("bicubic")
        self.test_scores = SuperResolutionScores("bicubic")
        self.test_images = SumMetric()
        self._examples: list[tuple[Tensor, ...]] = []

    # ------------------------------------------------------------------ data

    def check_datamodule(self, datamodule) -> None:
        """Also refuse data whose tile side is not the recorded ``image_size`` or too small for ``lr_size``."""
        super().check_datamodule(datamodule)
        theirs, ours = getattr(datamodule, "image_size", None), self.hparams.image_size
        if theirs is None:
            return
        if ours is not None and int(theirs) != int(ours):
            raise ValueError(f"the model was built for data.image_size={ours} but the data has image_size={theirs}: "
                             "set model.image_size=${data.image_size} (the default) or use the data it was built for")
        check_sizes(self.hparams.scale, self.hparams.hr_size, self.hparams.lr_size, int(theirs))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:  # Trainer.fit(model, datamodule=...) without advmed.train's check
            self.check_datamodule(datamodule)

    def make_pair(self, batch) -> tuple[Tensor, Tensor]:
        """``(I_HR, I_LR)`` of a batch of data tiles ``(x, y)`` (or ``x``), made on the batch's device."""
        tiles = batch[0] if isinstance(batch, list | tuple) else batch
        size = self.hparams.image_size
        if size is not None and tuple(tiles.shape[-2:]) != (size, size):
            raise ValueError(f"the data gives {tiles.shape[-2]}x{tiles.shape[-1]} tiles but model.image_size={size}: "
                             "keep model.image_size=${data.image_size}")
        h = self.hparams
        return make_sr_pair(tiles, h.hr_size, h.lr_size, h.hr_kernel, h.lr_kernel)

    # ------------------------------------------------------------------ training

    @property
    def in_pretraining(self) -> bool:
        """Whether the next generator step is a pixel-MSE pre-training step."""
        return self.generator_steps < self.hparams.pretrain_steps

    def forward(self, lr: Tensor) -> Tensor:
        return self.generator(lr)

    def generator_loss(self, batch) -> LossTerms:
        hr, lr = self.make_pair(batch)
        sr = self.generator(lr)
        if self.in_pretraining:
            return self.sr_loss.pretrain(sr, hr)
        return self.sr_loss.generator(sr, hr, self.critic(sr))

    def critic_loss(self, batch) -> LossTerms | None:
        if self.in_pretraining:  # None: the base skips the critic's optimiser step
            return None
        hr, lr = self.make_pair(batch)
        with torch.no_grad():
            sr = self.generator(lr)
        return self.sr_loss.discriminator(self.critic(hr), self.critic(sr))

    # ------------------------------------------------------------------ sampling

    def upscale(self, images: Tensor, batch_size: int | None = None) -> Tensor:
        """``images`` (N, C, h, w) in [0, 1] -> (N, C, scale*h, scale*w) in [0, 1], no gradients,
        by the sampling generator (the EMA copy when kept) in eval mode."""
        return upscale_images(self.sampling_generator, images, batch_size)

    # ------------------------------------------------------------------ validation and test

    def _score(self, scores: SuperResolutionScores, batch) -> tuple[Tensor, ...]:
        hr, lr = self.make_pair(batch)
        sr = self.sampling_generator(lr).clamp(0.0, 1.0)
        bicubic = bicubic_upscale(lr, self.hparams.scale)
        scores.update(sr, hr, bicubic)
        return lr, bicubic, sr, hr

    def _log_scores(self, split: str, scores: SuperResolutionScores) -> dict[str, float]:
        values = scores.compute()
        for name, value in values.items():
            self.log(f"{split}/{name}", value, prog_bar=name == "psnr")
        scores.reset()
        return values

    def validation_step(self, batch, batch_idx: int) -> None:
        self._score(self.val_scores, batch)

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val", self.val_scores)

    def on_test_epoch_start(self) -> None:
        self._examples = []

    def test_step(self, batch, batch_idx: int) -> None:
        images = self._score(self.test_scores, batch)
        self.test_images.update(torch.tensor(float(len(images[0])), device=self.device))
        have = sum(len(example[0]) for example in self._examples)
        if have < self.hparams.grid_images:
            self._examples.append(tuple(t[: self.hparams.grid_images - have].detach().cpu() for t in images))

    def on_test_epoch_end(self) -> None:
        values = self._log_scores("test", self.test_scores)
        count = int(self.test_images.compute())  # all ranks: the metrics synchronise
        self.test_images.reset()
        if not self.trainer.is_global_zero:
            return
        root = Path(self.trainer.default_root_dir)
        write_quality_report(root / QUALITY_REPORT, [
            {"model": "srgan", "psnr": values["psnr"], "ssim": values["ssim"], "images": count},
            {"model": "bicubic", "psnr": values["bicubic_psnr"], "ssim": values["bicubic_ssim"], "images": count},
        ])
        if self._examples:
            lr, bicubic, sr, hr = (torch.cat(column) for column in zip(*self._examples, strict=True))
            super_resolution_grid(root / GRID_FILE, lr, bicubic, sr, hr)
            log_image(self.trainer.loggers, "test/sr_examples", root / GRID_FILE)
        self._examples = []
