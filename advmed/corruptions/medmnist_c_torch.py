"""Batched torch versions of the MedMNIST-C corruptions whose uint8 output they reproduce exactly.

MedMNIST-C (Di Salvo et al., 2024) corrupts one PIL image at a time through Pillow, torchvision,
scikit-image or OpenCV. Each function here takes a batch of images ``(N, C, H, W)`` on any device
as *levels*: MedMNIST-C's uint8 pixel values held in a float32 tensor (integers 0..255, which
spares the uint8 round trips), and redoes the same arithmetic, in the same precision and order, so
that it gives the same uint8 pixels as medmnistc's class (``tests/corruptions/test_medmnist_c.py``
checks every severity of every modality on random and on smooth images):

- ``Brightness`` / ``Contrast``: Pillow's ``ImageEnhance``, i.e. ``Image.blend(degenerate, img, f)``,
  which computes ``in1 + f * (in2 - in1)`` in C ``float`` and truncates (clipping when f > 1);
  Contrast's degenerate image is the rounded mean of the image's luma (``convert('L')``, integer
  ITU-R 601-2 weights 19595, 38470, 7471 / 65536).
- ``GammaCorrection``: torchvision's PIL ``adjust_gamma``, a 256-entry table built in Python floats.
- ``Saturate``: scikit-image's ``rgb2hsv`` / ``hsv2rgb`` in float64, operation by operation.
- ``Pixelate``: Pillow's BOX ``resize`` down and up, with Pillow's fixed-point coefficients
  (22 fractional bits, horizontal pass then vertical, each rounded and clipped to 8 bits), applied
  as float64 matrix products, exact because every value is an integer below 2**53.
- ``GaussianBlur``: torchvision's ``gaussian_blur`` itself, called on the whole uint8 batch instead
  of one image (the code path medmnistc's PIL call takes after ``pil_to_tensor``, same layout).
- ``DefocusBlur``: OpenCV's float64 ``filter2D`` with the same disk kernel, as a float64 torch
  convolution (see :func:`defocus_blur` for why another summation order gives the same pixels).

Brightness, contrast, gamma, saturation and pixelation are integer or element-wise IEEE arithmetic
(no floating-point reduction), so they give the same pixels on any device. The two blurs are
convolutions whose summation order belongs to the backend: on the CPU they match medmnistc in every
test; on a GPU (cuDNN: another order, TF32 for float32) that is not checked. ``TorchCorruption``
records both facts, and which versions beat medmnistc's per-image loop on a CPU, for the choice of
:mod:`advmed.corruptions.medmnist_c`'s ``auto`` backend.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# Pillow's resampling precision (libImaging/Resample.c: PRECISION_BITS = 32 - 8 - 2).
_PRECISION_BITS = 22


def luma(levels: Tensor) -> Tensor:
    """Pillow's RGB -> L of ``(N, 3, H, W)`` levels, in integers: ``(19595 R + 38470 G + 7471 B +
    0x8000) >> 16``; ``(N, 1, H, W)`` float32 levels."""
    x = levels.to(torch.int32)
    y = (x[:, 0] * 19595 + x[:, 1] * 38470 + x[:, 2] * 7471 + 0x8000) >> 16
    return y.unsqueeze(1).to(torch.float32)


def _blend(degenerate: Tensor | None, levels: Tensor, factor: float) -> Tensor:
    """Pillow's ``Image.blend(degenerate, img, factor)`` (libImaging/Blend.c): ``in1 + f * (in2 - in1)``
    in C float, a multiply then an add as written, truncated to uint8 (clipped to [0, 255] when
    extrapolating, which a convex blend never needs). ``degenerate`` None: a black image, whose
    ``0 + f * (in2 - 0)`` is ``f * in2`` exactly."""
    alpha = torch.tensor(factor, dtype=torch.float32, device=levels.device)
    x = levels.to(torch.float32)
    value = x * alpha if degenerate is None else degenerate + alpha * (x - degenerate)
    return value.clamp_(0.0, 255.0).trunc_()


def brightness(levels: Tensor, factor: float) -> Tensor:
    """``ImageEnhance.Brightness(img).enhance(factor)``: a blend with a black image."""
    return _blend(None, levels, factor)


def contrast(levels: Tensor, factor: float) -> Tensor:
    """``ImageEnhance.Contrast(img).enhance(factor)``: a blend with a flat image at the rounded mean
    luma of each image (``int(mean + 0.5)``, the mean an exact int64 sum over a float64 count)."""
    grey = luma(levels) if levels.shape[1] == 3 else levels
    total = grey.to(torch.int64).sum(dim=(1, 2, 3), keepdim=True)
    mean = torch.floor(total.to(torch.float64) / float(grey[0].numel()) + 0.5)
    return _blend(mean.to(torch.float32), levels, factor)


@functools.lru_cache(maxsize=64)
def _gamma_table(gamma: float) -> tuple[int, ...]:
    # torchvision's F_pil.adjust_gamma with gain=1, in the same Python float expression
    return tuple(int((255 + 1 - 1e-3) * 1 * pow(ele / 255.0, gamma)) for ele in range(256))


def gamma_correction(levels: Tensor, gamma: float) -> Tensor:
    """``torchvision.transforms.functional.adjust_gamma(pil_img, gamma, gain=1)``: a lookup table."""
    table = torch.tensor(_gamma_table(float(gamma)), dtype=torch.float32, device=levels.device)
    return table[levels.to(torch.int64)]


def saturate(levels: Tensor, amount: float) -> Tensor:
    """medmnistc's ``Saturate``: ``rgb2hsv`` of ``img / 255.``, saturation + ``amount`` clipped to
    [0, 1], ``hsv2rgb``, ``clip(0, 1) * 255`` truncated; scikit-image's float64 steps in its order.
    RGB images only."""
    x = levels.to(torch.float64) / 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = torch.maximum(torch.maximum(r, g), b)
    delta = v - torch.minimum(torch.minimum(r, g), b)
    flat = delta == 0
    s = torch.where(flat, 0.0, delta / v)
    # hue: where several channels equal the maximum, skimage's later assignment wins (blue over green over red)
    h = (g - b) / delta
    h = torch.where(g == v, 2.0 + (b - r) / delta, h)
    h = torch.where(b == v, 4.0 + (r - g) / delta, h)
    h = h / 6.0
    h = torch.where(h < 0, h + 1.0, h)  # numpy's `% 1.0` for h in (-1, 1): fmod is exact, then one rounded add
    h = torch.where(flat, 0.0, h)
    s = torch.clamp(s + amount, 0.0, 1.0)
    # hsv2rgb
    h6 = h * 6
    hi = torch.floor(h6)
    f = h6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = hi.to(torch.uint8).remainder(6).to(torch.int64)
    choices = torch.stack([
        torch.stack((v, t, p)), torch.stack((q, v, p)), torch.stack((p, v, t)),
        torch.stack((p, q, v)), torch.stack((t, p, v)), torch.stack((v, p, q)),
    ])  # (6, 3, N, H, W)
    index = sector.unsqueeze(0).unsqueeze(0).expand(1, 3, *sector.shape)
    rgb = torch.gather(choices, 0, index).squeeze(0).transpose(0, 1)  # (N, 3, H, W)
    return (rgb.clamp(0.0, 1.0) * 255).trunc_().to(torch.float32)


@functools.lru_cache(maxsize=256)
def _box_weights(in_size: int, out_size: int) -> tuple[tuple[int, ...], ...]:
    """Pillow's fixed-point BOX coefficients (Resample.c: precompute_coeffs, normalize_coeffs_8bpc)
    for resizing ``in_size`` pixels to ``out_size``: one row of ``in_size`` integer weights per output
    pixel. Python floats are C doubles, so the same expressions give the same numbers."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    rows = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ss = 1.0 / filterscale
        weights = []
        for x in range(xmax):
            arg = (x + xmin - center + 0.5) * ss
            weights.append(1.0 if -0.5 < arg <= 0.5 else 0.0)
        total = sum(weights)  # a sum of ones and zeros: exact in any order
        weights = [w / total if total != 0.0 else w for w in weights]
        row = [0] * in_size
        for x, w in enumerate(weights):
            row[xmin + x] = int(-0.5 + w * (1 << _PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << _PRECISION_BITS))
        rows.append(tuple(row))
    return tuple(rows)


