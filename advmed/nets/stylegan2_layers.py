"""Building blocks of StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN", CVPR), written from the paper: equalized learning-rate layers, the modulated and
demodulated convolution (eqs. 1-3), noise inputs, resampling by the [1, 3, 3, 1] filter and the
minibatch standard deviation layer. :mod:`advmed.nets.stylegan2` assembles them.

Written here: torch has no equalized-lr or modulated convolution; the official code is a separate
research repository with custom CUDA kernels, not a library.

Equalized learning rate (Karras et al. 2018, ProGAN sec. 4.1): a weight is stored as ``N(0, 1) /
lr_mul`` and multiplied at run time by ``lr_mul / sqrt(fan_in)``, so every layer starts with unit
gain and Adam's per-parameter step moves every layer's output at the same rate; ``lr_mul`` < 1 slows
a layer down (0.01 in the mapping network, StyleGAN sec. 2 / appendix C).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # He gain of leaky ReLU: keeps unit variance through each activation
NOISE_MODES = ("random", "const", "none")
_EPS = 1e-8


def normalize_2nd_moment(x: Tensor, dim: int = 1) -> Tensor:
    """``x / sqrt(mean(x^2) + eps)`` along ``dim`` (StyleGAN's pixel norm of z and of the label embedding)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + _EPS).rsqrt()


def lrelu_with_gain(x: Tensor) -> Tensor:
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


def check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode={noise_mode!r} must be one of {NOISE_MODES} (fresh noise, the stored noise, no noise)")


# ---------------------------------------------------------------------------- resampling


def _fir_kernel(channels: int, gain: float, like: Tensor) -> Tensor:
    """The separable [1, 3, 3, 1] filter (StyleGAN2 appendix B) as a depthwise (C, 1, 4, 4) kernel
    summing to ``gain``."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], device=like.device, dtype=like.dtype)
    kernel = torch.outer(taps, taps)
    return (kernel * (gain / kernel.sum())).expand(channels, 1, 4, 4)


def upsample_2x(x: Tensor) -> Tensor:
    """Double H and W by the [1, 3, 3, 1] filter: bilinear interpolation at half-pixel centres
    (outputs 0.75 / 0.25 mixes of their two nearest inputs), zero outside the border as in the
    paper's upfirdn. A depthwise transposed convolution, so it is twice differentiable (R1, path length)."""
    channels = x.shape[1]
    return F.conv_transpose2d(x, _fir_kernel(channels, 4.0, x), stride=2, padding=1, groups=channels)


def downsample_2x(x: Tensor) -> Tensor:
    """Halve H and W: [1, 3, 3, 1] low-pass filter then keep every second pixel (the paper's
    discriminator resampling), zero padding at the border."""
    channels = x.shape[1]
    return F.conv2d(x, _fir_kernel(channels, 1.0, x), stride=2, padding=1, groups=channels)


# ---------------------------------------------------------------------------- equalized layers


class EqualLinear(nn.Module):
    """Fully connected layer with equalized learning rate.

    Args:
        in_features, out_features: sizes.
        lr_mul: learning-rate multiplier (0.01 in the mapping network).
        bias_init: the bias the layer starts with (1 for the style affines, so styles start at 1).
        activation: ``"lrelu"`` (leaky ReLU 0.2 times sqrt(2)) or None (linear).
    """

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0, bias_init: float = 0.0,
                 activation: str | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        return lrelu_with_gain(x) if self.activation == "lrelu" else x


class EqualConv2d(nn.Module):
    """Convolution with equalized learning rate ('same' padding), optional bias and leaky ReLU (discriminator)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str | None = "lrelu") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.weight.shape[-1] // 2)
        return lrelu_with_gain(x) if self.activation == "lrelu" else x


# ---------------------------------------------------------------------------- synthesis layers


class ModulatedConv2d(nn.Module):
    """Convolution whose weights each sample's style scales (StyleGAN2 sec. 2.2, Fig. 2d).

    The style ``s = A(w)`` (an equalized affine layer, bias 1 at start) scales the input feature
    maps of the weights, eq. 1: ``w'_ijk = s_i * w_ijk``; demodulation, eq. 3: ``w''_ijk = w'_ijk /
    sqrt(sum_{i,k} w'_ijk^2 + eps)``, restores unit output standard deviation for unit input
    (eq. 2 is that standard deviation), replacing StyleGAN's AdaIN without its droplet artefacts.
    Each sample has its own weights, so the batch runs as one grouped convolution (sec. 2.2,
    "fused" implementation): the batch becomes the groups.

    ``up=True`` doubles the resolution first by :func:`upsample_2x`; the official code convolves
    transposed with stride 2 and then filters, ours filters then convolves at the high resolution:
    about 4x the multiply-adds of that one layer, but plain stock torch ops, twice differentiable.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 3,
                 demodulate: bool = True, up: bool = False) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.demodulate, self.up = demodulate, up

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        """``x`` (N, C_in, H, W), ``w`` (N, w_dim) -> (N, C_out, H', W') with H' = 2H when ``up``."""
        n = x.shape[0]
        styles = self.affine(w)  # (N, C_in)
        weight = self.weight[None] * self.weight_gain * styles[:, None, :, None, None]  # eq. 1, (N, out, in, k, k)
        if self.demodulate:
            weight = weight * (weight.square().sum(dim=(2, 3, 4), keepdim=True) + _EPS).rsqrt()  # eq. 3
        if self.up:
            x = upsample_2x(x)
        out_channels, in_channels, k, _ = self.weight.shape
        x = x.reshape(1, n * in_channels, *x.shape[2:])
        x = F.conv2d(x, weight.reshape(n * out_channels, in_channels, k, k), padding=k // 2, groups=n)
        return x.reshape(n, out_channels, *x.shape[2:])


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution, per-pixel noise with a learned per-channel strength, bias and
    leaky ReLU with gain sqrt(2) (StyleGAN2 Fig. 2d: B and b act after the convolution).

    ``noise_mode``: ``"random"`` fresh N(0, 1) noise per sample, ``"const"`` one stored noise
    image (a buffer, deterministic output), ``"none"`` no noise. The strengths start at 0, so
    noise enters only as training finds it useful (as in the official code).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, w_dim, kernel_size=3, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "random") -> Tensor:
        x = self.conv(x, w)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength[None, :, None, None]
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength[None, :, None, None]
        return lrelu_with_gain(x + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation, plus bias (the skip
    generator's tRGB, StyleGAN2 Fig. 7b)."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, img_channels, w_dim, kernel_size=1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(img_channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


# ---------------------------------------------------------------------------- discriminator layers


def _largest_divisor_up_to(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, ProGAN sec. 3; StyleGAN2 config F: group
    size 4, one feature): the batch is split into groups; within each group the standard deviation
    of every feature at every pixel is averaged into one number per group (per feature slice),
    which is appended as an extra constant channel to that group's samples. It lets the
    discriminator see a lack of variety. Sample ``i`` belongs to group ``i mod (N / G)``.

    A batch whose size is not a multiple of ``group_size`` uses the largest group size that
    divides it (the official code refuses such a batch; the last batch of an epoch may be one).
    """

    def __init__(self, group_size: int = 4, num_features: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_features = group_size, num_features

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g, f = _largest_divisor_up_to(n, self.group_size), self.num_features
        y = x.reshape(g, n // g, f, c // f, h, w)
        y = y - y.mean(dim=0)  # deviation from the group mean
        std = (y.square().mean(dim=0) + _EPS).sqrt()  # (N/G, F, C/F, H, W)
        std = std.mean(dim=(2, 3, 4))  # (N/G, F)
        std = std.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # back to (N, F, H, W), sample i -> group i mod N/G
        return torch.cat([x, std], dim=1)
