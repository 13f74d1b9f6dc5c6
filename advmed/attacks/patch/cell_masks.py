"""Cell-shaped patch masks for SNAP (Kumar et al.): many small irregular ellipses of nucleus size.

A blob is an ellipse (random size, axis ratio and orientation) whose radius is modulated by two
low harmonics, ``r(phi) = r0 * (1 + a2 cos(2 phi + p2) + a3 cos(3 phi + p3))``, which gives the
slightly lobed outline of a nucleus. Blobs are added one at a time and kept while the union
stays within the area budget, so the covered fraction never exceeds ``area_fraction``. Centres
are uniform over the image or drawn where the haematoxylin density (nuclei) is high.

Written here because no library generates such masks; everything is batched torch on the
device of the images, and all randomness comes from the caller's generator.
"""

from __future__ import annotations

import math

import kornia
import torch
from torch import Tensor

from advmed.corruptions.colour_deconvolution import rgb_to_hed

PLACEMENTS = ("random", "nuclei")
# Attempts per blob the budget needs on average: overlapping or oversized blobs are rejected.
_ATTEMPTS_PER_BLOB = 3
_MAX_ATTEMPTS = 1024


def nucleus_density(x: Tensor, radius: float, backend: str = "torch") -> Tensor:
    """Where nuclei are: the haematoxylin concentration of colour deconvolution, blurred at the
    blob scale (``radius`` px) and shifted to be >= 0; ``(N, H, W)``. Grey images use darkness."""
    if x.shape[1] == 3:
        haematoxylin = rgb_to_hed(x.float(), backend)[:, :1]
    else:
        haematoxylin = 1 - x.float().mean(1, keepdim=True)
    sigma = max(radius / 2, 0.5)
    kernel = 2 * math.ceil(2 * sigma) + 1
    blurred = kornia.filters.gaussian_blur2d(haematoxylin, (kernel, kernel), (sigma, sigma), border_type="reflect")
    blurred = blurred[:, 0]
    return blurred - blurred.flatten(1).amin(1).view(-1, 1, 1)


def cell_masks(
    n: int,
    height: int,
    width: int,
    area_fraction: float,
    radius: tuple[float, float],
    aspect: tuple[float, float] = (0.6, 1.0),
    irregularity: float = 0.15,
    max_blobs: int | None = None,
    density: Tensor | None = None,
    density_power: float = 4.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Bool masks ``(N, 1, H, W)`` made of cell-shaped blobs covering at most ``area_fraction``.

    Args:
        n, height, width: number and size of the masks.
        area_fraction: the budget: covered pixels / all pixels, in (0, 1].
        radius: (min, max) blob radius as a fraction of the shorter image side.
        aspect: (min, max) ratio of the short to the long axis, in (0, 1].
        irregularity: amplitude of the 2nd and 3rd harmonic of the outline, in [0, 0.5).
        max_blobs: at most this many blobs per mask; None: as many as the budget allows.
        density: ``(N, H, W)`` >= 0: centres drawn with probability ~ ``density ** density_power``
            (e.g. :func:`nucleus_density`); None: uniform.
        generator: the source of every random number (a seeded generator gives the same masks).
    """
    side = min(height, width)
    r_min, r_max = (r * side for r in radius)
    budget = area_fraction * height * width
    smallest = max(1.0, math.pi * r_min**2 * aspect[0])
    attempts = _ATTEMPTS_PER_BLOB * math.ceil(budget / smallest) + 8
    if max_blobs is not None:
        attempts = min(attempts, _ATTEMPTS_PER_BLOB * max_blobs + 8)
    attempts = min(attempts, _MAX_ATTEMPTS)

    def uniform(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, device=device)

    if density is None:
        centres = (uniform(n, attempts) * (height * width)).long().clamp_max(height * width - 1)
    else:
        weights = density.flatten(1).double().clamp_min(0) ** density_power + 1e-12
        centres = torch.multinomial(weights, attempts, replacement=True, generator=generator)
    cy, cx = (centres // width).float(), (centres % width).float()
    shape = uniform(n, attempts, 7)
    r0 = r_min + (r_max - r_min) * shape[..., 0]
    ratio = aspect[0] + (aspect[1] - aspect[0]) * shape[..., 1]
    angle = math.pi * shape[..., 2]
    a2, a3 = (irregularity * (2 * shape[..., i] - 1) for i in (3, 4))
    p2, p3 = (2 * math.pi * shape[..., i] for i in (5, 6))

    yy = torch.arange(height, device=device, dtype=torch.float32).view(1, -1, 1)
    xx = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, -1)
    blobs = torch.stack([cy, cx, r0, ratio, angle, a2, a3, p2, p3], dim=-1)  # (N, attempts, 9)
    covered = torch.zeros(n, height, width, dtype=torch.bool, device=device)
    placed = torch.zeros(n, dtype=torch.long, device=device)
    limit = max_blobs if max_blobs is not None else attempts
    for k in range(attempts):
        y0, x0, r, q, theta, h2, h3, f2, f3 = blobs[:, k, :, None, None].unbind(1)  # each (N, 1, 1)
        dy, dx = yy - y0, xx - x0
        along = dx * torch.cos(theta) + dy * torch.sin(theta)
        across = (-dx * torch.sin(theta) + dy * torch.cos(theta)) / q
        phi = torch.atan2(across, along)
        outline = r * (1 + h2 * torch.cos(2 * phi + f2) + h3 * torch.cos(3 * phi + f3))
        # The centre pixel always belongs to its blob, so even sub-pixel blobs cover something.
        blob = torch.hypot(along, across) <= outline.clamp_min(0.5)
        grown = covered | blob
        accept = (grown.flatten(1).sum(1) <= budget) & (placed < limit)
        covered = torch.where(accept.view(n, 1, 1), grown, covered)
        placed += accept.long()
        room = budget - covered.flatten(1).sum(1)
        if bool(((room < smallest) | (placed >= limit)).all()):
            break
    return covered.unsqueeze(1)
