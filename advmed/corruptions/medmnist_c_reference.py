"""MedMNIST-C's own corruption classes applied image by image, the way medmnistc builds its data:
the reference backend of :mod:`advmed.corruptions.medmnist_c`.

medmnistc's ``DatasetManager`` (Di Salvo et al., 2024, MedMNIST-C) hands every uint8 image to a
corruption's ``apply(img, severity_index)`` as an RGB PIL image; a grey dataset's image is
converted to RGB first and the result back to grey with PIL (``convert('L')``). This module does
the same for a batch, with one difference: the randomness.

Seeding scheme. medmnistc seeds once and draws for the whole test set in order, so an image's
corruption depends on every image before it. Here image ``i`` of a batch corrupted with ``seed``
gets its own streams, from numpy's ``SeedSequence([seed mod 2**64, i])``: its first 32-bit word
seeds numpy's global (legacy) RNG, which the noises, the blur angle and medmnistc's augmentation
draws use; its next two words seed Python's ``random``, which stain deposits and bubbles use; its
first spawned child seeds the ``np.random.Generator`` given to the corruption as ``rng``, which
medmnistc's ``ImpulseNoise`` passes to scikit-image (medmnistc sets ``corruptor.rng`` the same way).

So an image's corruption depends only on ``(seed, i, severity)``, and the same draws are scaled by
each severity's parameter. Corruptions that draw nothing (JPEG, pixelation, colour changes, every
blur but motion blur) are not seeded. Both global RNGs are saved before the batch and restored
after it, also on an error: the caller's numpy and Python random streams are left as they were.
Not thread-safe (the global RNGs are process-wide, as in medmnistc).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
from PIL import Image

from advmed.corruptions.medmnist_c_params import CorruptionSpec
from advmed.corruptions.motion_blur import MotionBlur
from advmed.corruptions.optional_deps import import_medmnistc

# medmnistc's module of each corruption class (importing medmnistc.corruptions.registry would load
# every module, ImageMagick included; a corruption only loads its own).
MEDMNISTC_MODULES = {
    "GaussianNoise": "noise", "SpeckleNoise": "noise", "ImpulseNoise": "noise", "ShotNoise": "noise",
    "Pixelate": "compression", "JPEGCompression": "compression",
    "DefocusBlur": "filter", "GaussianBlur": "filter", "MotionBlur": "filter", "ZoomBlur": "filter",
    "Brightness": "enhance", "Contrast": "enhance", "Saturate": "enhance", "GammaCorrection": "enhance",
    "StainDeposit": "microscopy", "Bubble": "microscopy", "BlackCorner": "microscopy", "Characters": "microscopy",
}
# medmnistc's StainDeposit picks its ink set with str(max(3, severity_index)) from assets/inks.npz,
# whose set "3" holds 24 px inks and "4" 32 px ones; it places an ink at least 10 px from each border.
_STAIN_INK_SIDE = {"3": 24, "4": 32}
_STAIN_MARGIN = 10
# medmnistc's classes that draw random numbers (the others are deterministic, and not seeded).
RANDOM_KINDS = frozenset({"GaussianNoise", "SpeckleNoise", "ImpulseNoise", "ShotNoise", "MotionBlur", "StainDeposit",
                          "Bubble", "Characters"})


class Corruptor(Protocol):
    """medmnistc's corruption interface."""

    def apply(self, img: Image.Image, severity: int) -> Any: ...


def reference_corruptor(spec: CorruptionSpec) -> Corruptor:
    """medmnistc's class for ``spec`` with its parameters; for motion blur, advmed's fixed copy
    (:mod:`advmed.corruptions.motion_blur`: medmnistc's fails under numpy 2)."""
    if spec.kind == "MotionBlur":
        return MotionBlur(spec.params)
    module = import_medmnistc(MEDMNISTC_MODULES[spec.kind])
    return getattr(module, spec.kind)(severity_params=list(spec.params))


def min_side(spec: CorruptionSpec, severity: int) -> int:
    """The smallest image side that ``spec`` can corrupt at ``severity`` (MedMNIST-C's geometry is in
    pixels, defined at 224 px): stain inks and bubbles must fit inside the image, and the blurs'
    reflect padding (torchvision's, advmed's torch defocus) must be shorter than the image."""
    param = spec.params[severity - 1]
    if spec.kind == "StainDeposit":
        return _STAIN_INK_SIDE[str(max(3, severity - 1))] + 2 * _STAIN_MARGIN
    if spec.kind == "Bubble":  # randint(radius, side - radius) for radii up to the maximum
        return 2 * int(param[0])
    if spec.kind == "GaussianBlur":
        return int(param) // 2 + 1
    if spec.kind == "DefocusBlur":  # the 17 x 17 disk grid (wider for radii over 8)
        return max(8, int(param[0])) + 1
    if spec.kind == "Pixelate":  # the reduced image keeps at least one pixel
        return int(np.ceil(1 / param))
    return 1


def seed_image(seed: int, index: int, generator: bool = False) -> np.random.Generator | None:
    """Seed numpy's and Python's global RNGs for image ``index`` of a batch corrupted with ``seed``;
    with ``generator``, also return its ``np.random.Generator`` (the module docstring gives the scheme)."""
    sequence = np.random.SeedSequence([int(seed) % 2**64, index])
    words = sequence.generate_state(3)
    np.random.seed(int(words[0]))
    random.seed(int(words[1]) | int(words[2]) << 32)
    return np.random.default_rng(sequence.spawn(1)[0]) if generator else None


@contextlib.contextmanager
def global_rngs_kept() -> Iterator[None]:
    """Restore numpy's and Python's global RNG states on the way out, whatever happened inside."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def corrupt_per_image(corruptor: Corruptor, images: np.ndarray, severity: int, seed: int,
                      seeded: bool = True) -> np.ndarray:
    """``images`` (N, H, W, C) uint8, C = 3 (RGB) or 1 (grey), corrupted one by one by
    ``corruptor`` at ``severity`` (1..5), as medmnistc builds MedMNIST-C; same shape and dtype.
    ``seeded``: seed each image (False for the corruptions that draw nothing)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected (N, H, W, 1 or 3) uint8 images, got {images.shape} {images.dtype}")
    grey = images.shape[-1] == 1
    needs_generator = type(corruptor).__name__ == "ImpulseNoise"  # the one class that reads `rng`
    out = np.empty_like(images)
    with global_rngs_kept():
        for i, image in enumerate(images):
            if seeded:
                rng = seed_image(seed, i, generator=needs_generator)
                if rng is not None:  # medmnistc sets ImpulseNoise's rng by hand
                    corruptor.rng = rng  # type: ignore[attr-defined]
            pil = Image.fromarray(image[:, :, 0]).convert("RGB") if grey else Image.fromarray(image)
            result = np.asarray(corruptor.apply(pil, severity - 1))
            if result.shape != (*image.shape[:2], 3) or result.dtype != np.uint8:
                raise RuntimeError(f"{type(corruptor).__name__} returned {result.shape} {result.dtype} for a "
                                   f"{image.shape[:2]} image; expected an RGB uint8 image of the same size")
            if grey:  # medmnistc's grey datasets: back to one channel with PIL's luma (ITU-R 601-2)
                result = np.asarray(Image.fromarray(result).convert("L"))[:, :, None]
            out[i] = result
    return out
