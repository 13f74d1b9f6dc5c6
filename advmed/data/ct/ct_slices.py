"""CT slices with organ label maps, from NIfTI or DICOM volumes, TransUNet ``.npz`` slices, PNG pairs or
SA-Med2D / SAM-Med2D slices (one binary mask per organ, :mod:`advmed.data.ct.sa_med2d`).

Where the files are and how they pair, how ``.npz`` / PNG slices are grouped into volumes:
:mod:`advmed.data.ct.sources`. How volumes are read, oriented and sliced (radiological display
orientation, slices along the last axis of ``axcodes``: axial for RAS): :mod:`advmed.data.ct.readers`.

Intensities: volumes and ``npz_values: hu`` slices go through the HU window
(``window_level`` +- ``window_width`` / 2 -> [0, 1], abdomen 40 / 400); ``.npz`` slices stored
windowed keep float values in [0, 1] (TransUNet clipped HU to [-125, 275] and scaled to [0, 1])
and divide uint8 by 255; PNG images are taken as windowed (8-bit / 255, 16-bit / 65535).

Labels: every format's label ids are dataset ids, mapped through ``organs`` / ``label_preset``
(:class:`advmed.data.ct.labels.OrganMap`) to the output classes: 0 = background, then the organs
in config order (``class_names = ["background", *organs]``). PNG colour masks first go through
``colour_map`` (dataset id -> [r, g, b]). SA-Med2D masks are named by organ: ``organs`` lists those
names (``label_preset`` does not apply) and the smaller of two overlapping masks wins.

Splits are drawn by volume, never by slice (seeded ``val_fraction`` / ``test_fraction``, or
``split_volumes`` by name); every slice's ``groups`` is its volume index, so ``train_fraction``
keeps whole volumes. ``slices: {contains: [organ, ...]}`` keeps only slices showing one of them.

All slices are decoded once, at setup, into memory (float16 images already at ``image_size``,
bilinear antialiased, precision ~5e-4 = 0.2 HU at width 400; uint8 masks, nearest): an epoch
never re-reads a volume. Images are
stored with one channel and replicated without a copy when ``in_channels`` is 3. Slice names are
``<volume>_z<index:03d>`` (index along the slice axis before selection) or the file stem of an
``.npz`` / PNG slice.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advmed.data.ct import sa_med2d
from advmed.data.ct.hu_window import check_window, window_hu
from advmed.data.ct.labels import MAX_LABEL_ID, OrganMap
from advmed.data.ct.readers import axial_slices, check_axcodes, load_pair, npz_to_unit, read_npz_slice
from advmed.data.ct.sources import (
    LAYOUT_HINT,
    Volume,
    assign_volumes,
    check_fractions,
    detect_format,
    find_volumes,
)
from advmed.data.png_pairs import read_png_image, read_png_mask
from advmed.data.readers import existing_folder
from advmed.data.segmentation import SegmentationDataModule
from advmed.data.segmentation_datasets import TensorSegmentationDataset, resize_pair

log = logging.getLogger(__name__)

# Chen 2019's four organs, by organ name of the label preset (works for all presets), in the class order
# of data=synthetic_ct and conf/data/ct_slices.yaml: a model trained on one dataset tests on the other.
DEFAULT_ORGANS = {
    "liver": ["liver"],
    "spleen": ["spleen"],
    "kidneys": ["kidney_right", "kidney_left"],
    "pancreas": ["pancreas"],
}


class CTSliceDataModule(SegmentationDataModule):
    """2D CT slices with organ label maps (see the module docstring).

    Args:
        root: dataset folder (required; see :mod:`advmed.data.ct.sources` for the layouts).
        format: ``auto``, ``volumes``, ``npz``, ``png`` or ``sa_med2d``.
        images_dir, labels_dir: volume folders under ``root`` (None: the usual names).
        pairs: ``[[image, label], ...]`` or a CSV file name (columns ``image,label``), under ``root``.
        group_pattern: regex naming the volume of an ``.npz`` / PNG / SA-Med2D slice from its file stem.
        colour_map: dataset label id -> [r, g, b] for RGB PNG masks; None: masks hold label ids.
        npz_values: ``windowed`` (float [0, 1] kept, uint8 / 255) or ``hu`` (HU window applied).
        axcodes: orientation of the volumes before slicing along the last axis (``RAS``: axial).
        affine_tolerance: largest difference (mm) allowed between image and label affines.
        window_level, window_width: HU window mapped to [0, 1].
        label_preset: ``btcv``, ``totalsegmentator``, ``transunet_synapse`` or None (see ``OrganMap``).
        organs: output class name -> dataset label ids or preset organ names (SA-Med2D: the organ names
            of its mask files), in class order.
        unmapped: ``error`` or ``background``, for ids neither mapped, known to the preset nor ignored.
        ignore_ids: dataset ids that are background without an error.
        slices: ``all``, or ``{contains: [organ, ...]}``: only slices showing one of those organs.
        val_fraction, test_fraction: seeded shares of the volumes for val and test (at least one
            volume each when > 0); ignored when ``split_volumes`` is given.
        split_volumes: ``{train: [...], val: [...], test: [...]}`` volume names (no train: the rest).
        num_classes, class_names: ``len(class_names)`` and ``["background", *organs]`` (checked).
        in_channels: 1, or 3 (the gray slice replicated, for 3-channel networks).
        Other arguments: see :class:`~advmed.data.segmentation.SegmentationDataModule`.
    """

    modality = "ct"

    def __init__(
        self,
        root: str | Path | None = None,
        format: str = "auto",
        images_dir: str | None = None,
        labels_dir: str | None = None,
        pairs: str | Sequence[Sequence[str]] | None = None,
        group_pattern: str | None = r"^(case\d+)",
        colour_map: Mapping[int, Sequence[int]] | None = None,
        npz_values: str = "windowed",
        axcodes: str = "RAS",
        affine_tolerance: float = 0.01,
        window_level: float = 40.0,
        window_width: float = 400.0,
        label_preset: str | None = "btcv",
        organs: Mapping[str, Any] | None = None,
        unmapped: str = "error",
        ignore_ids: Sequence[int] | None = None,
        slices: str | Mapping[str, Any] = "all",
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_volumes: Mapping[str, Sequence[str]] | None = None,
        num_classes: int = 5,
        class_names: Sequence[str] = ("background", *DEFAULT_ORGANS),
        in_channels: int = 1,
        image_size: int = 128,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
        train_fraction: float = 1.0,
        extra_train_roots: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            num_classes=num_classes, class_names=class_names, in_channels=in_channels, image_size=image_size,
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, seed=seed,
            train_fraction=train_fraction, extra_train_roots=extra_train_roots,
        )
        self.root = existing_folder(root, "CT slice dataset", LAYOUT_HINT)
        self.layout = {"format": detect_format(self.root, format, pairs), "images_dir": images_dir,
                       "labels_dir": labels_dir, "pairs": pairs}
        organs = DEFAULT_ORGANS if organs is None else organs
        if self.layout["format"] == "sa_med2d":  # masks are named by organ: no label ids, no preset
            self.organ_map: OrganMap = sa_med2d.MaskOrganMap(organs)
        else:
            self.organ_map = OrganMap(organs, label_preset, unmapped, [int(i) for i in ignore_ids or ()])
        self.organ_map.check_classes(num_classes, self.class_names)
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3 (the gray slice replicated), got {in_channels}")
        if npz_values not in ("windowed", "hu"):
            raise ValueError(f"npz_values={npz_values!r}: use 'windowed' (float [0, 1] / uint8) or 'hu'")
        check_window(window_level, window_width)
        if not split_volumes:
            check_fractions(float(val_fraction), float(test_fraction))
        self.axcodes = check_axcodes(axcodes)
        self.contains = self._parse_slices(slices)
        try:
            self.group_pattern = re.compile(group_pattern) if group_pattern else None
        except re.error as exc:
            raise ValueError(f"group_pattern={group_pattern!r} is not a regular expression: {exc}") from exc
        self.colour_map = {int(k): [int(c) for c in v] for k, v in (colour_map or {}).items()} or None
        self.npz_values, self.affine_tolerance = npz_values, float(affine_tolerance)
        self.window = (float(window_level), float(window_width))
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.split_volumes = split_volumes
        self._cache: list[tuple[torch.Tensor, torch.Tensor, list[str]]] | None = None
        self._volume_names: list[str] = []
        self._assignment: dict[str, list[int]] = {}

    def _parse_slices(self, slices: str | Mapping[str, Any]) -> list[int] | None:
        if isinstance(slices, str) and slices == "all":
            return None
        is_selection = isinstance(slices, Mapping) and set(slices) == {"contains"}
        organs = slices.get("contains") if is_selection else None
        organs = [organs] if isinstance(organs, str) else [str(o) for o in organs or ()]
        unknown = [name for name in organs if name not in self.class_names[1:]]
        if not organs or unknown:
            raise ValueError(
                f"slices={slices!r}: use 'all' or {{contains: [organ, ...]}} with organs of "
                f"{self.class_names[1:]} (unknown: {unknown})"
            )
        return [self.class_names.index(name) for name in organs]

    def volume_names(self, split: str) -> list[str]:
        """Names of the volumes of ``split`` (train / val / test)."""
        self._load()
        return [self._volume_names[i] for i in self._assignment[split]]

    def _read_volume(self, volume: Volume) -> tuple[np.ndarray, np.ndarray, list[str], list[np.ndarray]]:
        """``(images float32 (Z, C, H, W) in [0, 1], classes uint8 (Z, H, W), names, label ids present
        per file)``."""
        if volume.kind == "volume":
            ((image_path, label_path),) = volume.items
            hu, labels, _ = load_pair(image_path, label_path, self.axcodes, self.affine_tolerance)
            classes, present = self.organ_map(axial_slices(labels), label_path)
            names = [f"{volume.name}_z{z:03d}" for z in range(len(classes))]
            return axial_slices(window_hu(hu, *self.window))[:, None], classes, names, [present]
        images, classes, present, names = [], [], [], []
        for item in volume.items:
            if volume.kind == "npz":
                image, label = read_npz_slice(item)
                image = npz_to_unit(image, item, self.npz_values, *self.window)[None]
                label_path, name = item, item.stem
            elif volume.kind == "sa_med2d":
                image_path, masks = item
                image, label = sa_med2d.read_slice(image_path, masks, self.organ_map.mask_ids)
                label_path, name = image_path, image_path.stem
            else:
                image_path, label_path = item
                image, name = read_png_image(image_path, self.in_channels).numpy(), image_path.stem
                label = read_png_mask(label_path, MAX_LABEL_ID + 1, self.colour_map).numpy()
            if image.shape[-2:] != label.shape:
                raise ValueError(
                    f"{label_path} is {label.shape} but its image is {image.shape[-2:]}; they must match"
                )
            mapped, ids = self.organ_map(label, label_path)
            images.append(image)
            classes.append(mapped)
            present.append(ids)
            names.append(name)
        shapes = sorted({image.shape for image in images})
        if len(shapes) > 1:
            raise ValueError(
                f"the slices of volume {volume.name} ({volume.items[0]}, ...) have different sizes {shapes}; "
                "export them alike, or give them different volume names (data.group_pattern)"
            )
        return np.stack(images), np.stack(classes), names, present

    def _load(self) -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        """Every volume's selected slices, decoded once: (float16 (Z, C, S, S), uint8 (Z, S, S), names)."""
        if self._cache is not None:
            return self._cache
        volumes = find_volumes(self.root, group_pattern=self.group_pattern, **self.layout)
        names = [volume.name for volume in volumes]
        assignment = assign_volumes(
            names, self.val_fraction, self.test_fraction, self.split_volumes, self.seed
        )
        cache, seen, size = [], set(), self.image_size
        for number, volume in enumerate(volumes, start=1):
            images, classes, slice_names, present = self._read_volume(volume)
            seen.update(int(i) for ids in present for i in ids)
            if self.contains is None:
                keep = list(range(len(images)))
            else:
                keep = np.flatnonzero(np.isin(classes, self.contains).any(axis=(1, 2))).tolist()
            resized = [resize_pair(torch.from_numpy(images[z]), torch.from_numpy(classes[z]), size) for z in keep]
            kept_images = torch.zeros((0, images.shape[1], size, size))
            kept_masks = torch.zeros((0, size, size))
            if resized:
                kept_images, kept_masks = torch.stack([r[0] for r in resized]), torch.stack([r[1] for r in resized])
            cache.append((kept_images.half(), kept_masks.to(torch.uint8), [slice_names[z] for z in keep]))
            log.info(
                "CT slices: read volume %d/%d (%s, %d slices kept)", number, len(volumes), volume.name, len(keep)
            )
        self._check_organs(seen, sum(len(part[2]) for part in cache))
        self._cache, self._volume_names, self._assignment = cache, names, assignment
        return cache

    def _check_organs(self, seen: set[int], kept: int) -> None:
        describe = self.organ_map.describe  # label ids, or SA-Med2D's organ names
        for organ, ids in self.organ_map.organs.items():
            absent = [i for i in ids if i not in seen]
            if absent:
                warnings.warn(
                    f"organ {organ!r}: {describe(absent)} occur in no volume under {self.root} "
                    f"(label_preset={self.organ_map.preset}); check data.organs / data.label_preset",
                    UserWarning, stacklevel=2,
                )
        if kept == 0:
            organs = [self.class_names[c] for c in self.contains or ()]
            raise ValueError(
                f"no slice under {self.root} shows {organs} "
                f"({[describe(self.organ_map.organs[o]) for o in organs]}); check data.organs / data.label_preset, "
                "or choose other organs in data.slices"
            )

    def _build_split(self, split: str) -> TensorSegmentationDataset:
        cache = self._load()
        indices = self._assignment[split]
        parts = [cache[i] for i in indices]
        if parts:
            images, masks = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            groups = torch.cat([torch.full((len(p[2]),), i) for i, p in zip(indices, parts)]).long()
        else:
            images, masks, groups = cache[0][0][:0], cache[0][1][:0], torch.zeros(0, dtype=torch.long)
        if images.shape[1] != self.in_channels:
            images = images.expand(-1, self.in_channels, -1, -1)  # the gray slice replicated, no copy
        names = [name for p in parts for name in p[2]]
        return TensorSegmentationDataset(images, masks, groups, names, image_size=self.image_size)
