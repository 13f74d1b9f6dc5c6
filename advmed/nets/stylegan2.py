"""Class-conditional StyleGAN2, config F layout (Karras et al. 2020, "Analyzing and Improving the
Image Quality of StyleGAN", CVPR): the generator of Lockshin et al. 2022 (sec. 3.1), written from the
paper; layers in :mod:`advmed.nets.stylegan2_layers`, losses in :mod:`advmed.losses.stylegan2`.

StyleGAN2Generator: a mapping network ``(z, label) -> w`` and a synthesis network ``ws -> image``: a learned
4x4 constant, one block per resolution (upsample + two modulated 3x3 convolutions with noise), and
the skip architecture of Fig. 7b (a tRGB at every resolution, upsampled and summed). StyleGAN2Discriminator:
the residual architecture of Fig. 7c with a minibatch standard deviation layer before the final 4x4
block, conditioned by projection (Miyato & Koyama 2018) as in StyleGAN2-ADA. Channels at resolution
``r`` are ``min(channel_base // r, channel_max)``: 32768 and 512 are config F (512 channels up to
64 px, 256 at 128, 128 at 256); tests use tiny values.

Pixel range: StyleGAN2 synthesises in [-1, 1]. Our boundary is [0, 1], so :meth:`StyleGAN2Generator.synthesis`
and :meth:`StyleGAN2Generator.forward` return ``(x + 1) / 2`` *unclamped* (clamping would cut gradients in
training), :meth:`StyleGAN2Generator.sample` clamps to [0, 1] for output, and the discriminator takes [0, 1]
images and maps them back to [-1, 1] itself. The losses take ``pixel_scale=2`` to keep the paper's
gamma and path-length units.

Written here: torchvision and the other libraries we use have no StyleGAN2; the official code is a
research repository with custom CUDA kernels. Left out: its fp16 layers and ``conv_clamp`` (bf16
autocast is our mixed precision), ADA augmentation and the unused non-skip / non-residual variants.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advmed.nets.stylegan2_layers import (
    EqualConv2d,
    EqualLinear,
    MinibatchStdDev,
    SynthesisLayer,
    ToRGB,
    check_noise_mode,
    downsample_2x,
    normalize_2nd_moment,
    upsample_2x,
)

MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024


def check_resolution(img_resolution: int) -> int:
    """``img_resolution`` if it is a power of two in [8, 1024], else a ValueError that says so."""
    if not (isinstance(img_resolution, int) and MIN_RESOLUTION <= img_resolution <= MAX_RESOLUTION
            and img_resolution & (img_resolution - 1) == 0):
        raise ValueError(f"model.image_size={img_resolution} must be a power of two (32, 64, 128, 256; "
                         f"{MIN_RESOLUTION} to {MAX_RESOLUTION} allowed): resize the data to one")
    return img_resolution


def channels_per_resolution(img_resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """``{4: c4, 8: c8, ..., img_resolution: c}`` with ``c_r = min(channel_base // r, channel_max)``."""
    for name, value in (("channel_base", channel_base), ("channel_max", channel_max)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"model.{name}={value} must be an integer >= 1")
    if channel_base < img_resolution:
        raise ValueError(f"model.channel_base={channel_base} gives no channels at {img_resolution} px: "
                         f"set it to at least the image size ({img_resolution}; config F uses 32768)")
    return {4 * 2**i: min(channel_base // (4 * 2**i), channel_max) for i in range(int(math.log2(img_resolution)) - 1)}


def check_labels(labels: Tensor | None, batch_size: int, num_classes: int) -> Tensor:
    """Integer class indices (N,) checked against the batch and ``num_classes``; None is class 0
    of a one-class model."""
    if labels is None:
        if num_classes != 1:
            raise ValueError(f"labels are required: the model has num_classes={num_classes}; pass class indices (N,)")
        return torch.zeros(batch_size, dtype=torch.long)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.shape != (batch_size,):
        raise ValueError(f"labels must be integer class indices of shape ({batch_size},), got {labels.dtype} "
                         f"of shape {tuple(labels.shape)} (one-hot labels: pass labels.argmax(1))")
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(f"labels {labels.tolist()} must lie in [0, {num_classes - 1}] (num_classes={num_classes})")
    return labels.long()


def style_mix(ws: Tensor, ws_other: Tensor, crossover: int) -> Tensor:
    """Style mixing (StyleGAN sec. 3.1): layers ``< crossover`` from ``ws``, the rest from
    ``ws_other`` (both (N, num_ws, w_dim)); ``crossover = num_ws`` changes nothing."""
    if not 0 <= crossover <= ws.shape[1]:
        raise ValueError(f"crossover={crossover} must lie in [0, num_ws={ws.shape[1]}]")
    return torch.cat([ws[:, :crossover], ws_other[:, crossover:]], dim=1)


class MappingNetwork(nn.Module):
    """``(z, label) -> w`` (StyleGAN sec. 2; class conditioning as in StyleGAN2-ADA).

    ``z`` and a learned label embedding (an ``nn.Embedding`` row, i.e. a linear layer on the
    one-hot label) are each normalised to unit second moment and concatenated, then ``num_layers``
    equalized fully connected layers with leaky ReLU and lr multiplier ``lr_mul`` give ``w``.
    ``w_avg`` (num_classes, w_dim), a buffer, is the running mean of ``w`` per class (EMA with
    ``w_avg_beta``), the centre of the truncation trick. One centre per class, not StyleGAN2-ADA's
    single one: truncating toward a global mean pulls every class toward the same image, and the
    augmentation pipeline needs class-faithful samples.
    """

    def __init__(self, z_dim: int = 512, w_dim: int = 512, num_classes: int = 1, num_layers: int = 8,
                 lr_mul: float = 0.01, w_avg_beta: float = 0.995) -> None:
        super().__init__()
        for name, value in (("z_dim", z_dim), ("w_dim", w_dim), ("num_classes", num_classes), ("mapping_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name}={value} must be an integer >= 1")
        if not 0.0 <= w_avg_beta < 1.0:
            raise ValueError(f"model.w_avg_beta={w_avg_beta} must be in [0, 1) (0.995 in StyleGAN2)")
        self.z_dim, self.w_dim, self.num_classes, self.w_avg_beta = z_dim, w_dim, num_classes, w_avg_beta
        self.embed = nn.Embedding(num_classes, w_dim)
        dims = [z_dim + w_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(*(EqualLinear(a, b, lr_mul=lr_mul, activation="lrelu") for a, b in zip(dims[:-1], dims[1:])))
        self.register_buffer("w_avg", torch.zeros(num_classes, w_dim))

    def forward(self, z: Tensor, labels: Tensor | None = None, update_w_avg: bool = False) -> Tensor:
        """``w`` (N, w_dim) for ``z`` (N, z_dim) and integer ``labels`` (N,); ``update_w_avg``
        moves ``w_avg`` toward this batch's per-class means (training)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        labels = check_labels(labels, z.shape[0], self.num_classes).to(z.device)
        x = torch.cat([normalize_2nd_moment(z), normalize_2nd_moment(self.embed(labels).to(z.dtype))], dim=1)
        w = self.layers(x)
        if update_w_avg:
            self._update_w_avg(w.detach(), labels)
        return w

    @torch.no_grad()
    def _update_w_avg(self, w: Tensor, labels: Tensor) -> None:
        one_hot = F.one_hot(labels, self.num_classes).to(self.w_avg.dtype)  # (N, K); a matmul, deterministic on GPU
        counts = one_hot.sum(0)[:, None]
        means = one_hot.T @ w.to(self.w_avg.dtype) / counts.clamp_min(1.0)
        moved = means.lerp(self.w_avg, self.w_avg_beta)  # w_avg <- beta * w_avg + (1 - beta) * mean
        self.w_avg.copy_(torch.where(counts > 0, moved, self.w_avg))  # classes absent from the batch stay put


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (upsample +) two modulated convolutions, then a tRGB
    whose output is added to the upsampled image so far. The 4x4 block starts from the learned
    constant and has one convolution. It consumes ``num_conv + 1`` ws; the tRGB's w is shared with
    the next block's first convolution (as in the official code, so ``num_ws = 2 log2(R) - 2``)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int) -> None:
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, img_channels, w_dim)
        self.num_conv = 1 if self.conv0 is None else 2

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise_mode: str) -> tuple[Tensor, Tensor]:
        if self.conv0 is None:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        rgb = self.torgb(x, ws[:, self.num_conv])
        img = rgb if img is None else upsample_2x(img) + rgb
        return x, img


class SynthesisNetwork(nn.Module):
    """``ws`` (N, num_ws, w_dim) -> image (N, C, R, R) in StyleGAN2's native [-1, 1] range (not
    clamped; :meth:`StyleGAN2Generator.synthesis` maps it to [0, 1])."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int, channel_max: int) -> None:
        super().__init__()
        channels = channels_per_resolution(check_resolution(img_resolution), channel_base, channel_max)
        self.w_dim = w_dim
        self.blocks = nn.ModuleList(
            SynthesisBlock(channels.get(res // 2, 0), channels[res], w_dim, res, img_channels) for res in channels
        )
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def forward(self, ws: Tensor, noise_mode: str = "random") -> Tensor:
        check_noise_mode(noise_mode)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}) (from StyleGAN2Generator.mapping), got {tuple(ws.shape)}")
        x = img = None
        start = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, start:start + block.num_conv + 1], noise_mode)
            start += block.num_conv
        return img


class StyleGAN2Generator(nn.Module):
    """Class-conditional StyleGAN2 generator: ``G(z, labels)`` -> images in [0, 1] (unclamped).

    Args:
        z_dim, w_dim: latent sizes (512 in the paper and in Lockshin et al.).
        num_classes: classes of the conditioning labels (>= 1; 1 is unconditional).
        img_resolution: output size, a power of two in [8, 1024] (Lockshin et al.: 128).
        img_channels: output channels (3).
        channel_base, channel_max: channels per resolution (see the module docstring).
        mapping_layers, mapping_lr_mul: depth and lr multiplier of the mapping network (8, 0.01).
        w_avg_beta: EMA decay of the per-class ``w`` mean used by truncation (0.995).
    """

    def __init__(self, z_dim: int = 512, w_dim: int = 512, num_classes: int = 1, img_resolution: int = 128,
                 img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512, mapping_layers: int = 8,
                 mapping_lr_mul: float = 0.01, w_avg_beta: float = 0.995) -> None:
        super().__init__()
        if not isinstance(img_channels, int) or img_channels < 1:
            raise ValueError(f"model.img_channels={img_channels} must be an integer >= 1")
        self.synthesis_network = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max)
        self.mapping_network = MappingNetwork(z_dim, w_dim, num_classes, mapping_layers, mapping_lr_mul, w_avg_beta)
        self.z_dim, self.w_dim, self.num_classes = z_dim, w_dim, num_classes
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.num_ws = self.synthesis_network.num_ws

    def mapping(self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_w_avg: bool = False) -> Tensor:
        """``ws`` (N, num_ws, w_dim): ``w`` repeated per synthesis layer, truncated in the first
        ``truncation_cutoff`` layers (None: all) by the truncation trick in W (StyleGAN appendix B):
        ``w' = w_avg[label] + psi (w - w_avg[label])``; psi = 1 leaves ``w`` alone, 0 gives the
        class's average ``w`` for every z."""
        cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
        if not isinstance(cutoff, int) or not 0 <= cutoff <= self.num_ws:
            raise ValueError(f"truncation_cutoff={truncation_cutoff} must be an integer in [0, num_ws={self.num_ws}] or None (all layers)")
        w = self.mapping_network(z, labels, update_w_avg=update_w_avg)
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi == 1.0:
            return ws
        labels = check_labels(labels, z.shape[0], self.num_classes).to(z.device)
        centre = self.mapping_network.w_avg[labels][:, None].to(ws.dtype)
        truncated = centre + truncation_psi * (ws - centre)
        layer = torch.arange(self.num_ws, device=ws.device)[None, :, None]
        return torch.where(layer < cutoff, truncated, ws)

    def synthesis(self, ws: Tensor, noise_mode: str = "random") -> Tensor:
        """Images (N, C, R, R) for ``ws`` (N, num_ws, w_dim), as ``(x + 1) / 2`` of the native
        [-1, 1] output, not clamped (the training graph keeps its gradients)."""
        return self.synthesis_network(ws, noise_mode) * 0.5 + 0.5

    def forward(self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "random") -> Tensor:
        """``synthesis(mapping(z, labels, ...))``: images in [0, 1], not clamped."""
        return self.synthesis(self.mapping(z, labels, truncation_psi, truncation_cutoff), noise_mode)

    @torch.no_grad()
    def sample(self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0,
               truncation_cutoff: int | None = None, noise_mode: str = "const") -> Tensor:
        """Images for output (generation, grids, FID): :meth:`forward` clamped to [0, 1], no
        gradients, stored noise by default (a seed then fixes the image)."""
        return self(z, labels, truncation_psi, truncation_cutoff, noise_mode).clamp(0.0, 1.0)

    def training_ws(self, z: Tensor, labels: Tensor | None = None, mixing_prob: float = 0.9,
                    generator: torch.Generator | None = None) -> Tensor:
        """``ws`` for a training step: the mapping of ``z`` (updating ``w_avg``) and, with
        probability ``mixing_prob`` per batch, style mixing (StyleGAN sec. 3.1; 0.9 in config F)
        with the ws of a second, fresh ``z`` (same labels) from a crossover layer drawn uniformly
        in [1, num_ws). ``generator`` (on z's device) seeds the draws."""
        if not 0.0 <= mixing_prob <= 1.0:
            raise ValueError(f"model.style_mixing_prob={mixing_prob} must be in [0, 1] (0.9 in StyleGAN2, 0 disables it)")
        ws = self.mapping(z, labels, update_w_avg=True)
        if mixing_prob == 0.0 or self.num_ws < 2:
            return ws
        device = generator.device if generator is not None else torch.device("cpu")
        if float(torch.rand((), generator=generator, device=device)) >= mixing_prob:
            return ws
        crossover = int(torch.randint(1, self.num_ws, (), generator=generator, device=device))
        z_other = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return style_mix(ws, self.mapping(z_other, labels), crossover)


class DiscriminatorBlock(nn.Module):
    """Residual block of Fig. 7c, resolution r -> r / 2: two leaky-ReLU 3x3 convolutions with a
    [1, 3, 3, 1] downsampling between them, plus a downsampled linear 1x1 skip; the sum is scaled
    by 1/sqrt(2) to keep unit variance (the official code filters inside its strided convolution;
    we filter, subsample, then convolve at r / 2: the same kind of operator, fewer multiply-adds)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, activation=None)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.skip(downsample_2x(x))
        x = self.conv1(downsample_2x(self.conv0(x)))
        return (skip + x) * math.sqrt(0.5)


class StyleGAN2Discriminator(nn.Module):
    """Class-conditional residual StyleGAN2 discriminator: ``D(images in [0, 1], labels)`` -> logits (N,).

    fromRGB (1x1) at the top resolution, a :class:`DiscriminatorBlock` per halving down to 4x4, then
    minibatch standard deviation, a 3x3 convolution, a fully connected layer and a projection on
    the label (Miyato & Koyama 2018, in StyleGAN2-ADA's form): ``logit = <out(x), cmap(label)> /
    sqrt(cmap_dim)`` with ``out`` a linear layer to ``cmap_dim`` features and ``cmap`` a learned
    ``nn.Embedding`` row per class (ADA computes the row with an MLP on the one-hot label, which
    for one-hot inputs is also one learned vector per class).

    Args:
        num_classes, img_resolution, img_channels, channel_base, channel_max: as for :class:`StyleGAN2Generator`.
        mbstd_group_size, mbstd_num_features: minibatch standard deviation layer (4, 1).
        cmap_dim: projection size; None: the 4x4 channel count (as in StyleGAN2-ADA).
    """

    def __init__(self, num_classes: int = 1, img_resolution: int = 128, img_channels: int = 3,
                 channel_base: int = 32768, channel_max: int = 512, mbstd_group_size: int = 4,
                 mbstd_num_features: int = 1, cmap_dim: int | None = None) -> None:
        super().__init__()
        channels = channels_per_resolution(check_resolution(img_resolution), channel_base, channel_max)
        for name, value in (("num_classes", num_classes), ("img_channels", img_channels),
                            ("mbstd_group_size", mbstd_group_size), ("cmap_dim", cmap_dim or 1)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name}={value} must be an integer >= 1")
        c4 = channels[4]
        if not isinstance(mbstd_num_features, int) or mbstd_num_features < 1 or c4 % mbstd_num_features:
            raise ValueError(f"model.mbstd_num_features={mbstd_num_features} must be an integer >= 1 that divides "
                             f"the 4x4 channel count {c4}")
        self.num_classes, self.img_resolution, self.img_channels = num_classes, img_resolution, img_channels
        self.cmap_dim = cmap_dim or c4
        self.from_rgb = EqualConv2d(img_channels, channels[img_resolution], 1)
        resolutions = [r for r in sorted(channels, reverse=True) if r > 4]
        self.blocks = nn.Sequential(*(DiscriminatorBlock(channels[r], channels[r // 2]) for r in resolutions))
        self.mbstd = MinibatchStdDev(mbstd_group_size, mbstd_num_features)
        self.conv = EqualConv2d(c4 + mbstd_num_features, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4, activation="lrelu")
        self.out = EqualLinear(c4, self.cmap_dim)
        self.class_embedding = nn.Embedding(num_classes, self.cmap_dim)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"the discriminator takes images of shape (N, {', '.join(map(str, expected))}) in [0, 1], "
                             f"got {tuple(images.shape)}: match model.image_size and the data's channels")
        labels = check_labels(labels, images.shape[0], self.num_classes).to(images.device)
        x = self.from_rgb(images * 2.0 - 1.0)  # StyleGAN2's [-1, 1] pixels
        x = self.conv(self.mbstd(self.blocks(x)))
        features = self.out(self.fc(x.flatten(1)))
        cmap = self.class_embedding(labels).to(features.dtype)
        return (features * cmap).sum(dim=1) / math.sqrt(self.cmap_dim)
