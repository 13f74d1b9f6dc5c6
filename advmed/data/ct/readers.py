"""Reading CT volumes and slices with label maps: orientation, display slices, ``.npz`` intensities.

Volumes (a NIfTI file, or a folder holding one DICOM series) load with MONAI's ``LoadImage``
(``NibabelReader`` / ``PydicomReader``; nibabel and pydicom underneath, HU from
RescaleSlope/Intercept) and are reoriented with ``Orientation(axcodes=...)``, so that an image
and its label volume line up whatever their affines; they must then share shape and affine.
What is written by hand here, because MONAI does not do it:

* DICOM series checks (one SeriesInstanceUID, one orientation, no missing or duplicate slice)
  and ordering by ImagePositionPatient: MONAI's reader stacks a series by InstanceNumber, so
  :func:`_position_ordered_reader` renumbers the in-memory datasets by their position along
  the slice normal before MONAI stacks them (files are never modified).
* Slices for display (:func:`axial_slices`): slices run along the last axis of ``axcodes``;
  with the default ``RAS`` (x to the patient's right, y anterior, z superior) they are axial,
  seen from the feet (radiological convention): the patient's right on the image's left
  (column 0), anterior at the top (row 0). The same index operation is used for any
  ``axcodes``, so image and label always agree.
* The intensity rule of ``.npz`` slices (HU ones go through :func:`advmed.data.ct.hu_window.window_hu`).

The organ map (dataset label ids -> output classes) lives in :mod:`advmed.data.ct.labels`.

MONAI's noisy construction messages (nvImageCodec plugin, deprecated defaults) are silenced
inside :func:`quiet_monai` only, never process-wide. MONAI is imported on first use.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from advmed.data.ct.hu_window import window_hu
from advmed.data.readers import ImageReadError

NIFTI_SUFFIXES = (".nii.gz", ".nii")



@contextlib.contextmanager
def quiet_monai() -> Iterator[None]:
    """Silence MONAI's nvImageCodec notices and deprecation chatter inside this block only."""
    logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
            yield
    finally:
        logger.setLevel(level)


def check_axcodes(axcodes: str) -> str:
    """Three orientation letters, one of each pair L/R, A/P, S/I (e.g. ``RAS``, ``LPS``)."""
    codes = str(axcodes).upper()
    pairs = sorted({pair for letter in codes for pair in ("LR", "AP", "IS") if letter in pair})
    if len(codes) != 3 or pairs != ["AP", "IS", "LR"]:
        raise ValueError(
            f"axcodes={axcodes!r} is not an orientation code: use one letter of each of L/R, A/P, S/I, "
            "e.g. RAS"
        )
    return codes


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def volume_stem(path: Path) -> str:
    """File name without ``.nii.gz`` / ``.nii``; a DICOM folder's name."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _slice_position(ds) -> float:
    """Position of a DICOM slice along its normal (row x column direction cosines)."""
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    return float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=np.float64)))


def dicom_series_files(folder: Path) -> list[Path]:
    """The DICOM files of a one-series folder in position order, after checking the series:
    one SeriesInstanceUID, one orientation and size, evenly spaced positions (no gap, no duplicate)."""
    import pydicom

    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    headers = []
    for path in files:
        if not pydicom.misc.is_dicom(path):
            continue  # MONAI's reader skips them as well
        try:
            headers.append((path, pydicom.dcmread(path, stop_before_pixels=True)))
        except Exception as exc:
            raise ImageReadError(
                f"{path} is not a readable DICOM file ({type(exc).__name__}: {exc}); remove it"
            ) from exc
    if not headers:
        raise FileNotFoundError(f"{folder} holds no DICOM file; a DICOM volume is a folder with one series")
    series = Counter(str(ds.get("SeriesInstanceUID", "<none>")) for _, ds in headers)
    if len(series) > 1:
        raise ValueError(
            f"{folder} mixes {len(series)} DICOM series (SeriesInstanceUID: number of files {dict(series)}); "
            "one folder must hold exactly one series: move each series into its own folder"
        )
    for path, ds in headers:
        missing = [tag for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows")
                   if tag not in ds]
        if missing:
            raise ValueError(f"{path} lacks {missing}; a CT slice needs them to be placed in the volume")
    first_path, first = headers[0]
    for path, ds in headers[1:]:
        if not np.allclose(ds.ImageOrientationPatient, first.ImageOrientationPatient, atol=1e-4) or (
            (ds.Rows, ds.Columns) != (first.Rows, first.Columns)
        ):
            raise ValueError(
                f"{path} and {first_path} differ in ImageOrientationPatient or size; a series folder "
                "must hold slices of one acquisition: separate the series"
            )
    positions = np.array([_slice_position(ds) for _, ds in headers])
    order = np.argsort(positions, kind="stable")
    steps = np.diff(positions[order])
    ordered = [headers[i][0] for i in order]
    for k in np.flatnonzero(steps < 1e-3):
        raise ValueError(
            f"{ordered[k]} and {ordered[k + 1]} in {folder} lie at the same position "
            f"({positions[order][k]:.2f} mm): duplicate slices or two series in one folder; keep one copy / "
            "one series"
        )
    if len(steps) >= 2:
        spacing = float(np.median(steps))
        for k in np.flatnonzero(steps > 1.5 * spacing):
            raise ValueError(
                f"{folder} misses slice(s): the slices are {spacing:.3g} mm apart but {steps[k]:.3g} mm "
                f"separate {ordered[k].name} and {ordered[k + 1].name}; the series is incomplete: copy or "
                "export it again"
            )
    return ordered


@functools.cache
def _loader():
    with quiet_monai():
        from monai.transforms import LoadImage

        return LoadImage(image_only=True, ensure_channel_first=True)  # builds every reader: once per process


@functools.cache
def _nifti_reader():
    with quiet_monai():
        from monai.data import NibabelReader

        return NibabelReader()


@functools.cache
def _position_ordered_reader():
    with quiet_monai():
        from monai.data import PydicomReader

    class PositionOrderedPydicomReader(PydicomReader):
        """PydicomReader stacking a series by ImagePositionPatient (MONAI sorts by InstanceNumber)."""

        def _combine_dicom_series(self, data, filenames):
            for rank, index in enumerate(np.argsort([_slice_position(ds) for ds in data], kind="stable")):
                data[index].InstanceNumber = rank + 1  # in memory only: the key MONAI sorts by
            return super()._combine_dicom_series(data, filenames)

    return PositionOrderedPydicomReader()


@functools.cache
def _orientation(axcodes: str):
    with quiet_monai():
        from monai.transforms import Orientation

        return Orientation(axcodes=axcodes)


def load_volume(path: str | Path, axcodes: str = "RAS") -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI file or a DICOM series folder as a float32 (X, Y, Z) array (HU for CT) and its 4x4
    affine, reoriented to ``axcodes``."""
    path = Path(path)
    axcodes = check_axcodes(axcodes)
    if path.is_dir():
        dicom_series_files(path)  # checks the series before MONAI stacks it
        reader, what = _position_ordered_reader(), "DICOM series"
    elif not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; check data.root and the image/label pairs")
    elif is_nifti(path):
        reader, what = _nifti_reader(), "NIfTI volume"
    else:
        raise ValueError(f"{path} is neither a NIfTI file (.nii, .nii.gz) nor a DICOM series folder")
    load, orient = _loader(), _orientation(axcodes)
    try:
        with quiet_monai():
            volume = orient(load(path, reader=reader))
    except Exception as exc:
        raise ImageReadError(
            f"{path} cannot be read as a {what} ({type(exc).__name__}: {exc}); it is truncated or corrupt: "
            "download, extract or export it again"
        ) from exc
    if volume.ndim != 4 or volume.shape[0] != 1:
        raise ValueError(f"{path} holds an array of shape {tuple(volume.shape)}; expected one 3D volume")
    return np.asarray(volume.array[0], dtype=np.float32), np.asarray(volume.affine, dtype=np.float64)


