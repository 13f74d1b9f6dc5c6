"""Macenko and Reinhard stain normalisation to a reference tile, as natural shifts ("the same
slides, normalised to another lab's reference").

- Macenko et al., "A method for normalizing histology slides for quantitative analysis", ISBI 2009
  (:class:`MacenkoNormalisation`): per image, the H and E optical-density vectors are the extreme
  angles (1st / 99th percentile) of the tissue ODs in the plane of their two main eigenvectors;
  the concentrations, scaled to the reference's 99th percentiles, are recomposed with the
  reference's stain vectors.
- Reinhard et al., "Color transfer between images", IEEE CG&A 21(5), 2001
  (:class:`ReinhardNormalisation`): per image, each CIELAB channel is standardised and given the
  reference tile's mean and standard deviation.

Both follow torchstain's NumPy backends (``torchstain.numpy.normalizers``, v1.4: Io = 240,
alpha = 1, beta = 0.15, the published default ``HERef`` / ``maxCRef``, torchstain's sRGB/D65 LAB
conversion, population standard deviations) as batched torch ops: torchstain's torch backend takes
one uint8 image at a time, keeps its reference on the CPU and returns quantised uint8 / int32
(HWC), so it can neither batch on the GPU nor return the float images a shift needs. Tests pin
this module to the NumPy backend (within 1/255 plus float rounding, its uint8 quantisation).

Two deliberate differences, both where torchstain's result is undefined:

- The two eigenvectors get a fixed sign (the tissue's mean projection on each is >= 0). The
  result is invariant to those signs except when the tissue's angles meet the ``atan2`` cut, where
  torchstain's output depends on the sign LAPACK happens to return.
- An image with too little tissue (fewer than ``MIN_TISSUE_FRACTION`` of its pixels, and fewer
  than ``MIN_TISSUE_PIXELS``, with OD >= 0.15 in every channel: a blank or background tile, e.g.
  NCT-CRC-HE's BACK class) or no positive H/E concentration is left unchanged by both shifts
  (torchstain raises on an empty covariance or returns NaN). A *reference* tile like that is an
  error instead: there is no target to normalise to.

Severity is the weight of the normalised image in ``(1 - w) * image + w * normalised`` with
``w = NORMALISATION_WEIGHTS[severity - 1]``; normalisation draws nothing, so ``seed`` is unused.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from advmed.corruptions.base import Shift
from advmed.corruptions.stain_jitter import check_rgb
from advmed.corruptions.stain_reference import (
    CONCENTRATION_PERCENTILE,
    MACENKO_MAX_CONCENTRATIONS,
    MACENKO_STAIN_MATRIX,
    TRANSMITTED_INTENSITY,
    default_reference_tile,
    describe_reference,
    load_reference_tile,
)

NORMALISATION_WEIGHTS = (0.2, 0.4, 0.6, 0.8, 1.0)

# Macenko's constants as torchstain (and Macenko's reference code) use them; Io, the concentration
# percentile and the published target live with the reference tiles (stain_reference.py).
TISSUE_OD = 0.15  # beta: pixels with OD below this in any channel are background
ANGLE_PERCENTILE = 1.0  # alpha: the stain vectors are the 1st / 99th percentile angles

MIN_TISSUE_FRACTION = 0.01
MIN_TISSUE_PIXELS = 8

# sRGB (D65) -> CIE XYZ and the D65 white, the constants of torchstain's rgb2lab.
_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_STD_FLOOR = 1e-6  # a flat LAB channel (uniform tile) maps to the target mean, not to NaN



# --------------------------------------------------------------------------- shared pieces
def _percentile(sorted_values: Tensor, counts: Tensor, q: float) -> Tensor:
    """NumPy's default ("linear") ``q``-th percentile of the first ``counts`` values of each row of
    ``sorted_values`` (..., P), sorted ascending; ``counts`` (...,) >= 1."""
    fraction = q / 100
    position = counts.to(torch.float64) * fraction - fraction  # numpy's virtual index (n - 1) q
    below = position.floor()
    gamma = (position - below).to(sorted_values.dtype)[..., None]
    below = below.long().clamp(0, sorted_values.shape[-1] - 1)
    above = torch.minimum(below + 1, counts - 1).clamp_min(0)
    low = sorted_values.gather(-1, below[..., None])
    high = sorted_values.gather(-1, above[..., None])
    step = high - low
    # numpy interpolates from the nearer end (its _lerp), which rounds differently near gamma = 1
    return torch.where(gamma >= 0.5, high - step * (1 - gamma), low + step * gamma)[..., 0]


def _optical_density(images: Tensor) -> Tensor:
    """torchstain's OD ``-ln((I + 1) / Io)`` of ``images`` in [0, 1] (I = 255 * images), (N, P, 3)."""
    intensity = images.flatten(2).transpose(1, 2) * 255
    return -torch.log((intensity + 1) / TRANSMITTED_INTENSITY)


