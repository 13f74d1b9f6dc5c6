"""PNG image / mask pairs: ``<root>/images/<name>.png`` and ``<root>/masks/<name>.png``.

The layout of 2D segmentation datasets exported as PNG (and of the attacked copies that
``python -m advmed.augment`` writes for segmentation data). Pairs match by file name. Images are
8-bit or 16-bit grayscale (scaled by 255 / 65535 into [0, 1]) or 8-bit RGB; masks hold label ids
(8-bit grayscale or palette indices) or RGB colours mapped to ids by a ``colour_map``. Read with
Pillow, one pair per item, on access.

Grey images stored as RGB (the grey value in R, G and B: how most exported CT PNG datasets ship,
e.g. Kaggle's 3D-IRCADb liver pairs or SA-Med2D) read as one channel when one is asked for, with
one log line per folder; only real colour is refused then.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from advmed.data.readers import ImageReadError
from advmed.data.segmentation_datasets import SegmentationDataset, resize_pair, to_float_intensity

PNG_SUFFIX = ".png"

log = logging.getLogger(__name__)
_GREY_RGB_FOLDERS: set[Path] = set()  # folders already reported: one log line per dataset, not per image


def scan_png_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of ``<root>/images/*.png`` and ``<root>/masks/*.png``, sorted by name.

    Raises a clear error for a missing folder, an empty one, or files present on one side only.
    """
    root = Path(root)
    folders = {side: root / side for side in ("images", "masks")}
    for folder in folders.values():
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} does not exist: a PNG-pair dataset needs {root}/images/<name>.png and "
                f"{root}/masks/<name>.png with the same file names"
            )
    names = {
        side: {p.name for p in folder.iterdir() if p.suffix.lower() == PNG_SUFFIX and not p.name.startswith(".")}
        for side, folder in folders.items()
    }
    only_images, only_masks = sorted(names["images"] - names["masks"]), sorted(names["masks"] - names["images"])
    if only_images or only_masks:
        raise ValueError(
            f"{root}: images and masks must pair by file name; {len(only_images)} image(s) without a mask "
            f"(first: {only_images[:3]}) and {len(only_masks)} mask(s) without an image (first: {only_masks[:3]}). "
            "Add the missing files or remove the unpaired ones"
        )
    if not names["images"]:
        raise ValueError(f"{folders['images']} holds no .png files")
    return [(folders["images"] / name, folders["masks"] / name) for name in sorted(names["images"])]


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()  # decode now so that a truncated file fails here
        return image
    except Exception as exc:
        raise ImageReadError(
            f"{path} is truncated or not a PNG ({type(exc).__name__}: {exc}); re-export or delete the pair"
        ) from exc


def read_png_image(path: str | Path, in_channels: int) -> torch.Tensor:
    """A PNG as float32 (in_channels, H, W) in [0, 1]. 16-bit grayscale keeps its 16 bits; 8-bit
    grayscale asked as three channels is replicated. RGB(A) asked as one channel reads as one when
    its three colour channels are equal (grey saved as RGB; alpha dropped, logged once per folder)
    and is an error when it holds real colour (the model's channels are fixed)."""
    path = Path(path)
    image = _open(path)
    if image.mode in ("I;16", "I;16B", "I"):
        array = np.asarray(image).astype(np.int32)
        if array.max(initial=0) > 65535 or array.min(initial=0) < 0:
            raise ImageReadError(f"{path} holds values outside 0..65535; store CT slices as 8- or 16-bit PNG")
        tensor = torch.from_numpy(array)[None]
    else:
        mode = "L" if image.mode in ("L", "1", "P", "LA") and in_channels == 1 else "RGB"
        tensor = torch.from_numpy(np.asarray(image.convert(mode)).copy())
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        if in_channels == 1 and tensor.shape[0] == 3 and _is_grey(tensor, path):
            tensor = tensor[:1]
    if tensor.shape[0] != in_channels:
        colour = " of real colour (R, G, B differ)" if tensor.shape[0] == 3 else ""
        raise ValueError(
            f"{path} has {tensor.shape[0]} channel(s){colour} but the data has in_channels={in_channels}; "
            "set data.in_channels to match the images"
        )
    return to_float_intensity(tensor)


