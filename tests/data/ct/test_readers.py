"""CT volume readers, HU window, display orientation and organ maps, on files written in the exact
formats (NIfTI with non-identity affines, DICOM CT series, TransUNet .npz) and on the real
TotalSegmentator sample. The writers here are shared with test_ct_slices.py."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from advmed.data.ct.hu_window import window_hu
from advmed.data.ct.labels import OrganMap
from advmed.data.ct.readers import (
    axial_slices,
    check_axcodes,
    dicom_series_files,
    load_pair,
    load_volume,
    npz_to_unit,
    read_npz_slice,
)
from advmed.data.readers import ImageReadError

SHAPE = (32, 28, 6)  # (x, y, z) voxels in RAS
SPACING = (2.0, 2.0, 3.0)
ORIGIN = (-40.0, -30.0, 100.0)  # RAS position of voxel (0, 0, 0)
# Synthetic BTCV ids -> HU of the voxels they cover: each organ has its own intensity.
ORGAN_HU = {1: 60.0, 2: 30.0, 3: 20.0, 6: 150.0, 11: -20.0}
# (x, y) ranges in RAS voxels: x grows to the patient's right, y to the front.
BOXES = {1: (slice(4, 10), slice(4, 10)), 2: (slice(22, 28), slice(14, 20)), 3: (slice(4, 10), slice(14, 20)),
         6: (slice(18, 30), slice(4, 12)), 11: (slice(12, 18), slice(20, 26))}


def phantom(seed: int = 0, z_organs: range = range(1, 5)) -> tuple[np.ndarray, np.ndarray]:
    """RAS (x, y, z) HU volume and BTCV label volume: air -1000, body 0, organs at their HU in
    slices ``z_organs``; a marker at the patient's right-anterior corner (high x, high y) of every slice."""
    rng = np.random.default_rng(seed)
    hu = np.full(SHAPE, -1000.0, dtype=np.float32)
    hu[1:-1, 1:-1] = 0.0
    labels = np.zeros(SHAPE, dtype=np.uint8)
    for z in z_organs:
        for organ, (xs, ys) in BOXES.items():
            hu[xs, ys, z] = ORGAN_HU[organ]
            labels[xs, ys, z] = organ
    hu[-3:, -3:] = 500.0  # right-anterior marker
    hu += rng.integers(-2, 3, SHAPE)  # a little noise, far from the organ contrasts
    return hu, labels


def ras_affine(spacing=SPACING, origin=ORIGIN) -> np.ndarray:
    return np.array([[spacing[0], 0, 0, origin[0]], [0, spacing[1], 0, origin[1]], [0, 0, spacing[2], origin[2]],
                     [0, 0, 0, 1.0]])


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path, codes: str | None = None) -> Path:
    """Save a RAS array; ``codes`` (e.g. ``LPS``, ``ASL``) stores it with permuted / flipped axes
    (the same world grid, a different affine)."""
    image = nib.Nifti1Image(array, affine)
    if codes:
        image = image.as_reoriented(nib.orientations.ornt_transform(
            nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(tuple(codes))))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def write_nifti_pair(image_path: Path, label_path: Path, seed: int = 0, image_codes="LPS", label_codes="ASL",
                     z_organs: range = range(1, 5)) -> tuple[Path, Path]:
    hu, labels = phantom(seed, z_organs)
    save_nifti(hu.astype(np.int16), ras_affine(), image_path, image_codes)
    save_nifti(labels, ras_affine(), label_path, label_codes)
    return image_path, label_path


