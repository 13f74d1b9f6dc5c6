"""SA-Med2D / SAM-Med2D slices: one binary PNG mask per organ instance per image, listed in a json map.

Two namings of the same layout (``images/*.png``, ``masks/*.png`` and a json map in ``root``) are read:

* SAM-Med2D's training layout (OpenGVLab/SAM-Med2D ``data_demo/`` and ``DataLoader.py``):
  ``images/<image>.png`` (``amos_0006_90.png``: case ``amos_0006``, slice 90), masks
  ``masks/<image>_<organ>_<NNN>.png`` (``amos_0006_90_liver_000.png``, ``..._hip_left_001.png``: organ
  name, 3-digit instance index), ``image2label_train.json`` (image path -> [mask paths]) and
  ``label2image_test.json`` (mask path -> image path).
* The SA-Med2D-20M release (``SAMed2Dv1/``): ``images/<modality>--<dataset>--<case>--<axis>_<slice>.png``
  (``ct_00--AbdomenCT1K--Case_00011--x_0040.png``), masks ``masks/<image>--<class id>_<instance>.png``
  (``...--x_0040--0000_001.png``), ``SAMed2D_v1.json`` (image path -> [mask paths]) and
  ``SAMed2D_v1_class_mapping_id.json`` (``{dataset: {class name: class id}}``), which names the class ids.

Every json map in ``root`` (``image2label_*.json``, ``label2image_*.json``, ``SAMed2D_v1.json``) is read and
merged; the splits are still drawn by volume (``split_volumes`` reproduces a given split). The json's
paths may be relative to ``root``, to its parent (SAM-Med2D's ``data_demo/...``) or absolute on another
machine, so files are found by name in ``root/images`` and ``root/masks``; images the json does not list
are not read. A volume is the image name without its slice suffix (``_<slice>`` or
``--<axis>_<slice>``: every axis of a case is one volume, so no split shares a case), unless
``group_pattern`` matches the name.

Masks are binary (0 / 255 or 0 / 1: any non-zero pixel is the organ); masks of organs not asked for are
not read. Overlapping masks: the
smaller mask (fewer pixels in that image) wins, equal sizes go to the later class of ``class_names``;
so a structure inside another (a tumour in its organ, a vessel in the liver) stays visible whatever
the class order. Images are read as one grey channel (8-bit grey, or grey stored as RGB); real colour
(SA-Med2D's endoscopy / dermoscopy parts) is refused. Every slice is decoded into memory at setup, so
the full release (3.7M images of every modality) is read through a subset: ``images/``, ``masks/`` and
a json map listing the CT slices wanted.

Written by hand: no library reads this layout (SAM-Med2D's own loader samples single masks for prompts).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from advmed.data.ct.labels import OrganMap
from advmed.data.png_pairs import read_png_image, read_png_mask

MAP_NAME = re.compile(r"^(image2label_.+|label2image_.+|SAMed2D_v1)\.json$")
CLASS_NAMES_FILE = "SAMed2D_v1_class_mapping_id.json"
_SLICE_SUFFIX = re.compile(r"^(?P<case>.+?)(?:--|_)(?:[xyz]_)?\d+$")  # shortest case: x, y, z slices join it
_ORGAN_INSTANCE = re.compile(r"^(?P<organ>.+)_\d{3}$")  # SAM-Med2D: <organ>_<NNN>
_CLASS_INSTANCE = re.compile(r"^(?P<class_id>\d+)_\d+$")  # SA-Med2D-20M: <class id>_<instance>
# One entry of a slice: (organ name, mask path, json file listing it).
MaskEntry = tuple[str, Path, str]


def map_files(root: Path) -> list[Path]:
    """The SA-Med2D json maps in ``root`` (empty: not this layout)."""
    return sorted(path for path in root.glob("*.json") if MAP_NAME.match(path.name))


def case_of(stem: str) -> str:
    """The volume of an image stem: the stem without its slice suffix (the whole stem if it has none)."""
    match = _SLICE_SUFFIX.match(stem)
    return match.group("case") if match else stem


def find_slices(root: Path) -> list[tuple[Path, tuple[MaskEntry, ...]]]:
    """``(image path, masks)`` of every image the json maps list, sorted by name."""
    files = map_files(root)
    if not files:
        raise FileNotFoundError(
            f"{root} holds no SA-Med2D json map (image2label_train.json, label2image_test.json or "
            "SAMed2D_v1.json) beside images/ and masks/"
        )
    listed: dict[str, dict[str, str]] = {}  # image name -> mask name -> json file
    for path in files:
        for image, mask in _read_map(path):
            listed.setdefault(Path(image).name, {}).setdefault(Path(mask).name, path.name)
    class_names = functools.cache(lambda: _class_names(root))  # read only if a mask names a class id
    slices = []
    for image in sorted(listed):
        stem = Path(image).stem
        masks = tuple((mask_organ(stem, mask, class_names, json_file), root / "masks" / mask, json_file)
                      for mask, json_file in sorted(listed[image].items()))
        slices.append((root / "images" / image, masks))
    return slices


def _read_map(path: Path) -> list[tuple[str, str]]:
    """``(image, mask)`` path pairs of one json map (``label2image_*`` maps masks to images)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable json file ({type(exc).__name__}: {exc})") from exc
    data = data if isinstance(data, dict) else {"": None}  # not a map: refused below
    lists = {key: [value] if isinstance(value, str) else value for key, value in data.items()}
    if not all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in lists.values()):
        raise ValueError(
            f"{path} must map paths to a path or a list of paths, e.g. "
            '{"images/a_12.png": ["masks/a_12_liver_000.png"]}'
        )
    pairs = [(key, value) for key, values in lists.items() for value in values]
    return [(b, a) for a, b in pairs] if path.name.startswith("label2image") else pairs


