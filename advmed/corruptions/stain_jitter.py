"""HED stain jitter (Tellez et al. 2019) as a natural shift (:class:`HEDJitter`) and as a training
augmentation (:class:`RandomStainShift`).

D. Tellez et al., "Quantifying the effects of data augmentation and stain color normalization in
convolutional neural networks for computational pathology", Medical Image Analysis 58 (2019):
deconvolve RGB into haematoxylin, eosin and DAB densities with the Ruifrok & Johnston (2001)
matrix, draw per image and per stain ``alpha ~ U[1 - sigma, 1 + sigma]`` and
``beta ~ U[-sigma, sigma]``, set ``stain <- alpha * stain + beta`` and recompose.

Units. The densities here are natural-log optical densities along the Ruifrok stain vectors
(``-ln I @ HED_FROM_RGB``), i.e. skimage's ``rgb2hed`` times ``ln(1e6)`` before its clamp at 0 --
the unit of torchstain's Macenko augmentor (whose ``sigma2`` is a bias in the same OD units).
Tellez's own code adds ``beta`` in a differently scaled HED space, so only the multiplicative part
carries over number for number; the severities are named after his "HED-light" (0.05) and
"HED-strong" (0.2) and measured in STAIN_NOTES.md.

The deconvolution is not clamped at 0 (unlike ``rgb2hed``): pixels off the H/E/D cone (grey,
mucin: a third of the project's synthetic histology pixels have a negative eosin density) then
round-trip exactly, so ``alpha = 1, beta = 0`` is the identity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from advmed.corruptions.base import Shift
from advmed.corruptions.colour_deconvolution import HED_FROM_RGB, RGB_FROM_HED

# Severity 1..5 -> sigma (the half-width of both alpha - 1 and beta). 2 and 5 are Tellez's
# HED-light and HED-strong; 1 is below light (barely visible: a sanity floor); 3 and 4 split
# light..strong evenly. STAIN_NOTES.md lists the measured colour change per severity.
HED_JITTER_SIGMAS = (0.02, 0.05, 0.1, 0.15, 0.2)

# skimage's intensity floor before the log (separate_stains), also used by colour_deconvolution.
_INTENSITY_FLOOR = 1e-6
# skimage's HED unit in these OD units: rgb2hed = (stain_densities / SKIMAGE_HED_UNIT).clamp_min(0).
SKIMAGE_HED_UNIT = -math.log(_INTENSITY_FLOOR)


def check_rgb(images: Tensor, name: str) -> None:
    """A clear error when ``images`` are not 3-channel RGB (a stain shift on CT or X-ray data)."""
    if images.ndim != 4 or images.shape[1] != 3:
        channels = images.shape[1] if images.ndim == 4 else "no channel axis"
        raise ValueError(
            f"stain shifts are defined for H&E (3-channel RGB) data, got {channels} channel"
            f"{'' if channels == 1 else 's'} (images {tuple(images.shape)}) in '{name}'; use stain shifts "
            "only on histology data (modality 'histology'), not on CT or X-ray batches")


def stain_densities(images: Tensor) -> Tensor:
    """Haematoxylin, eosin and DAB optical densities ``(N, 3, H, W)`` of RGB ``images`` in [0, 1].

    Natural-log OD along the Ruifrok & Johnston (2001) stain vectors, not clamped at 0:
    ``rgb_to_hed(images) * ln(1e6)`` equals ``stain_densities(images).clamp_min(0)``.
    """
    optical_density = -images.clamp_min(_INTENSITY_FLOOR).log()
    return torch.einsum("nchw,cs->nshw", optical_density, HED_FROM_RGB.to(images.dtype).to(images.device))


def compose_stains(densities: Tensor) -> Tensor:
    """RGB images in [0, 1] of stain ``densities`` ``(N, 3, H, W)`` (Beer-Lambert; inverse of
    :func:`stain_densities`), as skimage's ``hed2rgb`` for ``densities / ln(1e6)``."""
    matrix = RGB_FROM_HED.to(densities.dtype).to(densities.device)
    optical_density = torch.einsum("nshw,sc->nchw", densities, matrix)
    return torch.exp(-optical_density).clamp(0.0, 1.0)


