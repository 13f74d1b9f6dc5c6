"""The decoded cache of folder datasets (advmed/data/decoded_cache.py), through the NCT-CRC-HE and HCD
DataModules on folders in the datasets' exact layouts: the same items bit for bit, rebuilt when the
folder changes, never a half-written cache, and a clear error for what it cannot hold."""

from __future__ import annotations

import logging
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from filelock import FileLock
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from advmed.data import decoded_cache_writer
from advmed.data.decoded_cache import CacheError, cache_path, main, open_decoded_cache, verify_decoded_cache
from advmed.data.histology.nct_crc_he import CLASS_NAMES, NCTCRCHEDataModule
from advmed.data.lymph_node.hcd import HCDDataModule
from advmed.data.readers import ImageReadError, scan_class_folders
from tests.conftest import CONFIG_DIR
from tests.data.histology.test_nct_crc_he import write_nct_layout
from tests.data.lymph_node.test_hcd import write_hcd


@pytest.fixture(scope="module")
def nct_root(tmp_path_factory) -> Path:
    return write_nct_layout(tmp_path_factory.mktemp("nct") / "NCT-CRC-HE-100K", per_class=3)


def _nct(root, **kwargs) -> NCTCRCHEDataModule:
    defaults = {"per_class": 3, "test_fraction": 0.34, "val_fraction": 0.5, "batch_size": 4, "num_workers": 0}
    return NCTCRCHEDataModule(root=root, **{**defaults, **kwargs})


def _assert_same_items(folder_set, cached_set) -> None:
    assert len(folder_set) == len(cached_set) > 0
    for i in range(len(folder_set)):
        (x, y), (cx, cy) = folder_set[i], cached_set[i]
        assert torch.equal(x, cx) and torch.equal(y, cy), i


def _only_cache(cache_dir: Path) -> Path:
    (path,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    return path


def _images_file(cache: Path) -> Path:
    (images,) = cache.glob("images-*.npy")
    return images


def _paths(root: Path) -> list[Path]:
    return [path for path, _ in scan_class_folders(root, CLASS_NAMES)]


@pytest.mark.parametrize("image_size", [224, 128])
def test_nct_items_equal_the_folder_items_bit_for_bit(nct_root, tmp_path, image_size):
    external = write_nct_layout(tmp_path / "CRC-VAL-HE-7K", per_class=1)
    plain = _nct(nct_root, image_size=image_size, test_root=external)
    cached = _nct(nct_root, image_size=image_size, test_root=external, cache_dir=tmp_path / "cache")
    plain.setup()
    cached.setup()
    for split in ("train_set", "val_set", "test_set"):
        _assert_same_items(getattr(plain, split), getattr(cached, split))
    assert sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "cache").iterdir() if p.is_dir()) == [
        "CRC-VAL-HE-7K", "NCT-CRC-HE-100K"]  # one cache per folder
    x, _ = next(iter(cached.train_dataloader()))
    assert x.shape == (4, 3, image_size, image_size)


def test_hcd_items_and_predictions_equal_the_folder_ones(tmp_path):
    root = tmp_path / "histopathologic-cancer-detection"
    write_hcd(root, n_neg=8, n_pos=4, n_test=3)
    kwargs = {"test_size": 3, "val_size": 2, "train_size": None, "image_size": 48, "center_crop": 64, "num_workers": 0}
    plain, cached = HCDDataModule(root=root, **kwargs), HCDDataModule(root=root, cache_dir=tmp_path / "c", **kwargs)
    for dm in (plain, cached):
        dm.setup()
        dm.setup("predict")
    for split in ("train_set", "val_set", "test_set"):
        _assert_same_items(getattr(plain, split), getattr(cached, split))
    assert plain.predict_set.ids == cached.predict_set.ids
    assert all(torch.equal(plain.predict_set[i], cached.predict_set[i]) for i in range(3))
    # the labelled cache holds every tile of train/, so that CSV edits need no rebuild
    manifest = verify_decoded_cache(cache_path(tmp_path / "c", root / "train"))
    assert len(manifest["files"]) == 12 and manifest["tile_shape"] == [96, 96, 3]