def _class_names(root: Path) -> dict[tuple[str, int], str]:
    """(dataset, class id) -> class name, from ``SAMed2D_v1_class_mapping_id.json``."""
    path = root / CLASS_NAMES_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: SA-Med2D-20M masks (<image>--<class id>_<instance>.png) name their "
            f"organ by a class id, which {CLASS_NAMES_FILE} of the release names; put it beside the json map"
        )
    names = {}
    try:
        for dataset, classes in json.loads(path.read_text()).items():
            for key, value in classes.items():
                name, class_id = (value, key) if str(key).isdigit() else (key, value)  # either direction
                names[(str(dataset), int(class_id))] = str(name)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} must map each dataset to {{class name: class id}} ({exc})") from exc
    return names


def mask_organ(
    image_stem: str, mask_name: str, class_names: Callable[[], Mapping[tuple[str, int], str]], listed_in: str
) -> str:
    """The organ name of a mask of image ``image_stem`` (see the module docstring for the namings);
    ``class_names()`` gives (dataset, class id) -> name for SA-Med2D-20M's numbered masks."""
    stem = Path(mask_name).stem
    for separator in ("--", "_"):
        if not stem.startswith(image_stem + separator):
            continue
        rest = stem[len(image_stem) + len(separator):]
        numbered = _CLASS_INSTANCE.match(rest)
        if separator == "--" and numbered:
            dataset = image_stem.split("--")[1] if "--" in image_stem else ""
            key = (dataset, int(numbered.group("class_id")))
            if key not in class_names():
                raise ValueError(
                    f"mask {mask_name} (in {listed_in}): class id {key[1]} of dataset {key[0]!r} is not in "
                    f"{CLASS_NAMES_FILE}"
                )
            return class_names()[key]
        named = _ORGAN_INSTANCE.match(rest)
        if named:
            return named.group("organ")
    raise ValueError(
        f"mask {mask_name} (listed in {listed_in} for image {image_stem}.png) is not named "
        f"{image_stem}_<organ>_<NNN>.png (SAM-Med2D) or {image_stem}--<class id>_<instance>.png "
        "(SA-Med2D-20M)"
    )


class MaskOrganMap(OrganMap):
    """An :class:`OrganMap` over the organ names of SA-Med2D masks (``label_preset`` does not apply).

    Each name gets its own id (1, 2, ... in config order) that :func:`read_slice` paints, so that an
    organ no mask carries is reported by name.

    Args:
        organs: output class name -> organ names as in the mask files, e.g.
            ``{kidneys: [kidney_left, kidney_right]}``.
    """

    def __init__(self, organs: Mapping[str, Sequence[str] | str]) -> None:
        self.mask_ids: dict[str, int] = {}
        ids = {}
        for name, values in organs.items():
            values = [values] if isinstance(values, str | int) else list(values)
            for value in values:
                if not isinstance(value, str):
                    raise ValueError(
                        f"organ {name!r}: SA-Med2D masks are named by organ, so data.organs lists organ "
                        f"names as in masks/<image>_<organ>_<NNN>.png (e.g. liver), not label id {value!r}"
                    )
                if value in self.mask_ids:
                    raise ValueError(f"organ name {value!r} is listed twice in {dict(organs)}; list it once")
                self.mask_ids[value] = len(self.mask_ids) + 1
            ids[name] = [self.mask_ids[value] for value in values]
        super().__init__(ids, preset=None)

    def describe(self, ids: Sequence[int]) -> str:
        names = {i: name for name, i in self.mask_ids.items()}
        return f"mask organ name(s) {[names[i] for i in ids]}"


def read_slice(
    image_path: Path, masks: Sequence[MaskEntry], mask_ids: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32 (1, H, W) in [0, 1], label ids uint16 (H, W))`` of one slice: the masks of the
    organs in ``mask_ids`` painted with their ids, larger masks first (the smaller one wins an overlap,
    equal sizes the larger id, i.e. the later class)."""
    listed_in = masks[0][2] if masks else "the json map"
    if not image_path.is_file():
        raise FileNotFoundError(
            f"{image_path} (listed in {listed_in}) does not exist; restore it or remove it from the json"
        )
    image = read_png_image(image_path, 1).numpy()
    layers = []
    for organ, mask_path, json_file in masks:
        if organ not in mask_ids:
            continue  # an organ not asked for: not read
        if not mask_path.is_file():
            raise FileNotFoundError(
                f"{mask_path} (listed in {json_file} for image {image_path.name}) does not exist; restore it "
                "or remove it from the json"
            )
        foreground = read_png_mask(mask_path, 65536).numpy() > 0
        if foreground.shape != image.shape[-2:]:
            raise ValueError(
                f"{mask_path} is {foreground.shape[1]}x{foreground.shape[0]} (WxH) but its image "
                f"{image_path} is {image.shape[2]}x{image.shape[1]}; a mask must have its image's size"
            )
        layers.append((-int(foreground.sum()), mask_ids[organ], foreground))
    labels = np.zeros(image.shape[-2:], dtype=np.uint16)
    for _, mask_id, foreground in sorted(layers, key=lambda layer: layer[:2]):
        labels[foreground] = mask_id
    return image, labels