@functools.lru_cache(maxsize=256)
def _box_matrix(in_size: int, out_size: int) -> Tensor:
    return torch.tensor(_box_weights(in_size, out_size), dtype=torch.float64)


def _resample_pass(x: Tensor, in_size: int, out_size: int, dim: int) -> Tensor:
    """One of Pillow's 8-bit passes along ``dim`` (-1: horizontal, -2: vertical) of integer-valued
    float64 images: ``clip8((2**21 + sum(k * pixel)) >> 22)``."""
    if in_size == out_size:  # Pillow skips the pass (its coefficients would be the identity anyway)
        return x
    weights = _box_matrix(in_size, out_size).to(x.device)
    if dim == -1:
        acc = x @ weights.T
    else:
        acc = weights @ x
    acc = torch.floor((acc + (1 << (_PRECISION_BITS - 1))) / (1 << _PRECISION_BITS))
    return acc.clamp_(0.0, 255.0)


def _resize_box(x: Tensor, height: int, width: int) -> Tensor:
    """``PIL.Image.resize((width, height), Image.BOX)`` of integer-valued float64 images."""
    x = _resample_pass(x, x.shape[-1], width, dim=-1)
    return _resample_pass(x, x.shape[-2], height, dim=-2)


def pixelate(levels: Tensor, factor: float) -> Tensor:
    """medmnistc's ``Pixelate``: BOX resize to ``int(side * factor)`` and back."""
    height, width = levels.shape[-2:]
    x = levels.to(torch.float64)
    x = _resize_box(x, int(height * factor), int(width * factor))
    return _resize_box(x, height, width).to(torch.float32)