def test_an_unchanged_folder_is_opened_not_rebuilt(nct_root, tmp_path, monkeypatch, caplog):
    _nct(nct_root, cache_dir=tmp_path).setup()
    images = _images_file(_only_cache(tmp_path))

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(decoded_cache_writer, "_decode_rows", no_decoding)
    with caplog.at_level(logging.INFO, logger="advmed.data.decoded_cache"):
        _nct(nct_root, cache_dir=tmp_path).setup()
    assert _images_file(_only_cache(tmp_path)) == images
    assert "27 tiles of" in caplog.text and "up to date" in caplog.text


def test_a_changed_folder_is_rebuilt_reusing_unchanged_tiles(tmp_path, caplog):
    root = write_nct_layout(tmp_path / "NCT-CRC-HE-100K", per_class=2)
    cache_dir = tmp_path / "cache"
    _nct(root, per_class=None, cache_dir=cache_dir).setup()
    old_images = _images_file(_only_cache(cache_dir))
    changed = sorted((root / "ADI").iterdir())[0]
    tifffile.imwrite(changed, np.full((224, 224, 3), 7, np.uint8), photometric="rgb")  # same size
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    sorted((root / "TUM").iterdir())[0].unlink()
    tifffile.imwrite(root / "MUC" / "MUC-NEW.tif", np.full((224, 224, 3), 9, np.uint8), photometric="rgb")
    with caplog.at_level(logging.INFO, logger="advmed.data.decoded_cache"):
        cached = _nct(root, per_class=None, cache_dir=cache_dir)
        cached.setup()
    assert "stale (1 file(s) added, 1 removed, 1 changed since it was built)" in caplog.text
    assert "reused 16 unchanged tiles" in caplog.text
    assert not old_images.exists() and len(list(_only_cache(cache_dir).glob("images-*"))) == 1
    plain = _nct(root, per_class=None)
    plain.setup()
    for split in ("train_set", "val_set", "test_set"):
        _assert_same_items(getattr(plain, split), getattr(cached, split))


def test_a_truncated_or_unreadable_cache_is_rebuilt_with_a_warning(nct_root, tmp_path):
    paths = _paths(nct_root)
    cache = open_decoded_cache(nct_root, paths, tmp_path)
    expected = np.stack([cache.images_for(paths)[i] for i in range(len(paths))])
    with open(cache.images_path, "r+b") as file:
        file.truncate(1000)
    with pytest.warns(UserWarning, match=r"unusable \(.*images-.*\.npy is 1,000 bytes, expected .*truncated"):
        rebuilt = open_decoded_cache(nct_root, paths, tmp_path)
    assert np.array_equal(np.stack([rebuilt.images_for(paths)[i] for i in range(len(paths))]), expected)
    (cache.path / "manifest.json").write_text("{not json")
    with pytest.warns(UserWarning, match=r"unusable \(cannot read it: JSONDecodeError"):
        open_decoded_cache(nct_root, paths, tmp_path)
    verify_decoded_cache(cache.path)


def test_a_failed_build_leaves_no_cache_that_looks_valid(tmp_path):
    root = write_nct_layout(tmp_path / "NCT-CRC-HE-100K", per_class=1)
    bad = root / "STR" / "STR-BROKEN.tif"
    bad.write_bytes(b"II*\x00 truncated")
    cache = cache_path(tmp_path / "cache", root)
    cache.mkdir(parents=True)
    (cache / "images-killed.npy.partial").write_bytes(b"left by a kill -9")
    with pytest.raises(ImageReadError, match="STR-BROKEN.tif is truncated or not an image"):
        open_decoded_cache(root, _paths(root), tmp_path / "cache")
    assert not (cache / "manifest.json").exists() and not list(cache.glob("images-*.npy"))
    bad.unlink()
    built = open_decoded_cache(root, _paths(root), tmp_path / "cache")
    assert [p.name for p in cache.glob("images-*")] == [built.images_path.name]  # the leftover is gone


def test_parallel_build_writes_the_same_bytes(nct_root, tmp_path, monkeypatch):
    monkeypatch.setattr(decoded_cache_writer, "_CHUNK", 4)  # 27 files -> 7 tasks for 2 worker processes
    serial = open_decoded_cache(nct_root, _paths(nct_root), tmp_path / "serial", workers=0)
    parallel = open_decoded_cache(nct_root, _paths(nct_root), tmp_path / "parallel", workers=2)
    assert parallel.manifest["images_sha256"] == serial.manifest["images_sha256"]