def write_dicom_series(folder: Path, hu: np.ndarray, spacing=SPACING, origin=ORIGIN, series_uid: str | None = None,
                       skip: tuple[int, ...] = (), seed: int = 0) -> Path:
    """A CT Image Storage series of the RAS (x, y, z) volume ``hu`` (uint16, RescaleIntercept -1024),
    axial slices with IOP [1,0,0, 0,1,0] (LPS); file names and InstanceNumbers shuffled vs position."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    nx, ny, nz = hu.shape
    # LPS: x_lps = -x_ras, y_lps = -y_ras. Column c runs along +x_lps, row r along +y_lps.
    lps_origin = (-(origin[0] + (nx - 1) * spacing[0]), -(origin[1] + (ny - 1) * spacing[1]))
    order = list(range(nz))
    random.Random(seed).shuffle(order)
    for rank, k in enumerate(order):
        if k in skip:
            continue
        # pixel (r, c) = RAS voxel (nx-1-c, ny-1-r)
        pixels = hu[::-1, ::-1, k].T
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", "p1", "1.2.3", series_uid
        ds.InstanceNumber = nz - rank  # shuffled: MONAI's own order would be wrong
        ds.ImagePositionPatient = [lps_origin[0], lps_origin[1], origin[2] + k * spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [spacing[1], spacing[0]], spacing[2]
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.ascontiguousarray(pixels + 1024).astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{rank:04d}", enforce_file_format=True)
    return folder


def write_npz_slices(folder: Path, cases=("case0005", "case0007"), per_case: int = 3, dtype=np.float32) -> list[Path]:
    """TransUNet Synapse layout: <folder>/<case>_slice<k:03d>.npz, image in [0, 1] (float32) or uint8,
    uint8 label with TransUNet ids (5 liver at intensity 0.75; 7 spleen or 4 right kidney at 0.5)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for c, case in enumerate(cases):
        for k in range(per_case):
            image = np.full((24, 24), 0.25, dtype=np.float32)
            label = np.zeros((24, 24), dtype=np.uint8)
            if k > 0:  # slice 0 of each case shows no organ
                image[4:12, 4:12], label[4:12, 4:12] = 0.75, 5  # liver
                image[14:20, 14:20], label[14:20, 14:20] = 0.5, (7, 4)[c % 2]  # spleen, or right kidney
            stored = (image * 255).round().astype(np.uint8) if dtype == np.uint8 else image
            path = folder / f"{case}_slice{k:03d}.npz"
            np.savez(path, image=stored, label=label)
            paths.append(path)
    return paths


# ---------------------------------------------------------------------------- window, axcodes


def test_hu_window_maps_level_and_width_to_unit_range():
    out = window_hu(np.array([-1000, -160, 40, 240, 3000]), level=40, width=400)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32


@pytest.mark.parametrize("width", [0, -400, float("nan")])
def test_hu_window_rejects_non_positive_width(width):
    with pytest.raises(ValueError, match=r"window_width.*must be > 0"):
        window_hu(np.zeros(3), level=40, width=width)


def test_axcodes_must_name_three_axes():
    assert check_axcodes("las") == "LAS"
    for bad in ("RRS", "RA", "XYZ"):
        with pytest.raises(ValueError, match="orientation code"):
            check_axcodes(bad)


# ---------------------------------------------------------------------------- NIfTI


def test_nifti_pair_with_different_affines_lines_up_after_orientation(tmp_path):
    image_path, label_path = write_nifti_pair(tmp_path / "img0001.nii.gz", tmp_path / "label0001.nii.gz")
    assert nib.aff2axcodes(nib.load(image_path).affine) == ("L", "P", "S")
    assert nib.aff2axcodes(nib.load(label_path).affine) == ("A", "S", "L")
    hu, labels, affine = load_pair(image_path, label_path)
    assert hu.shape == labels.shape == SHAPE
    np.testing.assert_allclose(affine, ras_affine())
    for organ, value in ORGAN_HU.items():
        assert np.abs(hu[labels == organ] - value).max() <= 2  # every label voxel on its organ's HU
    # Display orientation: the right-anterior marker in the top-left corner, liver (patient's right) left.
    slices, slice_labels = axial_slices(hu), axial_slices(labels)
    assert slices.shape == (SHAPE[2], SHAPE[1], SHAPE[0])
    assert slices[0, :3, :3].min() >= 490
    assert np.nonzero(slice_labels[2] == 6)[1].mean() < SHAPE[0] / 2 < np.nonzero(slice_labels[2] == 1)[1].mean()


