"""Haematoxylin-eosin-DAB colour deconvolution (Ruifrok & Johnston 2001) on torch tensors.

kornia has no stain deconvolution and scikit-image's ``rgb2hed`` runs on NumPy arrays on the
CPU; this is the same computation (the same stain matrix and log floor as skimage 0.2x's
``separate_stains``) as a batched torch op, so it runs on the GPU inside an attack. Tests pin
it to skimage. ``backend="skimage"`` calls skimage itself (CPU round trip) for users who want
the reference implementation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

# Rows: optical-density directions of haematoxylin, eosin and DAB (skimage.color.rgb_from_hed).
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
# skimage floors intensities at 1e-6 before the log and divides by log(1e-6).
_FLOOR = 1e-6
BACKENDS = ("torch", "skimage")


def rgb_to_hed(rgb: Tensor, backend: str = "torch") -> Tensor:
    """Stain concentrations ``(N, 3, H, W)`` (H, E, D; >= 0) of RGB images ``(N, 3, H, W)`` in [0, 1].

    Equals ``skimage.color.rgb2hed`` channel-last on each image (to float32 rounding).
    """
    if backend not in BACKENDS:
        raise ValueError(f"stain deconvolution backend must be one of {BACKENDS}, got {backend!r}")
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"colour deconvolution needs RGB images (N, 3, H, W), got {tuple(rgb.shape)}")
    if backend == "skimage":
        from skimage.color import rgb2hed

        array = rgb.detach().permute(0, 2, 3, 1).double().cpu().numpy()
        hed = np.stack([rgb2hed(image) for image in array])
        return torch.from_numpy(hed).to(device=rgb.device, dtype=rgb.dtype).permute(0, 3, 1, 2)
    matrix = HED_FROM_RGB.to(device=rgb.device, dtype=rgb.dtype)
    optical_density = rgb.clamp_min(_FLOOR).log() / math.log(_FLOOR)
    return torch.einsum("nchw,cs->nshw", optical_density, matrix).clamp_min(0)
