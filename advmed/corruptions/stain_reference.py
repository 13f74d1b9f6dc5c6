"""The reference tiles of Macenko and Reinhard normalisation (:mod:`.stain_normalisation`): an RGB
image file or tensor from the target lab, checked and read as float64 (3, H, W) in [0, 1], or the
built-in reference tile painted with the published Macenko target (the default when none is given).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# Macenko's constants as torchstain (and Macenko's reference code) use them, shared with the normaliser.
TRANSMITTED_INTENSITY = 240.0  # Io: the background (light through glass) in 0..255
CONCENTRATION_PERCENTILE = 99.0  # the "maximum" concentration that is matched to the reference
# Published reference stain vectors (columns H, E; RGB OD) and 99th-percentile concentrations of
# Macenko's reference implementation, torchstain's defaults: the target when no tile is given.
MACENKO_STAIN_MATRIX = torch.tensor([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]], dtype=torch.float64)
MACENKO_MAX_CONCENTRATIONS = torch.tensor([1.9705, 1.0308], dtype=torch.float64)

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "PA"})
_DEFAULT_TILE_SIZE = 256
_DEFAULT_TILE_SEED = 2009  # fixed: the built-in reference is the same tile in every run


def describe_reference(reference: str | Path | Tensor) -> str:
    """How messages name a reference: ``tile <path>`` or ``tensor``."""
    return "tensor" if isinstance(reference, Tensor) else f"tile {reference}"


def load_reference_tile(reference: str | Path | Tensor) -> Tensor:
    """A reference tile as float64 (3, H, W) in [0, 1], from an RGB image file or a tensor
    ((3, H, W) or (1, 3, H, W); uint8 or float in [0, 1]).

    Files must be RGB: greyscale is an error, and so is RGBA unless every alpha is 255 (then the
    alpha channel carries nothing and is dropped) -- a transparent pixel has no stain colour.
    """
    if isinstance(reference, Tensor):
        return _tile_from_tensor(reference)
    path = Path(reference).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"stain reference tile {path} does not exist; pass the path of an RGB image "
                                "(PNG, JPEG or TIFF) of an H&E tile from the target lab, or reference=None "
                                "for the built-in reference")
    array = _read_rgb(path)
    return torch.from_numpy(array).permute(2, 0, 1).to(torch.float64) / 255


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image  # Pillow only when a reference file is given

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode == "P":  # palette: colour, transparent only if it says so
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif mode in ("CMYK", "YCbCr"):
                image = image.convert("RGB")
            array = np.array(image)
    except OSError as exc:  # Pillow's UnidentifiedImageError and truncated files are OSErrors
        raise ValueError(f"stain reference tile {path} cannot be read as an image ({exc}); pass an RGB "
                         "image file (PNG, JPEG or TIFF)") from exc
    if mode in _GREY_MODES:
        raise ValueError(f"stain reference tile {path} is a greyscale image (mode {mode}), not RGB: stain "
                         "normalisation needs a colour H&E tile; pass an 8-bit RGB image")
    if array.ndim == 3 and array.shape[-1] == 4:
        transparent = int((array[..., 3] < 255).sum())
        if transparent:
            raise ValueError(f"stain reference tile {path} is RGBA with {transparent} transparent pixels "
                             "(alpha < 255), whose colour is undefined; flatten it onto white or save it as "
                             "RGB (an RGBA tile with every alpha 255 is accepted)")
        array = array[..., :3]
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"stain reference tile {path} has mode {mode} ({array.dtype} {array.shape}), not "
                         "8-bit RGB; save it as an 8-bit RGB image")
    return array


def _tile_from_tensor(tile: Tensor) -> Tensor:
    if tile.ndim == 4 and len(tile) == 1:
        tile = tile[0]
    if tile.ndim != 3 or tile.shape[0] != 3:
        raise ValueError(f"a stain reference tensor must be one RGB tile (3, H, W), got {tuple(tile.shape)}; "
                         "greyscale or RGBA tiles have no H&E colour to normalise to")
    if tile.dtype == torch.uint8:
        return tile.to(torch.float64) / 255
    if not tile.is_floating_point() or float(tile.min()) < 0 or float(tile.max()) > 1:
        raise ValueError(f"a stain reference tensor must be uint8 or float in [0, 1], got {tile.dtype} in "
                         f"[{float(tile.min()):.3g}, {float(tile.max()):.3g}]; divide 8-bit values by 255")
    return tile.detach().cpu().to(torch.float64)


def default_reference_tile() -> Tensor:
    """The built-in reference: a fixed (3, 256, 256) H&E-like tile, float64 in [0, 1], stained with
    the published Macenko reference (``MACENKO_STAIN_MATRIX``, 99th-percentile concentrations
    ``MACENKO_MAX_CONCENTRATIONS``, Io = 240) and quantised to 8 bits like a tile read from disk.

    The layout -- about 85 % tissue: eosin stroma with smooth density, a gap of background, ~150
    haematoxylin nuclei -- is drawn from a fixed CPU generator, so every run and machine gets the
    same tile; Macenko's estimate on it recovers the published target (tested).
    """
    return _default_tile().clone()


@functools.lru_cache(maxsize=1)
def _default_tile() -> Tensor:
    size = _DEFAULT_TILE_SIZE
    generator = torch.Generator().manual_seed(_DEFAULT_TILE_SEED)

    def uniform(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, dtype=torch.float64)

    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                          indexing="ij")
    # Smooth fields from a few random plane waves (1-3 cycles per tile).
    def field(waves: int) -> Tensor:
        frequency = (uniform(waves, 2) * 2 - 1) * 3 * 2 * math.pi / size
        phase, amplitude = uniform(waves) * 2 * math.pi, 0.5 + uniform(waves)
        waves_at = torch.cos(frequency[:, :1, None] * x + frequency[:, 1:, None] * y + phase[:, None, None])
        summed = (amplitude[:, None, None] * waves_at).sum(0)
        return (summed - summed.min()) / (summed.max() - summed.min())

    shape_field, density_field = field(6), field(6)
    cut = torch.quantile(shape_field.flatten(), 0.15)  # ~15 % background
    tissue = torch.sigmoid((shape_field - cut) / 0.02)
    nuclei = torch.zeros(size, size, dtype=torch.float64)
    centres, radii = uniform(150, 2) * size, 2.5 + 3.5 * uniform(150)
    for (cy, cx), radius in zip(centres.tolist(), radii.tolist(), strict=True):
        nuclei = torch.maximum(nuclei, torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2)))
    nuclei = nuclei * tissue
    eosin = tissue * (0.35 + 0.65 * density_field) * (1 - 0.7 * nuclei)
    haematoxylin = nuclei * (0.6 + 0.4 * uniform(size, size)) + 0.05 * tissue  # a faint counterstain
    concentrations = torch.stack((haematoxylin, eosin)).flatten(1)
    # Scale each stain so that its 99th percentile is the published maximum concentration.
    scale = MACENKO_MAX_CONCENTRATIONS / torch.quantile(concentrations, CONCENTRATION_PERCENTILE / 100, dim=1)
    optical_density = MACENKO_STAIN_MATRIX @ (concentrations * scale[:, None])
    intensity = (TRANSMITTED_INTENSITY * torch.exp(-optical_density)).round().clamp(0, 255)
    return (intensity / 255).reshape(3, size, size)