def test_nifti_pair_of_different_shapes_or_affines_is_refused(tmp_path):
    hu, labels = phantom()
    image = save_nifti(hu, ras_affine(), tmp_path / "ct.nii.gz")
    cropped = save_nifti(labels[:, :, :4], ras_affine(), tmp_path / "short.nii.gz")
    shifted = save_nifti(labels, ras_affine(origin=(-38.0, -30.0, 100.0)), tmp_path / "shifted.nii.gz")
    with pytest.raises(ValueError, match=r"(?s)ct\.nii\.gz.*short\.nii\.gz.*shapes \(32, 28, 6\) vs \(32, 28, 4\).*resample"):
        load_pair(image, cropped)
    with pytest.raises(ValueError, match=r"(?s)shifted\.nii\.gz.*largest difference 2 mm.*affine_tolerance"):
        load_pair(image, shifted)
    load_pair(image, shifted, affine_tolerance=2.5)  # header rounding can be allowed explicitly


def test_corrupt_nifti_names_the_file(tmp_path):
    good = save_nifti(phantom()[0], ras_affine(), tmp_path / "good.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(good.read_bytes()[:300])  # truncated gzip stream
    with pytest.raises(ImageReadError, match=r"bad\.nii\.gz cannot be read as a NIfTI volume.*truncated or corrupt"):
        load_volume(bad)
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 10))
    with pytest.raises(ImageReadError, match="junk.nii.gz"):
        load_volume(tmp_path / "junk.nii.gz")


# ---------------------------------------------------------------------------- DICOM


def test_dicom_series_is_ordered_by_position_and_rescaled_to_hu(tmp_path):
    hu, labels = phantom()
    hu[..., :] += np.arange(SHAPE[2]) * 10.0  # each slice brighter than the one below it
    folder = write_dicom_series(tmp_path / "series", hu)
    label_path = save_nifti(labels, ras_affine(), tmp_path / "seg.nii.gz", "LPS")
    loaded, loaded_labels, affine = load_pair(folder, label_path)  # aligned with the NIfTI label
    np.testing.assert_allclose(loaded, np.round(hu), atol=0.5)
    np.testing.assert_allclose(affine, ras_affine(), atol=1e-4)
    assert (loaded_labels == labels).all()
    files = dicom_series_files(folder)
    assert [f.name for f in files] != sorted(f.name for f in files)  # names do not give the order


def test_dicom_folder_with_two_series_is_refused(tmp_path):
    hu = phantom()[0]
    folder = write_dicom_series(tmp_path / "mixed", hu[..., :3], series_uid="1.2.3.4")
    write_dicom_series(tmp_path / "other", hu[..., :3], series_uid="1.2.3.5")
    (tmp_path / "other" / "IM0000").rename(folder / "IM9999")
    with pytest.raises(ValueError, match=r"mixed.*mixes 2 DICOM series.*1\.2\.3\.4.*1\.2\.3\.5.*own folder"):
        load_volume(folder)


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    folder = write_dicom_series(tmp_path / "gap", phantom()[0], skip=(3,))
    with pytest.raises(ValueError, match=r"gap misses slice\(s\): the slices are 3 mm apart but 6 mm separate"):
        load_volume(folder)


# ---------------------------------------------------------------------------- organ map


def test_organ_map_merges_ids_and_maps_preset_names():
    organ_map = OrganMap({"kidneys": [2, 3], "liver": ["liver"]}, preset="btcv")
    classes, present = organ_map(np.array([[0, 2, 3], [6, 11, 1]]), "a.nii.gz")
    assert classes.tolist() == [[0, 1, 1], [2, 0, 0]] and present.tolist() == [0, 1, 2, 3, 6, 11]
    assert organ_map.class_names == ["background", "kidneys", "liver"]
    assert OrganMap({"liver": ["liver"]}, preset="totalsegmentator").organs == {"liver": [5]}


