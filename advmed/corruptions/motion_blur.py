"""MedMNIST-C's motion blur, with the two bugs of medmnistc 0.1.0's ``MotionBlur.apply`` fixed.

MedMNIST-C (Di Salvo et al., 2024) blurs along a random direction with ImageMagick's
``MagickMotionBlurImage`` (radius, sigma from its table, angle uniform in [-45, 45] degrees from
numpy's global RNG), the ImageNet-C recipe. medmnistc 0.1.0 cannot run it as published:

1. it decodes ImageMagick's PNG with ``np.fromstring``, whose binary mode numpy 2 removed
   (``ValueError``); here ``np.frombuffer``, which reads the same bytes;
2. ImageMagick writes a grey image as a 1-channel PNG, and medmnistc tells that case apart with
   ``img.shape != (224, 224)``, so a grey image of any other size has its width axis indexed as if
   it were the colour one; here the decoded array's number of dimensions decides.

Everything else is medmnistc's: the same PNG round trip, the same library call and arguments, the
same draw of the angle, the same BGR -> RGB order, so an RGB image gives medmnistc's pixels
(``tests/corruptions/test_medmnist_c.py`` checks this against medmnistc with ``np.fromstring``
patched). ImageMagick is loaded on first use (:mod:`advmed.corruptions.optional_deps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO

import numpy as np
from PIL import Image

from advmed.corruptions.optional_deps import import_wand


class MotionBlur:
    """Drop-in for ``medmnistc.corruptions.filter.MotionBlur``: ``apply(img, severity_index)`` on an
    RGB PIL image returns an (H, W, 3) uint8 array. ``severity_params``: (radius, sigma) per severity."""

    def __init__(self, severity_params: Sequence[tuple[float, float]]):
        self.severity_params = list(severity_params)

    def apply(self, img: Image.Image, severity: int) -> np.ndarray:
        radius, sigma = self.severity_params[severity]
        api, wand_image = import_wand()
        import cv2  # an advmed dependency; imported here so that importing the corruptions stays light

        png = BytesIO()
        img.save(png, format="PNG")
        with wand_image.Image(blob=png.getvalue()) as magick:
            # drawn where medmnistc draws it (after the PNG encode, which uses no RNG): same seed, same angle
            angle = np.random.uniform(-45, 45)
            if not api.library.MagickMotionBlurImage(magick.wand, radius, sigma, angle):
                magick.raise_exception()
            blob = magick.make_blob()
        out = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)
        if out is None or out.dtype != np.uint8:
            raise RuntimeError(f"ImageMagick returned a PNG that is not 8-bit ({None if out is None else out.dtype}); "
                               "MedMNIST-C's motion blur expects 8-bit images")
        if out.ndim == 2:  # a grey PNG: the image was grey, give it back as RGB like every other corruption
            out = np.repeat(out[:, :, None], 3, axis=2)
        else:  # BGR or BGRA: medmnistc's channel order
            out = out[..., [2, 1, 0]]
        return np.ascontiguousarray(out)
