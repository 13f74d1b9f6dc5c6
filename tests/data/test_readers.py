"""Image reading and class-folder scanning: formats, conversions and every bad-input message."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from advmed.data import readers
from advmed.data.readers import ImageReadError, read_image, scan_class_folders

CLASSES = ("ADI", "BACK", "NORM")


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)


def _save(path, array, **tiff_kwargs):
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, array, **tiff_kwargs)
    else:
        Image.fromarray(array).save(path)


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    # Conversions warn once per process; each test starts as a new process would.
    monkeypatch.setattr(readers, "_WARNED", set())


def test_tiff_rgb_roundtrip(tmp_path, rgb):
    tifffile.imwrite(tmp_path / "a.tif", rgb, photometric="rgb")
    out = read_image(tmp_path / "a.tif")
    assert out.dtype == np.uint8 and out.shape == (224, 224, 3)
    np.testing.assert_array_equal(out, rgb)


def test_tiff_planar_separate_is_moved_to_channels_last(tmp_path, rgb):
    tifffile.imwrite(tmp_path / "a.tiff", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "a.tiff"), rgb)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_rgba_drops_alpha_with_one_warning(tmp_path, rgb, suffix):
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    for name in ("a", "b"):
        path = tmp_path / f"{name}{suffix}"
        _save(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    with pytest.warns(UserWarning, match="RGBA") as record:
        first = read_image(tmp_path / f"a{suffix}")
        read_image(tmp_path / f"b{suffix}")
    assert len(record) == 1
    np.testing.assert_array_equal(first, rgb)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_grayscale_is_replicated_to_rgb(tmp_path, rgb, suffix):
    gray = rgb[..., 0]
    path = tmp_path / f"g{suffix}"
    _save(path, gray)
    with pytest.warns(UserWarning, match="grayscale"):
        out = read_image(path)
    assert out.shape == (224, 224, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


def test_png_rgb_via_pillow(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_truncated_file_names_file_and_fix(tmp_path, rgb, suffix):
    path = tmp_path / f"cut{suffix}"
    _save(path, rgb, photometric="rgb")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageReadError, match=r"cut\.(tif|png) is truncated or not an image.*re-extract"):
        read_image(path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("this is not a TIFF")
    with pytest.raises(ImageReadError, match="notes.tif is truncated or not an image"):
        read_image(path)


def test_16_bit_is_refused_clearly(tmp_path):
    tifffile.imwrite(tmp_path / "deep.tif", np.zeros((8, 8, 3), np.uint16), photometric="rgb")
    with pytest.raises(ImageReadError, match="uint16.*8-bit"):
        read_image(tmp_path / "deep.tif")


def _layout(root, classes=CLASSES, per_class=2):
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{name}-{i}.tif").write_bytes(b"")  # scanning never opens files
    return root


def test_scan_lists_labelled_files_in_class_order(tmp_path):
    root = _layout(tmp_path / "data")
    (root / ".DS_Store").write_bytes(b"")
    (root / ".cache").mkdir()
    (root / "README.txt").write_text("loose files at the root are not classes")
    (root / "NORM" / ".hidden.tif").write_bytes(b"")
    (root / "NORM" / "Thumbs.db").write_bytes(b"")
    items = scan_class_folders(root, CLASSES)
    assert [(p.name, label) for p, label in items] == [
        ("ADI-0.tif", 0),
        ("ADI-1.tif", 0),
        ("BACK-0.tif", 1),
        ("BACK-1.tif", 1),
        ("NORM-0.tif", 2),
        ("NORM-1.tif", 2),
    ]


def test_scan_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist.*data.root"):
        scan_class_folders(tmp_path / "nowhere", CLASSES)


def test_scan_missing_class_folder_strict_and_lenient(tmp_path):
    root = _layout(tmp_path / "data", classes=("NORM",))
    with pytest.raises(FileNotFoundError, match=r"class folder .*ADI is missing.*re-extract"):
        scan_class_folders(root, CLASSES)
    items = scan_class_folders(root, CLASSES, strict=False)
    assert {label for _, label in items} == {2}


def test_scan_unknown_folder(tmp_path):
    root = _layout(tmp_path / "data")
    (root / "NCT-CRC-HE-100K").mkdir()
    with pytest.raises(ValueError, match=r"unexpected folder\(s\) \['NCT-CRC-HE-100K'\].*Point root at"):
        scan_class_folders(root, CLASSES)


def test_scan_empty_class_folder(tmp_path):
    root = _layout(tmp_path / "data")
    for path in (root / "BACK").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match=r"BACK holds no images.*remove the empty folder"):
        scan_class_folders(root, CLASSES)


@pytest.mark.data
def test_real_nct_tile_reads_as_224_rgb(shared_data):
    sample = shared_data / "nct_crc_he" / "CRC-VAL-HE-7K"
    items = scan_class_folders(
        sample, ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"), strict=False
    )
    assert items and all(label == 6 for _, label in items)  # NORM
    image = read_image(items[0][0])
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert 30 < image.mean() < 240 and image.std() > 5  # real tissue, not a blank decode
