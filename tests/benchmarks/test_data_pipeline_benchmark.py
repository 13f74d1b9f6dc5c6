"""The data pipeline benchmark (experiments/benchmarks/data_pipeline.py) at its smoke settings: the
folder, decoded-cache and HDF5 loaders yield identical batches, its figures come out finite and
positive, and its agreement check can fail. No timed assertions: speed is the benchmark's report."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tifffile

from tests.benchmarks.conftest import benchmark_scripts


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    with benchmark_scripts("data_pipeline") as scripts:
        yield scripts["data_pipeline"]


def test_smoke_run_reports_identical_batches_and_finite_figures(bench, tmp_path, capsys):
    figures = bench.main(["--smoke", "--dir", str(tmp_path)])
    assert figures["same_batches"] is True
    for key in ("folder_img_s", "cache_img_s", "hdf5_img_s", "cache_speedup", "model_img_s"):
        assert math.isfinite(figures[key]) and figures[key] > 0, (key, figures[key])
    assert set(figures["rounds"]) == {"folder", "cache", "hdf5"}
    assert all(len(seconds) == 1 for seconds in figures["rounds"].values())  # --repeats 1
    out = capsys.readouterr().out
    assert "[data setup] 18 tiles 32 px packbits TIFF" in out
    assert "cache/folder" in out and "loader/model: folder" in out
    assert "identical batches: True" in out
    assert not list(tmp_path.iterdir())  # its working folder is removed


def test_written_tiles_are_packbits_tiffs_in_the_nct_layout(bench, tmp_path):
    items = bench.write_tiles(tmp_path, 10, 24, "packbits")
    assert [label for _, label in items] == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]  # classes in turn
    path = items[0][0]
    assert path.parent.name == "ADI" and path.name.startswith("ADI-")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.PACKBITS and tif.pages[0].shape == (24, 24, 3)


def test_same_batches_detects_a_different_tile(bench, tmp_path):
    from advmed.data.classification_datasets import ImageFolderDataset

    args = bench.parse_args(["--smoke"])
    items = bench.write_tiles(tmp_path / "a", 9, 8, "none")
    other = bench.write_tiles(tmp_path / "b", 9, 8, "none")
    loaders = {"a": bench.loader(ImageFolderDataset(items), args), "b": bench.loader(ImageFolderDataset(other), args)}
    assert bench.same_batches(loaders, 3)  # the same seed wrote the same pixels into both folders
    tifffile.imwrite(other[4][0], np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    loaders["b"] = bench.loader(ImageFolderDataset(other), args)
    assert not bench.same_batches(loaders, 3)


def test_hdf5_file_is_chunked_per_image(bench, tmp_path):
    import h5py

    images = [np.full((8, 8, 3), i, np.uint8) for i in range(3)]
    bench.write_hdf5(Path(tmp_path / "x.h5"), images)
    with h5py.File(tmp_path / "x.h5", "r") as file:
        assert file["x"].chunks == (1, 8, 8, 3) and file["x"].compression is None
        assert np.array_equal(file["x"][2], images[2])
