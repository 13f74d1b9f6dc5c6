"""Training pairs and the bicubic baseline of the SRGAN x2 step (Lockshin et al. 2022, sec. 3.2).

The paper's ``I_HR`` is the 224 px training tile resized to 256 px and its ``I_LR`` the *same tile*
downscaled to 128 px (not ``I_HR`` downscaled), so that SRGAN learns 128 -> 256, the step that
follows the 128 px StyleGAN2. :func:`bicubic_upscale` is the interpolation baseline that the
paper's Fig. 5 and a PSNR/SSIM table compare SRGAN against.

Resizing is ``torch.nn.functional.interpolate`` with ``antialias=True`` for bilinear and bicubic
(without it, downscaling aliases: it samples instead of filtering); ``area`` averages pixels, which
is its own anti-aliasing. Bicubic overshoots at edges, so every output is clamped to [0, 1]
(DESIGN contract 1): these are data, not a training graph.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

KERNELS = ("bicubic", "bilinear", "area")


def _check_images(images: Tensor, name: str) -> None:
    if not isinstance(images, Tensor) or images.ndim not in (3, 4) or not images.is_floating_point():
        got = f"{images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a float tensor (C, H, W) or (N, C, H, W) in [0, 1], got a {got} "
                         "(convert uint8 images with x.float() / 255)")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"{name} must be in [0, 1], got values in [{images.min().item():.4g}, {images.max().item():.4g}]")


def _check_size(value: int, name: str) -> None:
    # bool is an int, but True pixels is a mistake
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1 (pixels)")


def resize(images: Tensor, size: int | tuple[int, int], kernel: str = "bicubic") -> Tensor:
    """``images`` (C, H, W) or (N, C, H, W) in [0, 1] resized to ``size`` (an int: square) with
    ``kernel``, anti-aliased, clamped to [0, 1]."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} must be one of {KERNELS}")
    height, width = size if isinstance(size, tuple) and len(size) == 2 else (size, size)
    _check_size(height, "size")
    _check_size(width, "size")
    _check_images(images, "images")
    batch = images if images.ndim == 4 else images.unsqueeze(0)
    if kernel == "area":
        out = F.interpolate(batch, size=(height, width), mode="area")
    else:
        out = F.interpolate(batch, size=(height, width), mode=kernel, align_corners=False, antialias=True)
    out = out.clamp(0.0, 1.0)
    return out if images.ndim == 4 else out.squeeze(0)


def make_sr_pair(tile: Tensor, hr_size: int = 256, lr_size: int = 128, hr_kernel: str = "bicubic",
                 lr_kernel: str = "bicubic") -> tuple[Tensor, Tensor]:
    """``(I_HR, I_LR)`` from a high-resolution ``tile`` (C, H, W) or (N, C, H, W) in [0, 1]: the tile
    resized to ``hr_size`` with ``hr_kernel`` and, independently, to ``lr_size`` with ``lr_kernel``
    (paper: 224 px -> 256 and 128)."""
    _check_size(hr_size, "hr_size")
    _check_size(lr_size, "lr_size")
    return resize(tile, hr_size, hr_kernel), resize(tile, lr_size, lr_kernel)


def bicubic_upscale(images: Tensor, scale: int = 2) -> Tensor:
    """The interpolation baseline: ``images`` (C, H, W) or (N, C, H, W) in [0, 1] enlarged ``scale``
    times, bicubic, clamped to [0, 1]."""
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale={scale!r} must be an integer >= 1")
    _check_images(images, "images")
    return resize(images, (images.shape[-2] * scale, images.shape[-1] * scale), "bicubic")