def load_pair(
    image_path: str | Path, label_path: str | Path, axcodes: str = "RAS", affine_tolerance: float = 0.01
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, labels, affine)`` of an image volume and its label volume, both reoriented to
    ``axcodes``; they must then have the same shape and affine (within ``affine_tolerance`` mm)."""
    image, image_affine = load_volume(image_path, axcodes)
    labels, label_affine = load_volume(label_path, axcodes)
    difference = float(np.abs(image_affine - label_affine).max())
    if image.shape != labels.shape or difference > affine_tolerance:
        show = functools.partial(np.array2string, precision=3, suppress_small=True)
        raise ValueError(
            f"image {image_path} and label {label_path} do not share a voxel grid after orientation to "
            f"{axcodes}: shapes {image.shape} vs {labels.shape}, affines\n{show(image_affine)}\nvs\n"
            f"{show(label_affine)}\n(largest difference {difference:.3g} mm, affine_tolerance="
            f"{affine_tolerance}). Pair the right files, or resample the label onto the image grid (nearest "
            "neighbour, e.g. MONAI ResampleToMatch); raise data.affine_tolerance only if the difference is "
            "header rounding"
        )
    return image, labels, image_affine


def axial_slices(volume: np.ndarray) -> np.ndarray:
    """(X, Y, Z) -> (Z, Y, X) slices in display orientation (see the module docstring): row 0 =
    highest y (anterior for RAS), column 0 = highest x (the patient's right for RAS)."""
    return np.ascontiguousarray(np.flip(np.asarray(volume).transpose(2, 1, 0), axis=(1, 2)))


def read_npz_slice(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(image, label)`` (H, W) arrays of a TransUNet-style ``.npz`` slice, as stored."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            if "image" not in keys or "label" not in keys:
                raise KeyError(keys)
            image, label = npz["image"], npz["label"]
    except KeyError as exc:
        raise ValueError(
            f"{path} holds the arrays {exc.args[0]}, but a slice needs 'image' and 'label' (TransUNet "
            "layout: np.savez(path, image=..., label=...)); re-export the slice"
        ) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ImageReadError(
            f"{path} is truncated or not an .npz file ({type(exc).__name__}: {exc}); re-export it"
        ) from exc
    image, label = np.squeeze(image), np.squeeze(label)
    if image.ndim != 2 or image.shape != label.shape:
        raise ValueError(
            f"{path}: 'image' {image.shape} and 'label' {label.shape} must be 2D slices of the same size"
        )
    return image, label


def npz_to_unit(image: np.ndarray, path: Path, values: str, level: float, width: float) -> np.ndarray:
    """A stored npz slice image -> float32 [0, 1]. ``values="windowed"``: uint8 / 255, float in
    [0, 1] kept (already windowed, e.g. TransUNet's HU clipped to [-125, 275] and scaled);
    ``values="hu"``: the values are HU and go through the HU window."""
    if values == "hu":
        return window_hu(image, level, width)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    low, high = float(image.min(initial=0.0)), float(image.max(initial=0.0))
    if image.dtype.kind != "f" or low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(
            f"{path}: image of {image.dtype} spans [{low:.4g}, {high:.4g}], but npz_values=windowed expects "
            "float in [0, 1] or uint8; if the values are HU set data.npz_values=hu (then windowed with "
            "data.window_level / data.window_width)"
        )
    return np.clip(image.astype(np.float32), 0.0, 1.0)