def draw_jitter(sigma: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Per-image, per-stain ``alpha ~ U[1 - sigma, 1 + sigma]`` and ``beta ~ U[-sigma, sigma]``,
    each ``(N, 3)``, for per-image strengths ``sigma`` ``(N,)`` (on ``sigma``'s device)."""
    shape = (len(sigma), 2, 3)
    unit = torch.rand(shape, generator=generator, device=sigma.device, dtype=sigma.dtype) * 2 - 1
    spread = unit * sigma[:, None, None]
    return 1 + spread[:, 0], spread[:, 1]


def jitter_stains(images: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """``images`` (N, 3, H, W) in [0, 1] with each image's H, E, D densities set to
    ``alpha * density + beta`` (``alpha``, ``beta``: (N, 3)). Computed in float32 at least."""
    dtype = torch.promote_types(images.dtype, torch.float32)
    densities = stain_densities(images.to(dtype))
    # cast before the move: a float64 draw cannot go to a device without float64 (MPS)
    alpha, beta = alpha.to(dtype).to(images.device), beta.to(dtype).to(images.device)
    return compose_stains(densities * alpha[:, :, None, None] + beta[:, :, None, None])


class HEDJitter(Shift):
    """Tellez et al. (2019) HED jitter at ``sigma = HED_JITTER_SIGMAS[severity - 1]``.

    Each image gets its own ``alpha``, ``beta`` for each of H, E and D (Tellez jitters all three),
    drawn from a CPU ``torch.Generator`` seeded with ``seed``: the global RNG is untouched and the
    result does not depend on the device.
    """

    name = "hed_jitter"
    modalities = frozenset({"histology"})

    def apply(self, images: Tensor, severity: int, seed: int) -> Tensor:
        check_rgb(images, self.name)
        generator = torch.Generator().manual_seed(seed)
        sigma = torch.full((len(images),), HED_JITTER_SIGMAS[severity - 1], dtype=torch.float64)
        alpha, beta = draw_jitter(sigma, generator)
        return jitter_stains(images, alpha, beta)


class RandomStainShift(nn.Module):
    """Training augmentation: HED jitter (Tellez et al. 2019) with a random strength per image.

    With probability ``p`` an image is jittered with ``sigma ~ U[sigma[0], sigma[1]]`` and then
    ``alpha``, ``beta`` as in :class:`HEDJitter`; the others pass through bit for bit. Float
    ``(N, 3, H, W)`` [0, 1] batches on any device. Like kornia's augmentations (and
    ``RandomRot90``) it draws from the global RNG of the batch's device, so ``seed_everything``
    governs it; the evaluation shift :class:`HEDJitter` is the seeded one.

    ``sigma=(0.0, 0.05)`` (the default) reaches Tellez's HED-light; ``(0.0, 0.2)`` HED-strong.
    """

    def __init__(self, p: float = 0.5, sigma: Sequence[float] = (0.0, 0.05)) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomStainShift p={p} must be a probability in [0, 1]")
        bounds = tuple(float(v) for v in sigma) if isinstance(sigma, Iterable) else (sigma,)
        if len(bounds) != 2 or not 0.0 <= bounds[0] <= bounds[1] < 1.0:
            raise ValueError(f"RandomStainShift sigma={bounds if len(bounds) != 1 else sigma} must be a range "
                             "(low, high) with 0 <= low <= high < 1, e.g. (0.0, 0.05) (Tellez's HED-light is "
                             "0.05, HED-strong 0.2)")
        self.p, self.sigma = float(p), bounds

    def forward(self, x: Tensor) -> Tensor:
        check_rgb(x, type(self).__name__)
        n = len(x)
        chosen = torch.rand(n, device=x.device) < self.p
        low, high = self.sigma
        sigma = low + (high - low) * torch.rand(n, device=x.device)
        alpha, beta = draw_jitter(sigma)
        jittered = jitter_stains(x, alpha, beta).to(x.dtype)
        return torch.where(chosen[:, None, None, None], jittered, x)

    def extra_repr(self) -> str:
        return f"p={self.p}, sigma={self.sigma}"


__all__ = [
    "HED_JITTER_SIGMAS",
    "HEDJitter",
    "RandomStainShift",
    "SKIMAGE_HED_UNIT",
    "check_rgb",
    "compose_stains",
    "draw_jitter",
    "jitter_stains",
    "stain_densities",
]