def gaussian_blur(levels: Tensor, kernel_size: int) -> Tensor:
    """medmnistc's ``GaussianBlur``: torchvision's ``gaussian_blur`` (sigma from the kernel size) on
    the batch as uint8, laid out as medmnistc's call lays out one image: ``pil_to_tensor`` gives an
    RGB image as a channels-last view, and the layout picks the convolution's algorithm (a
    (N, 1, H, W) batch with channels-last strides sums in another order: 1-grey-level differences).
    RGB only."""
    from torchvision.transforms import functional as tvf  # an advmed dependency, loaded when first blurred

    pixels = levels.to(torch.uint8).contiguous(memory_format=torch.channels_last)
    return tvf.gaussian_blur(pixels, kernel_size=[int(kernel_size)] * 2).to(torch.float32).contiguous()


@functools.lru_cache(maxsize=16)
def _disk_kernel(radius: float, alias_blur: float) -> tuple[tuple[float, ...], ...]:
    """MedMNIST-C's defocus kernel (medmnistc.corruptions.filter.disk, the ImageNet-C one): a float32
    disk of ``radius`` on a 17 x 17 grid (larger for radii over 8), normalised, then smoothed by
    OpenCV's 3 x 3 Gaussian with sigma ``alias_blur``. Built with OpenCV as medmnistc builds it."""
    import cv2  # an advmed dependency; imported on first use so that importing the corruptions stays light
    import numpy as np

    half = 8 if radius <= 8 else int(radius)
    grid = np.arange(-half, half + 1)
    xs, ys = np.meshgrid(grid, grid)
    disk = np.array((xs**2 + ys**2) <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    smoothed = cv2.GaussianBlur(disk, ksize=(3, 3) if radius <= 8 else (5, 5), sigmaX=alias_blur)
    return tuple(map(tuple, smoothed.astype(np.float64).tolist()))


@functools.lru_cache(maxsize=16)
def _defocus_kernel(radius: float, alias_blur: float) -> Tensor:
    """The disk kernel without its all-zero outer rows and columns (the 17 x 17 grid is wider than
    small disks): zero taps add nothing to a sum, and a smaller kernel needs less padding."""
    kernel = torch.tensor(_disk_kernel(radius, alias_blur), dtype=torch.float64)
    centre = kernel.shape[-1] // 2
    rows, cols = torch.nonzero(kernel, as_tuple=True)
    half = int(max((rows - centre).abs().max(), (cols - centre).abs().max()))
    return kernel[centre - half:centre + half + 1, centre - half:centre + half + 1].contiguous()


def defocus_blur(levels: Tensor, param: tuple[float, float]) -> Tensor:
    """medmnistc's ``DefocusBlur``: ``img / 255.`` filtered channel by channel with the disk kernel
    (OpenCV ``filter2D``, float64, border reflect-101 = torch's ``reflect``), ``clip(0, 1) * 255``
    truncated. The float64 sums run in another order than OpenCV's, but a pixel can only change where
    ``255 * sum`` lies within ~1e-13 of an integer; a flat region, where it would be an integer if
    the kernel summed to 1, is ``|sum - 1| >= 3.3e-9`` away for MedMNIST-C's five kernels (checked
    by the tests), and no test image, random or smooth, has shown a difference."""
    radius, alias_blur = param
    kernel = _defocus_kernel(float(radius), float(alias_blur)).to(levels.device)
    n, c, h, w = levels.shape
    x = levels.to(torch.float64) / 255.0
    pad = kernel.shape[-1] // 2
    x = torch.nn.functional.pad(x.reshape(n * c, 1, h, w), [pad] * 4, mode="reflect")
    out = torch.nn.functional.conv2d(x, kernel[None, None]).reshape(n, c, h, w)
    return (out.clamp(0.0, 1.0) * 255).trunc_().to(torch.float32)


@dataclass(frozen=True)
class TorchCorruption:
    """A torch version of a medmnistc class: ``fn(levels, param)`` -> levels.

    ``channelwise``: it treats channels alike, so a grey image gives medmnistc's grey result without
    the RGB round trip (3 equal channels in, 3 equal channels out, whose luma is that channel).
    ``any_device``: integer or element-wise IEEE arithmetic only, the same pixels on every device.
    ``faster_on_cpu``: it beats medmnistc's per-image loop on a CPU (experiments/benchmarks/
    corruptions.py; Pillow's C resize and OpenCV's filter2D are faster than their torch versions)."""

    fn: Callable[[Tensor, float], Tensor]
    channelwise: bool
    any_device: bool
    faster_on_cpu: bool


TORCH_CORRUPTIONS: dict[str, TorchCorruption] = {
    "Brightness": TorchCorruption(brightness, channelwise=True, any_device=True, faster_on_cpu=True),
    "Contrast": TorchCorruption(contrast, channelwise=True, any_device=True, faster_on_cpu=True),
    "GammaCorrection": TorchCorruption(gamma_correction, channelwise=True, any_device=True, faster_on_cpu=True),
    "Saturate": TorchCorruption(saturate, channelwise=False, any_device=True, faster_on_cpu=True),
    "Pixelate": TorchCorruption(pixelate, channelwise=True, any_device=True, faster_on_cpu=False),
    "GaussianBlur": TorchCorruption(gaussian_blur, channelwise=False, any_device=False, faster_on_cpu=True),
    "DefocusBlur": TorchCorruption(defocus_blur, channelwise=True, any_device=False, faster_on_cpu=False),
}


def apply_torch(kind: str, levels: Tensor, param: float) -> Tensor:
    """Corrupt ``(N, C, H, W)`` levels (C = 1 or 3) with the torch version of medmnistc's ``kind``;
    a grey image follows medmnistc's grey datasets (to RGB, corrupt, back to luma)."""
    op = TORCH_CORRUPTIONS[kind]
    if levels.shape[1] == 1 and not op.channelwise:
        return luma(op.fn(levels.expand(-1, 3, -1, -1), param))
    return op.fn(levels, param)