def test_cached_images_travel_to_dataloader_workers_without_their_pixels(nct_root, tmp_path):
    dm = _nct(nct_root, cache_dir=tmp_path, per_class=None)
    dm.setup("test")
    images = dm.test_set.dataset.images  # a SubsetDataset of the ImageFolderDataset
    images[0]  # opens the memory map in this process
    assert len(pickle.dumps(images)) < 2000 < images[0].nbytes * len(images)
    batches = [next(iter(DataLoader(dm.test_set, batch_size=9, num_workers=n))) for n in (0, 2)]
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])


def test_a_second_builder_waits_for_the_first(nct_root, tmp_path, caplog):
    paths = _paths(nct_root)
    lock = FileLock(str(cache_path(tmp_path, nct_root)) + ".lock")
    result = {}
    with caplog.at_level(logging.INFO, logger="advmed.data.decoded_cache"):
        with lock:
            worker = threading.Thread(target=lambda: result.update(cache=open_decoded_cache(nct_root, paths, tmp_path)))
            worker.start()
            worker.join(timeout=1.0)
            assert worker.is_alive() and "cache" not in result  # blocked while another process builds
        worker.join()
    assert "waiting for another process building the decoded cache" in caplog.text
    verify_decoded_cache(result["cache"].path)


def test_verify_detects_a_changed_byte(nct_root, tmp_path, capsys):
    cache = open_decoded_cache(nct_root, _paths(nct_root), tmp_path)
    assert main(["verify", str(cache.path)]) == 0
    assert f"ok {cache.path}: 27 tiles 224x224x3 of {nct_root.resolve()}" in capsys.readouterr().out
    with open(cache.images_path, "r+b") as file:
        file.seek(-1, os.SEEK_END)
        last = file.read(1)
        file.seek(-1, os.SEEK_END)
        file.write(bytes([last[0] ^ 1]))
    with pytest.raises(CacheError, match=rf"{cache.images_path.name} has sha256 .*corrupt; delete the folder"):
        cache.verify()
    assert main(["verify", str(cache.path)]) == 1
    assert "FAILED" in capsys.readouterr().err


def test_verify_names_what_is_not_a_cache(tmp_path, capsys):
    with pytest.raises(CacheError, match=r"absent is not a folder; give a cache folder"):
        verify_decoded_cache(tmp_path / "absent")
    with pytest.raises(CacheError, match=r"no manifest.json: not a decoded cache, or its first build never finished"):
        verify_decoded_cache(tmp_path)
    assert main(["verify", str(tmp_path), str(tmp_path / "absent")]) == 1
    assert capsys.readouterr().err.count("FAILED") == 2


def test_tiles_of_another_size_are_refused(tmp_path):
    root = write_nct_layout(tmp_path / "NCT-CRC-HE-100K", per_class=1)
    tifffile.imwrite(root / "TUM" / "TUM-SMALL.tif", np.zeros((200, 224, 3), np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match=r"TUM-SMALL.tif is 224x200 but the folder's first tile is 224x224.*"
                                         r"data.cache_dir=null"):
        open_decoded_cache(root, _paths(root), tmp_path / "cache")


def test_too_little_disk_space_is_refused_before_writing(nct_root, tmp_path, monkeypatch):
    monkeypatch.setattr(decoded_cache_writer.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10**6})())
    with pytest.raises(OSError, match=r"needs 4 MB but only 1 MB are free .*larger disk.*cache_dir=null"):
        open_decoded_cache(nct_root, _paths(nct_root), tmp_path)
    assert not list(tmp_path.rglob("images-*"))


def test_a_cache_dir_that_is_a_file_is_refused(nct_root, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match=r"data.cache_dir=.*file is a file; point it at a folder"):
        _nct(nct_root, cache_dir=tmp_path / "file").setup()


@pytest.mark.parametrize("name", ["nct_crc_he", "hcd"])
def test_configs_read_the_cache_dir_from_the_environment(name, monkeypatch, tmp_path):
    monkeypatch.delenv("ADVMED_DATA_CACHE", raising=False)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        assert compose(overrides=[f"+data={name}"]).data.cache_dir is None  # off by default
        monkeypatch.setenv("ADVMED_DATA_CACHE", str(tmp_path))
        assert compose(overrides=[f"+data={name}"]).data.cache_dir == str(tmp_path)
