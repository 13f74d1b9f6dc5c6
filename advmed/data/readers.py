"""Reading image files of folder datasets, and scanning ``<root>/<CLASS>/<file>`` layouts.

Every reader returns a uint8 HWC RGB array; conversion to float [0, 1] CHW tensors happens in
the datasets. Benign variants (RGBA, grayscale) are converted with a one-time warning; a file
that cannot be decoded raises :class:`ImageReadError` naming the file and the fix.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
IMAGE_EXTENSIONS = TIFF_EXTENSIONS | {".png", ".jpg", ".jpeg", ".bmp"}

# Conversions already reported in this process: a dataset of 100K RGBA tiles warns once, not 100K times.
_WARNED: set[str] = set()


class ImageReadError(OSError):
    """An image file exists but cannot be decoded (truncated, corrupt or not an image)."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as a uint8 (H, W, 3) RGB array.

    ``.tif``/``.tiff`` go through tifffile, everything else through Pillow. RGBA drops its alpha
    channel and grayscale is replicated to three channels (each warned once per process).
    """
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_EXTENSIONS:
            array = _read_tiff(path)
        else:
            array = _read_pillow(path)
    except Exception as exc:  # every decoder failure means the same thing to the user
        raise ImageReadError(
            f"{path} is truncated or not an image ({type(exc).__name__}: {exc}); "
            "re-extract the dataset archive or delete the file"
        ) from exc
    return _to_rgb_uint8(array, path)


def _read_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]  # multi-page TIFFs: the first page is the image
        array = page.asarray()
        if array.ndim == 3 and page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
            array = np.moveaxis(array, 0, -1)  # stored channel-first
    return array


def _read_pillow(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()  # decode now so that truncation raises here, not later
        if image.mode == "P":  # palette images keep their transparency as alpha, dropped below
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode == "1":
            image = image.convert("L")
        elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGB")
        return np.array(image)  # a writable copy: np.asarray of a Pillow image is read-only, which torch warns about


def _to_rgb_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageReadError(
            f"{path} has pixel type {array.dtype}; only 8-bit images are supported, "
            "convert the file to 8-bit RGB"
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        _warn_once("grayscale", f"grayscale images are replicated to RGB (first: {path})")
        return np.repeat(array[..., None], 3, axis=-1)
    if array.ndim == 3 and array.shape[-1] == 2:  # gray + alpha
        _warn_once(
            "gray-alpha", f"grayscale+alpha images: alpha dropped, gray replicated to RGB (first: {path})"
        )
        return np.repeat(array[..., :1], 3, axis=-1)
    if array.ndim == 3 and array.shape[-1] == 4:
        _warn_once("rgba", f"RGBA images: alpha channel dropped (first: {path})")
        return np.ascontiguousarray(array[..., :3])
    if array.ndim == 3 and array.shape[-1] == 3:
        return array
    raise ImageReadError(
        f"{path} has shape {array.shape}, not an (H, W[, C]) image; delete or replace the file"
    )


def _warn_once(kind: str, message: str) -> None:
    if kind not in _WARNED:
        _WARNED.add(kind)
        warnings.warn(message, UserWarning, stacklevel=3)


def existing_folder(path: str | Path | None, what: str, hint: str) -> Path:
    """``path`` as an existing folder, or a FileNotFoundError naming ``what`` and how to fix it (``hint``)."""
    if path is None or not str(path).strip():
        raise FileNotFoundError(f"{what} folder is not set. {hint}")
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {path} does not exist. {hint}")
    return path


def scan_class_folders(
    root: str | Path,
    class_names: Sequence[str],
    strict: bool = True,
    extensions: frozenset[str] = IMAGE_EXTENSIONS,
) -> list[tuple[Path, int]]:
    """List ``(path, label)`` for a ``<root>/<CLASS>/<image>`` layout, label = index in ``class_names``.

    Hidden entries (leading ``.``), loose files in ``root`` and files with other extensions are
    ignored. Raises a clear error for a missing root, a folder that is not a class, an empty class
    folder and, when ``strict``, a missing class folder. Sorted by label, then file name.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist; check the path (data.root=...)")
    expected = ", ".join(class_names)
    folders = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise ValueError(
            f"unexpected folder(s) {unknown} in {root}; expected only the class folders {expected}. "
            "Point root at the folder that directly contains the class folders, or move the others away"
        )
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(class_names):
        if name not in folders:
            if strict:
                raise FileNotFoundError(
                    f"class folder {root / name} is missing (expected {expected}); "
                    "re-extract the dataset archive so that every class folder exists"
                )
            continue
        files = sorted(
            p
            for p in folders[name].iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
        )
        if not files:
            raise ValueError(
                f"class folder {folders[name]} holds no images ({', '.join(sorted(extensions))}); "
                "re-extract the dataset archive or remove the empty folder"
            )
        items.extend((path, label) for path in files)
    if not items:
        raise FileNotFoundError(f"no class folder of {expected} found in {root}; check data.root")
    return items