def _is_grey(rgb: torch.Tensor, path: Path) -> bool:
    """Whether R, G and B are equal everywhere; the first such file of a folder is logged."""
    if not (torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[0], rgb[2])):
        return False
    if path.parent not in _GREY_RGB_FOLDERS:
        _GREY_RGB_FOLDERS.add(path.parent)
        log.info("%s: RGB PNGs with equal R, G, B (grey saved as colour) are read as one grey channel "
                 "(first: %s)", path.parent, path.name)
    return True


def read_png_mask(
    path: str | Path, num_classes: int, colour_map: Mapping[int, Sequence[int]] | None = None
) -> torch.Tensor:
    """A PNG mask as int64 label ids (H, W): grayscale / palette values are the ids; RGB colours
    go through ``colour_map`` (label id -> [r, g, b]). Ids must lie in 0..num_classes-1."""
    path = Path(path)
    image = _open(path)
    if colour_map:
        rgb = np.asarray(image.convert("RGB")).astype(np.int64)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        lookup = {(int(r) << 16) | (int(g) << 8) | int(b): int(label) for label, (r, g, b) in colour_map.items()}
        colours = np.unique(packed)
        unknown = [c for c in colours.tolist() if c not in lookup]
        if unknown:
            shown = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:5]]
            raise ValueError(
                f"{path} has mask colour(s) {shown} not in the colour map {dict(colour_map)}; "
                "add them to data.colour_map (label id -> [r, g, b])"
            )
        labels = np.zeros(packed.shape, dtype=np.int64)
        for colour in colours.tolist():
            labels[packed == colour] = lookup[colour]
    else:
        if image.mode not in ("L", "P", "1", "I", "I;16"):
            raise ValueError(
                f"{path} is an {image.mode} mask; label-id masks are single-channel. For colour masks "
                "set data.colour_map (label id -> [r, g, b])"
            )
        labels = np.asarray(image).astype(np.int64)
    bad = np.unique(labels[(labels < 0) | (labels >= num_classes)])
    if bad.size:
        raise ValueError(
            f"{path} holds label id(s) {bad.tolist()[:10]} outside 0..{num_classes - 1} (num_classes={num_classes}); "
            "map them in the data config or fix num_classes/class_names"
        )
    return torch.from_numpy(labels)


class PNGPairDataset(SegmentationDataset):
    """Image / mask PNG pairs read on access, resized to ``image_size`` (masks nearest).

    Args:
        pairs: ``(image_path, mask_path)`` per item.
        num_classes, in_channels: what the images and masks must hold.
        groups: volume / patient id per item (default: each pair its own group).
        colour_map: label id -> [r, g, b] for colour masks; None: masks hold label ids.
        image_size: output side; None keeps the stored size.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        num_classes: int,
        in_channels: int,
        groups: Sequence[int] | torch.Tensor | None = None,
        colour_map: Mapping[int, Sequence[int]] | None = None,
        image_size: int | None = None,
    ) -> None:
        self.pairs = [(Path(image), Path(mask)) for image, mask in pairs]
        self.names = [image.stem for image, _ in self.pairs]
        self.groups = torch.arange(len(self.pairs)) if groups is None else torch.as_tensor(groups, dtype=torch.long)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.colour_map = {int(k): [int(c) for c in v] for k, v in (colour_map or {}).items()}
        self.image_size = image_size

    @classmethod
    def from_folder(cls, root: str | Path, **kwargs) -> PNGPairDataset:
        """The pairs of ``<root>/images`` and ``<root>/masks`` (see :func:`scan_png_pairs`)."""
        return cls(scan_png_pairs(root), **kwargs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[index]
        image = read_png_image(image_path, self.in_channels)
        mask = read_png_mask(mask_path, self.num_classes, self.colour_map)
        if image.shape[-2:] != mask.shape:
            raise ValueError(
                f"{image_path} is {tuple(image.shape[-2:])} but its mask {mask_path} is {tuple(mask.shape)}; "
                "image and mask of a pair must have the same size"
            )
        return resize_pair(image, mask, self.image_size)
