"""Organ label maps: dataset label ids -> output classes (0 = background, then organs in config order).

Label ids differ between datasets, so organ names map to ids per dataset: ``LABEL_PRESETS`` holds
the ids of BTCV / Synapse, TotalSegmentator v2 and TransUNet's preprocessed Synapse slices, and
:class:`OrganMap` applies a config's ``organs`` to label arrays with a clear error for ids it
does not expect (or maps them to background, as configured). Hand-written: a lookup table, which
no library provides with these checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

MAX_LABEL_ID = 65535  # larger values mean the file is not a label map

# Dataset label ids per organ name. BTCV / Synapse multi-organ (13 organs); TotalSegmentator v2
# "total" task (117 ids, the abdominal ones named here); TransUNet's preprocessed Synapse npz
# slices (8 organs renumbered). An id of the preset that the organ map does not use is background.
LABEL_PRESETS: dict[str, dict[str, int]] = {
    "btcv": {
        "spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "esophagus": 5, "liver": 6,
        "stomach": 7, "aorta": 8, "inferior_vena_cava": 9, "portal_vein_and_splenic_vein": 10,
        "pancreas": 11, "adrenal_gland_right": 12, "adrenal_gland_left": 13,
    },
    "totalsegmentator": {
        "spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 5, "stomach": 6,
        "pancreas": 7, "adrenal_gland_right": 8, "adrenal_gland_left": 9, "esophagus": 15,
        "small_bowel": 18, "duodenum": 19, "colon": 20, "urinary_bladder": 21, "heart": 51, "aorta": 52,
        "inferior_vena_cava": 63, "portal_vein_and_splenic_vein": 64,
    },
    "transunet_synapse": {
        "aorta": 1, "gallbladder": 2, "kidney_left": 3, "kidney_right": 4, "liver": 5, "pancreas": 6,
        "spleen": 7, "stomach": 8,
    },
    # Medical Segmentation Decathlon (Simpson et al. 2019), the labels of each task's dataset.json
    # (`python -m advmed.data.download msd:<task>` fetches them).
    "msd_liver": {"liver": 1, "liver_tumour": 2},
    "msd_pancreas": {"pancreas": 1, "pancreas_tumour": 2},
    "msd_spleen": {"spleen": 1},
}
PRESET_MAX_ID = {"btcv": 13, "totalsegmentator": 117, "transunet_synapse": 8, "msd_liver": 2, "msd_pancreas": 2,
                 "msd_spleen": 1}
UNMAPPED_POLICIES = ("error", "background")


class OrganMap:
    """Dataset label ids -> output classes: 0 = background, then the organs in config order.

    Args:
        organs: output class name -> dataset label ids (ints), or organ names of ``preset``.
        preset: ``btcv``, ``totalsegmentator``, ``transunet_synapse`` or None: names the ids of
            ``organs`` may use, and declares every id of that dataset known (background when unused).
        unmapped: what an id that is neither in ``organs``, known to the preset, nor in ``ignore_ids``
            does: ``error`` (default: a clear error naming the file) or ``background``.
        ignore_ids: further dataset ids that are background without an error.
    """

    def __init__(
        self,
        organs: Mapping[str, Sequence[int | str] | int | str],
        preset: str | None = None,
        unmapped: str = "error",
        ignore_ids: Sequence[int] = (),
    ) -> None:
        if preset is not None and preset not in LABEL_PRESETS:
            raise ValueError(
                f"label_preset={preset!r} is unknown; use one of {sorted(LABEL_PRESETS)} or null"
            )
        if unmapped not in UNMAPPED_POLICIES:
            raise ValueError(f"unmapped={unmapped!r}: use one of {UNMAPPED_POLICIES}")
        if not isinstance(organs, Mapping) or not 0 < len(organs) < 256:
            raise ValueError(f"organs must map 1..255 class names to label ids, e.g. {{liver: [6]}}; got {organs!r}")
        table = LABEL_PRESETS.get(preset or "", {})
        self.organs = {str(name): [] for name in organs}
        self.source_to_class: dict[int, int] = {}
        for index, (name, ids) in enumerate(organs.items(), start=1):
            for value in [ids] if isinstance(ids, int | str) else list(ids):
                if isinstance(value, str):
                    if not preset:
                        raise ValueError(
                            f"organ {name!r}: the organ name {value!r} needs a label_preset (one of "
                            f"{sorted(LABEL_PRESETS)}); without one, give label ids"
                        )
                    if value not in table:
                        raise ValueError(
                            f"organ {name!r}: {value!r} is not an organ name of label_preset={preset}; use "
                            f"label ids or one of {sorted(table)}"
                        )
                    value = table[value]
                if int(value) <= 0 or int(value) > MAX_LABEL_ID:
                    raise ValueError(
                        f"organ {name!r}: label id {value} must be in 1..{MAX_LABEL_ID} (0 is background)"
                    )
                if int(value) in self.source_to_class:
                    raise ValueError(
                        f"label id {value} is listed under two organs in {dict(organs)}; list it once"
                    )
                self.source_to_class[int(value)] = index
                self.organs[str(name)].append(int(value))
        self.preset, self.unmapped = preset, unmapped
        preset_ids = range(1, PRESET_MAX_ID.get(preset or "", 0) + 1)
        self.background_ids = {int(i) for i in ignore_ids} | set(preset_ids)
        self.class_names = ["background", *self.organs]

    def describe(self, ids: Sequence[int]) -> str:
        """How messages name dataset ids of this map (a subclass may name them otherwise)."""
        return f"label id(s) {list(ids)}"

    def check_classes(self, num_classes: int, class_names: Sequence[str]) -> None:
        """``class_names`` must be ``["background", *organs]`` and ``num_classes`` their number."""
        if list(class_names) != self.class_names or num_classes != len(self.class_names):
            raise ValueError(
                f"num_classes={num_classes}, class_names={list(class_names)} do not match the organ map: set "
                f"data.class_names={self.class_names} and data.num_classes={len(self.class_names)} "
                "(background, then the organs in data.organs order)"
            )

    def __call__(self, labels: np.ndarray, source: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """``(classes uint8, dataset ids present)`` of a label array read from ``source``."""
        labels = np.asarray(labels)
        if labels.dtype.kind == "f" and not (np.isfinite(labels).all() and (labels == np.rint(labels)).all()):
            raise ValueError(f"{source} holds non-integer values: is it an image rather than a label map?")
        low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
        if low < 0 or high > MAX_LABEL_ID:
            raise ValueError(
                f"{source} holds values in [{low}, {high}], not label ids in 0..{MAX_LABEL_ID}: "
                "is it an image rather than a label map? Check the image/label pairing"
            )
        ids = labels.astype(np.uint16)  # MAX_LABEL_ID fits; a quarter of int64's memory for big volumes
        present = np.flatnonzero(np.bincount(ids.ravel(), minlength=1))
        known = self.source_to_class.keys() | self.background_ids
        unknown = [int(i) for i in present if i and i not in known]
        if unknown and self.unmapped == "error":
            raise ValueError(
                f"{source} holds label id(s) {unknown[:20]} that are not in the organ map {self.organs} "
                f"(label_preset={self.preset}); add them to data.organs, list them in data.ignore_ids, set "
                "data.label_preset to this dataset's preset, or set data.unmapped=background"
            )
        lookup = np.zeros(high + 1, dtype=np.uint8)
        for source_id, class_id in self.source_to_class.items():
            if source_id <= high:
                lookup[source_id] = class_id
        return lookup[ids], present