def _tissue(optical_density: Tensor) -> tuple[Tensor, Tensor]:
    """Tissue pixels (N, P) (OD >= beta in every channel) and whether each image has enough."""
    tissue = (optical_density >= TISSUE_OD).all(-1)
    pixels = optical_density.shape[1]
    needed = min(pixels, max(MIN_TISSUE_PIXELS, math.ceil(MIN_TISSUE_FRACTION * pixels)))
    return tissue, tissue.sum(-1) >= needed


def _blend(images: Tensor, normalised: Tensor, valid: Tensor, severity: int) -> Tensor:
    weight = NORMALISATION_WEIGHTS[severity - 1]
    normalised = normalised.to(images.dtype)
    blended = images + weight * (normalised - images)
    return torch.where(valid[:, None, None, None], blended, images)


def _no_target(what: str, why: str) -> ValueError:
    return ValueError(f"the stain reference {what} cannot be a normalisation target: {why}; pass an H&E tile "
                      "with stained tissue over most of it, or reference=None for the built-in reference")


# --------------------------------------------------------------------------- Macenko
def estimate_macenko(images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Macenko's per-image stain estimate of ``images`` (N, 3, H, W) in [0, 1], as torchstain's
    NumPy backend computes it, batched.

    Returns ``stain_matrix`` (N, 3, 2) (unit OD vectors of H, E), ``concentrations`` (N, 2, H*W)
    (least squares, every pixel), ``max_concentrations`` (N, 2) (their 99th percentiles) and
    ``valid`` (N,) (enough tissue and positive maxima; the other rows are finite but meaningless).
    """
    optical_density = _optical_density(images)
    tissue, valid = _tissue(optical_density)
    counts = tissue.sum(-1)
    weight = tissue.to(optical_density.dtype)[..., None]
    mean = (optical_density * weight).sum(1, keepdim=True) / counts.clamp_min(1)[:, None, None]
    centred = (optical_density - mean) * weight
    covariance = centred.transpose(1, 2) @ centred / (counts - 1).clamp_min(1)[:, None, None]
    eye = torch.eye(3, dtype=covariance.dtype, device=covariance.device)
    covariance = torch.where(valid[:, None, None], covariance, eye)  # blank tiles: keep eigh finite
    _, eigenvectors = torch.linalg.eigh(covariance)  # ascending: the last two span the stain plane
    plane = eigenvectors[..., 1:]
    projections = optical_density @ plane
    # An eigenvector's sign is arbitrary (LAPACK vs cuSOLVER differ): point both at the tissue so
    # that its angles stay away from atan2's cut at +-pi.
    sign = torch.where((projections * weight).sum(1) < 0, -1.0, 1.0).to(plane.dtype)
    plane, projections = plane * sign[:, None, :], projections * sign[:, None, :]
    angles = torch.atan2(projections[..., 1], projections[..., 0])
    angles = angles.masked_fill(~tissue, math.inf).sort(-1).values
    at_least_one = counts.clamp_min(1)
    low = torch.where(valid, _percentile(angles, at_least_one, ANGLE_PERCENTILE), 0.0)
    high = torch.where(valid, _percentile(angles, at_least_one, 100 - ANGLE_PERCENTILE), math.pi / 2)
    v_low = plane @ torch.stack((low.cos(), low.sin()), -1)[..., None]
    v_high = plane @ torch.stack((high.cos(), high.sin()), -1)[..., None]
    # Macenko's heuristic: haematoxylin is the vector with more red OD.
    low_is_h = (v_low[:, 0, 0] > v_high[:, 0, 0])[:, None, None]
    stain_matrix = torch.where(low_is_h, torch.cat((v_low, v_high), -1), torch.cat((v_high, v_low), -1))
    concentrations = torch.linalg.pinv(stain_matrix) @ optical_density.transpose(1, 2)
    pixels = torch.full(concentrations.shape[:2], concentrations.shape[-1], device=concentrations.device)
    max_concentrations = _percentile(concentrations.sort(-1).values, pixels, CONCENTRATION_PERCENTILE)
    valid = valid & (max_concentrations > 0).all(-1) & max_concentrations.isfinite().all(-1)
    return stain_matrix, concentrations, max_concentrations, valid


def macenko_normalise(images: Tensor, stain_matrix: Tensor, max_concentrations: Tensor) -> tuple[Tensor, Tensor]:
    """``images`` (N, 3, H, W) in [0, 1] normalised (Macenko et al. 2009) to the target
    ``stain_matrix`` (3, 2) and ``max_concentrations`` (2,), and which images could be (``valid``).

    Equals torchstain's ``NumpyMacenkoNormalizer.normalize`` (before its uint8 cast) per image;
    computed in float32 at least, on ``images``' device.
    """
    dtype = torch.promote_types(images.dtype, torch.float32)
    _, concentrations, source_max, valid = estimate_macenko(images.to(dtype))
    target_matrix = stain_matrix.to(dtype).to(images.device)
    target_max = max_concentrations.to(dtype).to(images.device)
    concentrations = concentrations * (target_max / source_max.clamp_min(1e-12))[..., None]
    intensity = (TRANSMITTED_INTENSITY * torch.exp(-(target_matrix @ concentrations))).clamp_max(255.0)
    return (intensity / 255).reshape(images.shape), valid


def fit_macenko(tile: Tensor, what: str = "tile") -> tuple[Tensor, Tensor]:
    """The Macenko target (stain matrix (3, 2), 99th-percentile concentrations (2,), float64) of a
    reference ``tile`` (3, H, W) in [0, 1], as torchstain's ``fit``; a clear error for a tile with
    too little tissue (``what`` names it in the message)."""
    stain_matrix, _, max_concentrations, valid = estimate_macenko(tile[None].to(torch.float64))
    if not bool(valid[0]):
        raise _no_target(what, _why_invalid(tile, max_concentrations[0]))
    return stain_matrix[0], max_concentrations[0]


def _why_invalid(tile: Tensor, max_concentrations: Tensor | None = None) -> str:
    tissue, enough = _tissue(_optical_density(tile[None].to(torch.float64)))
    pixels = tissue.shape[1]
    if not bool(enough[0]):
        return (f"only {int(tissue.sum())} of its {pixels} pixels are tissue (optical density >= {TISSUE_OD} in "
                "every channel), too few to estimate stains from (a blank or background tile?)")
    return (f"its 99th-percentile haematoxylin / eosin concentrations are {max_concentrations.tolist()}, "
            "not both positive (not an H&E tile?)")


class MacenkoNormalisation(Shift):
    """Macenko et al. (2009) normalisation to a reference, blended by severity.

    ``reference``: ``None`` for the published target (torchstain's default ``HERef`` / ``maxCRef``,
    from Macenko's reference implementation), or an RGB image file / (3, H, W) tensor to fit.
    Images with too little tissue pass unchanged (module docstring).
    """

    name = "macenko"
    modalities = frozenset({"histology"})

    def __init__(self, reference: str | Path | Tensor | None = None) -> None:
        if reference is None:
            self.stain_matrix, self.max_concentrations = MACENKO_STAIN_MATRIX, MACENKO_MAX_CONCENTRATIONS
        else:
            self.stain_matrix, self.max_concentrations = fit_macenko(load_reference_tile(reference),
                                                                     describe_reference(reference))

    def apply(self, images: Tensor, severity: int, seed: int) -> Tensor:
        check_rgb(images, self.name)
        normalised, valid = macenko_normalise(images, self.stain_matrix, self.max_concentrations)
        return _blend(images, normalised, valid, severity)


# --------------------------------------------------------------------------- Reinhard
def rgb_to_lab(images: Tensor) -> Tensor:
    """CIELAB (L in 0..100; a, b) ``(N, 3, H, W)`` of sRGB ``images`` in [0, 1], with torchstain's
    constants (D65 white, 0.008856 / 7.787 linear segment)."""
    linear = torch.where(images > 0.04045, ((images.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4, images / 12.92)
    matrix = _RGB_TO_XYZ.to(images.dtype).to(images.device)
    white = _D65_WHITE.to(images.dtype).to(images.device)[:, None, None]
    xyz = torch.einsum("nchw,kc->nkhw", linear, matrix) / white
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0.008856) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack((116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])), 1)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """sRGB in [0, 1] of CIELAB ``lab`` (N, 3, H, W); inverse of :func:`rgb_to_lab`, clipped."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack((lab[:, 1] / 500 + fy, fy, fy - lab[:, 2] / 200), 1)
    white = _D65_WHITE.to(lab.dtype).to(lab.device)[:, None, None]
    xyz = torch.where(f > 0.2068966, f**3, (f - 16 / 116) / 7.787) * white
    linear = torch.einsum("nkhw,ck->nchw", xyz, _XYZ_TO_RGB.to(lab.dtype).to(lab.device))
    rgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, linear * 12.92)
    return rgb.clamp(0.0, 1.0)


def lab_statistics(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image LAB means and population standard deviations, each (N, 3) (torchstain's stats)."""
    lab = rgb_to_lab(images)
    return lab.mean((2, 3)), lab.std((2, 3), correction=0)


def reinhard_normalise(images: Tensor, means: Tensor, stds: Tensor) -> tuple[Tensor, Tensor]:
    """``images`` (N, 3, H, W) in [0, 1] with each LAB channel given the target ``means`` and
    ``stds`` (3,) (Reinhard et al. 2001), and which images have enough tissue (``valid``).

    Equals torchstain's ``NumpyReinhardNormalizer.normalize`` (before its uint8 cast) per image.
    """
    dtype = torch.promote_types(images.dtype, torch.float32)
    images = images.to(dtype)
    lab = rgb_to_lab(images)
    source_means, source_stds = lab.mean((2, 3)), lab.std((2, 3), correction=0)
    scale = stds.to(dtype).to(images.device) / source_stds.clamp_min(_STD_FLOOR)
    target_means = means.to(dtype).to(images.device)
    shifted = (lab - source_means[..., None, None]) * scale[..., None, None] + target_means[..., None, None]
    _, valid = _tissue(_optical_density(images))
    return lab_to_rgb(shifted), valid


def fit_reinhard(tile: Tensor, what: str = "tile") -> tuple[Tensor, Tensor]:
    """LAB means and standard deviations (3,) each (float64) of a reference ``tile`` (3, H, W); a
    clear error for a tile with too little tissue or a flat channel."""
    tile = tile[None].to(torch.float64)
    _, enough = _tissue(_optical_density(tile))
    if not bool(enough[0]):
        raise _no_target(what, _why_invalid(tile[0]))
    means, stds = lab_statistics(tile)
    if bool((stds[0] < _STD_FLOOR).any()):
        raise _no_target(what, f"its LAB standard deviations are {stds[0].tolist()} (a flat, single-colour tile)")
    return means[0], stds[0]


class ReinhardNormalisation(Shift):
    """Reinhard et al. (2001) colour transfer in CIELAB to a reference, blended by severity.

    ``reference``: ``None`` for the LAB statistics of :func:`default_reference_tile` (tissue
    stained with the published Macenko reference stain, so that both normalisers share one
    target), or an RGB image file / (3, H, W) tensor. Images with too little tissue pass unchanged.
    """

    name = "reinhard"
    modalities = frozenset({"histology"})

    def __init__(self, reference: str | Path | Tensor | None = None) -> None:
        if reference is None:
            self.means, self.stds = fit_reinhard(default_reference_tile(), "built-in tile")
        else:
            self.means, self.stds = fit_reinhard(load_reference_tile(reference), describe_reference(reference))

    def apply(self, images: Tensor, severity: int, seed: int) -> Tensor:
        check_rgb(images, self.name)
        normalised, valid = reinhard_normalise(images, self.means, self.stds)
        return _blend(images, normalised, valid, severity)


__all__ = [
    "MACENKO_MAX_CONCENTRATIONS",
    "MACENKO_STAIN_MATRIX",
    "MIN_TISSUE_FRACTION",
    "MIN_TISSUE_PIXELS",
    "NORMALISATION_WEIGHTS",
    "MacenkoNormalisation",
    "ReinhardNormalisation",
    "default_reference_tile",
    "estimate_macenko",
    "fit_macenko",
    "fit_reinhard",
    "lab_statistics",
    "lab_to_rgb",
    "load_reference_tile",
    "macenko_normalise",
    "reinhard_normalise",
    "rgb_to_lab",
]
