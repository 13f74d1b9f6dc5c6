"""Finding the volumes of a CT slice dataset, and splitting them (by volume, never by slice).

Layouts under ``root`` (``format: auto`` picks the first that applies, in this order):

* ``pairs``: explicit ``[image, label]`` pairs (paths relative to ``root``), or the name of a CSV
  file in ``root`` with columns ``image,label``. An image is a NIfTI file or a DICOM series
  folder, a label a NIfTI file (e.g. TotalSegmentator's ``example_ct_sm.nii.gz`` +
  ``example_seg.nii.gz``, or ``example_ct_dicom/`` + ``example_seg_dicom.nii.gz``).
* ``sa_med2d``: SA-Med2D / SAM-Med2D, ``images/`` and ``masks/`` (one mask per organ) with a json map
  (``image2label_train.json``, ``label2image_test.json`` or ``SAMed2D_v1.json``):
  :mod:`advmed.data.ct.sa_med2d`.
* ``png``: ``images/<name>.png`` and ``masks/<name>.png`` (:func:`advmed.data.png_pairs.scan_png_pairs`).
* ``npz``: ``*.npz`` slices anywhere under ``root`` (TransUNet's Synapse ``train_npz/case0005_slice042.npz``).
* ``volumes``: an images folder and a labels folder, ``images_dir`` / ``labels_dir`` or the first of
  ``imagesTr/ labelsTr/``, ``img/ label/``, ``images/ labels/`` found. Entries pair by *key*: the
  name without ``.nii.gz`` / ``.nii``, without a leading ``img``, ``image``, ``volume``, ``label(s)``,
  ``seg``, ``segmentation`` or ``mask`` (and a ``-`` / ``_`` after it), and without an nnU-Net
  channel suffix ``_0000`` (``img0001`` ~ ``label0001``, ``case_01_0000`` ~ ``case_01``,
  ``volume-3`` ~ ``segmentation-3``). Images may be NIfTI files or DICOM series folders.

A *volume* is one image/label pair, named by its image file (without extension) or DICOM folder.
``.npz``, PNG and SA-Med2D slices belong to the volume named by ``group_pattern`` searched in the file
stem: its first group if it has one, else the whole match; a file that does not match is its own volume
(an SA-Med2D slice: its case, the stem without the slice suffix, :func:`advmed.data.ct.sa_med2d.case_of`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from advmed.data.ct import sa_med2d
from advmed.data.ct.readers import is_nifti, volume_stem
from advmed.data.png_pairs import scan_png_pairs

FORMATS = ("auto", "volumes", "npz", "png", "sa_med2d")
SPLIT_NAMES = ("train", "val", "test")
VOLUME_FOLDERS = (("imagesTr", "labelsTr"), ("img", "label"), ("images", "labels"))
_PREFIX = re.compile(r"^(segmentation|volume|labels|label|image|mask|img|seg)[-_]?", re.IGNORECASE)
LAYOUT_HINT = (
    "Set data.root=... or ADVMED_CT_ROOT to a folder of NIfTI image/label volumes (imagesTr/+labelsTr/, "
    "img/+label/, images/+labels/, or data.pairs), DICOM series folders with NIfTI labels (data.pairs), "
    "TransUNet .npz slices, images/+masks/ PNG pairs, or SA-Med2D images/+masks/+image2label_train.json; see "
    "conf/data/ct_slices.yaml"
)


@dataclass(frozen=True)
class Volume:
    """One group of slices: ``kind`` ``volume`` (items: one (image, label) pair), ``npz`` (files),
    ``png`` ((image, mask) pairs) or ``sa_med2d`` ((image, masks) of :func:`.sa_med2d.find_slices`)."""

    name: str
    kind: str
    items: tuple


def pair_key(path: Path) -> str:
    """The pairing key of a volume file or folder name (see the module docstring)."""
    stem = volume_stem(path)
    return re.sub(r"_0000$", "", _PREFIX.sub("", stem)) or stem


def find_volumes(
    root: Path,
    format: str = "auto",
    images_dir: str | None = None,
    labels_dir: str | None = None,
    pairs: str | Sequence[Sequence[str]] | None = None,
    group_pattern: re.Pattern | None = None,
) -> list[Volume]:
    """The volumes under ``root``, sorted by name; names are unique."""
    format = detect_format(root, format, pairs)
    if format == "sa_med2d":
        slices = sa_med2d.find_slices(root)
        found = _group_slices(slices, "sa_med2d", [image.stem for image, _ in slices], group_pattern, root,
                              unmatched=sa_med2d.case_of)
    elif format == "png":
        png_pairs = scan_png_pairs(root)
        found = _group_slices(png_pairs, "png", [image.stem for image, _ in png_pairs], group_pattern, root)
    elif format == "npz":
        files = sorted(p for p in root.rglob("*.npz") if not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"{root} holds no .npz slice. {LAYOUT_HINT}")
        found = _group_slices(files, "npz", [p.stem for p in files], group_pattern, root)
    else:
        found = [Volume(volume_stem(image), "volume", ((image, label),))
                 for image, label in volume_pairs(root, images_dir, labels_dir, pairs)]
    names = [volume.name for volume in found]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"volume names {twice} occur twice under {root}; rename the files to make them unique")
    return sorted(found, key=lambda volume: volume.name)


def detect_format(root: Path, format: str, pairs: str | Sequence[Sequence[str]] | None) -> str:
    """The layout of ``root``: ``format`` itself, or for ``auto`` the first that applies (see the module
    docstring)."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: use one of {FORMATS}")
    if format != "auto":
        return format
    if pairs:
        return "volumes"
    if sa_med2d.map_files(root):
        return "sa_med2d"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "png"
    return "npz" if next(root.rglob("*.npz"), None) is not None else "volumes"


