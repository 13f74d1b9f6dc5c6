"""The PatchCamelyon files on disk (``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5``) and their
checks, read with h5py without the DataModule (no Lightning), so that ``advmed.data.download`` verifies
a folder without Lightning's import. The checks are hand-written because no library validates this
layout; h5py does the reading.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

CLASS_NAMES = ("no_metastasis", "metastasis")  # label 1: tumour tissue in the centre 32x32 region
TILE_SIZE = 96  # PCam and the Kaggle Histopathologic Cancer Detection tiles are 96x96 RGB

# advmed split -> the word in the official file names
SPLIT_FILES = {"train": "train", "val": "valid", "test": "test"}
FILE_TEMPLATE = "camelyonpatch_level_2_split_{split}_{key}.h5"
_ALL_FILES = ", ".join(FILE_TEMPLATE.format(split=s, key=k) for s in SPLIT_FILES.values() for k in "xy")
DOWNLOAD_HINT = (
    "Download the PatchCamelyon files from Zenodo record 2546921 (https://zenodo.org/record/2546921, "
    f"see github.com/basveeling/pcam), gunzip them so that the folder holds {_ALL_FILES}, and set "
    "data.root=... or ADVMED_PCAM_ROOT"
)


def split_file(root: Path, split: str, key: str) -> Path:
    """Path of the ``x`` or ``y`` file of ``split`` (train / val / test), which must exist unzipped."""
    path = root / FILE_TEMPLATE.format(split=SPLIT_FILES[split], key=key)
    if path.is_file():
        return path
    archive = path.with_name(path.name + ".gz")
    if archive.is_file():
        # HDF5 needs random access, which a gzip stream cannot give: never read the archive.
        raise FileNotFoundError(
            f"{archive} is still gzipped; gunzip it first (gunzip -k {archive}) so that {path} exists"
        )
    raise FileNotFoundError(f"PatchCamelyon file {path} is missing. {DOWNLOAD_HINT}")


def read_labels(path: Path) -> torch.Tensor:
    """All labels of a ``_y.h5`` file as int64 (N,), checked to be 0/1 integers of shape (N, 1, 1, 1)."""
    with _open(path) as file:
        labels = _dataset(file, "y", path)
        if labels.dtype.kind not in "uib" or labels.ndim < 1 or any(n != 1 for n in labels.shape[1:]):
            raise ValueError(
                f"{path}: dataset 'y' is {labels.dtype} {labels.shape}, expected integer labels of shape "
                f"(N, 1, 1, 1) (uint8 in the official files); download the file again. {DOWNLOAD_HINT}"
            )
        values = np.asarray(labels[...]).reshape(-1).astype(np.int64)
    bad = np.unique(values[(values != 0) & (values != 1)])
    if bad.size:
        raise ValueError(f"{path}: labels must be 0 or 1, found {bad[:5].tolist()}; download the file again")
    return torch.from_numpy(values)


def check_images(path: Path) -> int:
    """Number of tiles of an ``_x.h5`` file, checked to be uint8 (N, 96, 96, 3); reads no pixels."""
    with _open(path) as file:
        images = _dataset(file, "x", path)
        if images.dtype != np.uint8 or images.shape[1:] != (TILE_SIZE, TILE_SIZE, 3):
            raise ValueError(
                f"{path}: dataset 'x' is {images.dtype} {images.shape}, expected uint8 "
                f"(N, {TILE_SIZE}, {TILE_SIZE}, 3) RGB tiles as in the official files; "
                f"download the file again. {DOWNLOAD_HINT}"
            )
        return len(images)


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise OSError(
            f"{path} is not a readable HDF5 file ({exc}); it may be truncated: download it again. "
            f"{DOWNLOAD_HINT}"
        ) from exc


def _dataset(file: h5py.File, key: str, path: Path) -> h5py.Dataset:
    if not isinstance(file.get(key), h5py.Dataset):
        raise ValueError(
            f"{path} has no dataset '{key}' (found {sorted(file.keys())}); the official "
            f"_{key}.h5 files store it under '{key}': is this the right file? {DOWNLOAD_HINT}"
        )
    return file[key]