def test_organ_map_errors_name_the_file_the_ids_and_the_fix():
    strict = OrganMap({"liver": [6]})
    with pytest.raises(ValueError, match=r"label0003\.nii\.gz holds label id\(s\) \[2, 7\].*data\.unmapped=background"):
        strict(np.array([0, 2, 6, 7]), "label0003.nii.gz")
    assert OrganMap({"liver": [6]}, unmapped="background")(np.array([0, 2, 6]), "x")[0].tolist() == [0, 0, 1]
    assert OrganMap({"liver": [6]}, ignore_ids=[2])(np.array([0, 2, 6]), "x")[0].tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match=r"values in \[-1000, 40\].*image rather than a label map"):
        strict(np.array([-1000.0, 40.0]), "ct.nii.gz")
    with pytest.raises(ValueError, match=r"class_names=\['background', 'liver'\] and data.num_classes=2"):
        strict.check_classes(3, ["background", "liver", "spleen"])
    with pytest.raises(ValueError, match="'livre' is not an organ name of label_preset=btcv"):
        OrganMap({"liver": ["livre"]}, preset="btcv")
    with pytest.raises(ValueError, match="listed under two organs"):
        OrganMap({"a": [1], "b": [1, 2]})


# ---------------------------------------------------------------------------- npz


def test_npz_slices_float_kept_uint8_scaled_hu_windowed(tmp_path):
    path = write_npz_slices(tmp_path, cases=("case0005",))[1]
    image, label = read_npz_slice(path)
    np.testing.assert_allclose(npz_to_unit(image, path, "windowed", 40, 400)[4, 4], 0.75)
    assert npz_to_unit(np.array([[0, 255]], np.uint8), path, "windowed", 40, 400).tolist() == [[0.0, 1.0]]
    np.testing.assert_allclose(npz_to_unit(np.array([[40.0, 240.0]]), path, "hu", 40, 400), [[0.5, 1.0]])
    with pytest.raises(ValueError, match=r"spans \[-125, 275\].*npz_values=hu"):
        npz_to_unit(np.array([[-125.0, 275.0]]), path, "windowed", 40, 400)


def test_npz_without_image_or_label_is_refused(tmp_path):
    np.savez(tmp_path / "case0001_slice000.npz", img=np.zeros((4, 4)), label=np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"case0001_slice000\.npz holds the arrays \['img', 'label'\].*'image' and 'label'"):
        read_npz_slice(tmp_path / "case0001_slice000.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ImageReadError, match="broken.npz"):
        read_npz_slice(tmp_path / "broken.npz")


# ---------------------------------------------------------------------------- real sample


@pytest.fixture(scope="module")
def totalsegmentator(shared_data):
    folder = shared_data / "ct_totalsegmentator"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return {
        "nifti": load_pair(folder / "example_ct_sm.nii.gz", folder / "example_seg.nii.gz"),
        "dicom": load_pair(folder / "example_ct_dicom", folder / "example_seg_dicom.nii.gz"),
    }


@pytest.mark.data
@pytest.mark.parametrize("source", ["nifti", "dicom"])
def test_real_sample_liver_label_lands_on_liver_hu(totalsegmentator, source):
    hu, labels, affine = totalsegmentator[source]
    liver, spleen = labels == 5, labels == 1  # TotalSegmentator v2 ids
    assert liver.sum() > 1000
    assert 0 < np.median(hu[liver]) < 200  # soft tissue, not air / fat / bone
    air = hu[labels == 0]
    assert hu[liver].mean() > air.mean() + 300
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    # Radiological display: the liver (patient's right) on the image's left, the spleen on its right.
    shown = axial_slices(liver.astype(np.uint8)), axial_slices(spleen.astype(np.uint8))
    width = shown[0].shape[2]
    assert np.nonzero(shown[0])[2].mean() < width / 2 < np.nonzero(shown[1])[2].mean()