def _group_slices(
    items: list, kind: str, stems: list[str], pattern: re.Pattern | None, root: Path,
    unmatched: Callable[[str], str] = str,
) -> list[Volume]:
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})[:5]
        raise ValueError(f"slice file names {twice} occur twice under {root}; slice names must be unique")
    groups: dict[str, list] = {}
    for item, stem in zip(items, stems, strict=True):
        match = pattern.search(stem) if pattern else None
        name = unmatched(stem) if match is None else (match.group(1) if match.re.groups else match.group(0))
        groups.setdefault(name, []).append(item)
    return [Volume(name, kind, tuple(members)) for name, members in groups.items()]


def volume_pairs(
    root: Path, images_dir: str | None, labels_dir: str | None, pairs: str | Sequence[Sequence[str]] | None
) -> list[tuple[Path, Path]]:
    """``(image, label)`` paths: from ``pairs`` (list or CSV) or from two folders paired by key."""
    if pairs:
        rows = read_pairs_csv(root / pairs) if isinstance(pairs, str) else [list(row) for row in pairs]
        if any(len(row) != 2 for row in rows):
            raise ValueError(f"data.pairs must list [image, label] pairs, got {rows}")
        found = [(root / str(image), root / str(label)) for image, label in rows]
        for path in (p for pair in found for p in pair):
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} (listed in data.pairs) does not exist; paths are relative to data.root"
                )
        return found
    if images_dir or labels_dir:
        folders = (root / str(images_dir or ""), root / str(labels_dir or ""))
    else:
        candidates = [(root / i, root / lb) for i, lb in VOLUME_FOLDERS if (root / i).is_dir()]
        if not candidates:
            raise FileNotFoundError(
                f"{root} holds no image/label volume folders, .npz slices or PNG pairs. {LAYOUT_HINT}"
            )
        folders = candidates[0]
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(
                f"volume folder {folder} does not exist; set data.images_dir / data.labels_dir"
            )
    visible = [sorted(p for p in folder.iterdir() if not p.name.startswith(".")) for folder in folders]
    images = {pair_key(p): p for p in visible[0] if p.is_dir() or is_nifti(p)}
    labels = {pair_key(p): p for p in visible[1] if is_nifti(p)}
    only_images = [images[k].name for k in sorted(set(images) - set(labels))]
    only_labels = [labels[k].name for k in sorted(set(labels) - set(images))]
    if only_images or only_labels:
        raise ValueError(
            f"{folders[0]} and {folders[1]} must pair by name (rule in advmed/data/ct/sources.py): "
            f"{only_images[:5]} have no label, {only_labels[:5]} no image. Add or remove files, or list "
            "the pairs in data.pairs"
        )
    if not images:
        raise FileNotFoundError(f"{folders[0]} holds no NIfTI volume or DICOM series folder. {LAYOUT_HINT}")
    return [(images[key], labels[key]) for key in sorted(images)]


def read_pairs_csv(path: Path) -> list[list[str]]:
    """Rows ``[image, label]`` of a CSV with columns ``image,label``."""
    if not path.is_file():
        raise FileNotFoundError(f"pairs CSV {path} does not exist; data.pairs names a CSV file in data.root")
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        if not {"image", "label"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path} has columns {reader.fieldnames}; a pairs CSV needs columns image,label")
        return [[row["image"], row["label"]] for row in reader if row["image"] and row["label"]]


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) with a sum "
            "below 1 (the rest of the volumes is for training)"
        )


def assign_volumes(
    names: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    split_volumes: Mapping[str, Sequence[str]] | None,
    seed: int,
) -> dict[str, list[int]]:
    """Volume indices per split. ``split_volumes`` names them (train omitted: every other volume);
    otherwise a seeded draw: ``round(fraction * n)`` volumes for test, then val (at least one when
    the fraction is > 0), the rest for training (at least one)."""
    index = {name: i for i, name in enumerate(names)}
    if split_volumes:
        unknown_splits = sorted(set(split_volumes) - set(SPLIT_NAMES))
        listed = {split: [str(n) for n in split_volumes.get(split) or ()] for split in SPLIT_NAMES}
        unknown = sorted({n for members in listed.values() for n in members} - set(index))
        if unknown_splits or unknown:
            raise ValueError(
                f"split_volumes: unknown split(s) {unknown_splits} / volume(s) {unknown[:10]}; splits are "
                f"{SPLIT_NAMES} and the volumes are {list(names)[:20]}"
            )
        every = [n for members in listed.values() for n in members]
        if len(every) != len(set(every)):
            twice = sorted({n for n in every if every.count(n) > 1})
            raise ValueError(f"split_volumes lists {twice} in two splits; a volume belongs to one split")
        if not listed["train"]:
            listed["train"] = [n for n in names if n not in set(every)]
        return {split: sorted(index[n] for n in members) for split, members in listed.items()}
    check_fractions(val_fraction, test_fraction)
    n = len(names)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    counts = [0 if f == 0 else max(1, int(f * n + 0.5)) for f in (test_fraction, val_fraction)]
    if sum(counts) >= n:
        raise ValueError(
            f"{n} volume(s) cannot give test_fraction={test_fraction} ({counts[0]}) and "
            f"val_fraction={val_fraction} ({counts[1]}) and keep one for training; lower the fractions "
            "(0 = no such split) or add volumes"
        )
    test, val, train = order[: counts[0]], order[counts[0] : sum(counts)], order[sum(counts) :]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}
