"""How one item of a dataset copy is stored, and the atomic file writes of the copy writer.

A :class:`CopyLayout` says how one item is stored in the layout its DataModule reads back through
``extra_train_roots`` (each DataModule base returns its own from ``copy_layout()``):

- :class:`ClassFolderLayout` (classification): ``<root>/<CLASS>/<name>.png``, 8-bit RGB (8-bit
  grayscale for one channel), read by ``scan_class_folders`` / ``ImageFolderDataset``;
- :class:`PNGPairLayout` (segmentation): ``<root>/images/<name>.png`` (one channel: 16-bit
  grayscale, so that a small eps survives the quantisation; three: 8-bit RGB) and
  ``<root>/masks/<name>.png`` (label ids, 8-bit), read by :mod:`advmed.data.png_pairs`.

Every file goes to a hidden ``.<name>.<pid>.tmp`` in its folder and is then renamed, so a killed
run leaves no truncated file, only ``*.tmp`` leftovers that :func:`remove_tmp_files` deletes.
"""

from __future__ import annotations

import abc
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from torch import Tensor

TMP_SUFFIX = ".tmp"


# --------------------------------------------------------------------------- atomic files


def tmp_path(path: Path) -> Path:
    """The hidden temporary name of ``path`` in its own folder (readers skip hidden files); the
    process id keeps two processes from ever writing into one temporary file."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def atomic_save(path: str | Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` to ``.<name>.tmp`` beside ``path``, then rename it onto ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_text(path: str | Path, text: str) -> Path:
    return atomic_save(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_png(path: str | Path, image: Image.Image) -> Path:
    """Save ``image`` as PNG atomically (Pillow's PNG encoder is deterministic: same pixels, same bytes)."""
    return atomic_save(path, lambda tmp: image.save(tmp, format="PNG"))


def remove_tmp_files(root: str | Path) -> int:
    """Delete the ``*.tmp`` leftovers of a killed run under ``root``; return how many."""
    leftovers = [p for p in Path(root).rglob(f"*{TMP_SUFFIX}") if p.is_file()]
    for p in leftovers:
        p.unlink()
    return len(leftovers)


# --------------------------------------------------------------------------- encoding


def _channels(x: Tensor, allowed: Sequence[int], what: str) -> np.ndarray:
    if x.ndim != 3 or x.shape[0] not in allowed:
        raise ValueError(f"{what} needs a (C, H, W) image with C in {list(allowed)}, got shape {tuple(x.shape)}")
    return x.detach().float().cpu().clamp(0.0, 1.0).permute(1, 2, 0).numpy()


def to_uint8_image(x: Tensor) -> Image.Image:
    """A float [0, 1] (C, H, W) image, C in (1, 3), as an 8-bit grayscale / RGB Pillow image."""
    array = np.rint(_channels(x, (1, 3), "an 8-bit PNG") * 255.0).astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array, mode="L" if array.shape[-1] == 1 else "RGB")


def to_uint16_image(x: Tensor) -> Image.Image:
    """A float [0, 1] (1, H, W) image as a 16-bit grayscale Pillow image (read back as /65535)."""
    array = np.rint(_channels(x, (1,), "a 16-bit grayscale PNG")[..., 0] * 65535.0).astype(np.uint16)
    return Image.fromarray(array)  # mode I;16


def to_label_image(y: Tensor) -> Image.Image:
    """An integer (H, W) label map as an 8-bit PNG of label ids (16-bit above 255 classes)."""
    if y.ndim != 2 or y.is_floating_point():
        raise ValueError(f"a mask must be integer label ids of shape (H, W), got {y.dtype} {tuple(y.shape)}")
    array = y.detach().cpu().numpy()
    if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
        raise ValueError(f"mask label ids must lie in 0..65535, got {array.min()}..{array.max()}")
    return Image.fromarray(array.astype(np.uint8) if array.max(initial=0) <= 255 else array.astype(np.uint16))


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@,-]")


def file_stem(name: str) -> str:
    """A file name from an item name: path separators become ``__``, other unusual characters
    ``_``, and a leading dot (a hidden file, which readers skip) gets a ``_`` before it."""
    stem = _UNSAFE.sub("_", str(name).replace("/", "__").replace("\\", "__"))
    return f"_{stem}" if not stem or stem.startswith(".") else stem


# --------------------------------------------------------------------------- layouts


class CopyLayout(abc.ABC):
    """How one item of a dataset copy is stored: its files (relative paths, by role) and their images."""

    kind: ClassVar[str]
    roles: ClassVar[tuple[str, ...]] = ("image",)  # the keys of files() and encode()

    @abc.abstractmethod
    def files(self, name: str, label: int | None) -> dict[str, str]:
        """Relative (posix) paths of the files of item ``name`` by role (``image``, ``mask``);
        ``label`` is the item's class for classification data (``dataset.targets``), else None."""

    @abc.abstractmethod
    def encode(self, x: Tensor, y: Tensor) -> dict[str, Image.Image]:
        """The images of one item (keys as in :meth:`files`): ``x`` float [0, 1] (C, H, W), ``y`` its label(s)."""

    def columns(self, label: int | None) -> dict[str, Any]:
        """Extra manifest columns of an item."""
        return {}


class ClassFolderLayout(CopyLayout):
    """``<root>/<CLASS>/<name>.png``: what ``ClassificationDataModule`` reads from an extra training root.

    A name that already starts with its class folder (``ImageFolderDataset`` names are
    ``<CLASS>/<stem>``) keeps only the rest.
    """

    kind = "class_folders"

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = [str(c) for c in class_names]

    def _class(self, label: int | None) -> str:
        if label is None or not 0 <= int(label) < len(self.class_names):
            raise ValueError(
                f"label {label} is not a class index of {self.class_names}: a class-folder copy needs "
                "datasets with integer targets (LabelledDataset.targets)"
            )
        return self.class_names[int(label)]

    def files(self, name: str, label: int | None) -> dict[str, str]:
        folder = self._class(label)
        name = name[len(folder) + 1 :] if name.startswith(f"{folder}/") else name
        return {"image": f"{folder}/{file_stem(name)}.png"}

    def encode(self, x: Tensor, y: Tensor) -> dict[str, Image.Image]:
        return {"image": to_uint8_image(x)}

    def columns(self, label: int | None) -> dict[str, Any]:
        return {"label": int(label), "class": self._class(label)}


class PNGPairLayout(CopyLayout):
    """``<root>/images/<name>.png`` + ``<root>/masks/<name>.png``: what ``SegmentationDataModule``
    reads from an extra training root. One-channel images are 16-bit grayscale, three-channel ones
    8-bit RGB; masks are the unchanged label ids."""

    kind = "png_pairs"
    roles = ("image", "mask")

    def files(self, name: str, label: int | None) -> dict[str, str]:
        stem = file_stem(name)
        return {"image": f"images/{stem}.png", "mask": f"masks/{stem}.png"}

    def encode(self, x: Tensor, y: Tensor) -> dict[str, Image.Image]:
        image = to_uint16_image(x) if x.ndim == 3 and x.shape[0] == 1 else to_uint8_image(x)
        return {"image": image, "mask": to_label_image(y)}
