"""What goes wrong in a download, and what the user then sees: a dropped connection (resumed with a
Range request), a checksum mismatch, a folder holding another dataset, a full disk, a server error,
an unknown source."""

from __future__ import annotations

import errno
import json
from collections import namedtuple

import pytest

from advmed.data.download import fetch as fetch_module
from advmed.data.download import space
from advmed.data.download import unpack as unpack_module
from advmed.data.download.errors import (
    ChecksumMismatch,
    ConnectionLost,
    DiskFull,
    DownloadError,
    FolderInUse,
    ServerRefused,
    UnknownSource,
)
from advmed.data.download.job import download
from advmed.data.download.manifest import MANIFEST_FILE, STAGING_DIR
from tests.data.download.conftest import (
    compose_download,
    md5,
    medmnist_npz,
    nct_archives,
    pcam_files,
    run_download,
)

NPZ = "pathmnist_64.npz"


@pytest.fixture
def npz(server) -> dict[str, bytes]:
    files = {NPZ: medmnist_npz(64)}
    server.publish("medmnist", files)
    return files


def get_npz(server, root, files, *extra, sizes=False):
    return run_download(server, "medmnist:pathmnist@64", "medmnist", root, files, *extra, sizes=sizes)


def test_a_dropped_connection_is_resumed_with_a_range_request(server, npz, tmp_path):
    half = len(npz[NPZ]) // 2
    server.drop_once[f"/medmnist/{NPZ}"] = half
    get_npz(server, tmp_path, npz)
    assert server.seen("medmnist", NPZ) == [None, f"bytes={half}-"]
    assert (tmp_path / NPZ).read_bytes() == npz[NPZ]


def test_a_rerun_resumes_the_part_file_of_a_run_that_gave_up(server, npz, tmp_path):
    half = len(npz[NPZ]) // 2
    server.drop_once[f"/medmnist/{NPZ}"] = half
    with pytest.raises(ConnectionLost) as failure:
        get_npz(server, tmp_path, npz, "retries=0")
    message = str(failure.value)
    part = tmp_path / STAGING_DIR / f"{NPZ}.part"
    assert f"{half:,} bytes are kept in {part}" in message and "run the same command again to resume" in message
    assert part.stat().st_size == half and (tmp_path / MANIFEST_FILE).is_file() and not (tmp_path / NPZ).exists()
    get_npz(server, tmp_path, npz)
    assert server.seen("medmnist", NPZ) == [None, f"bytes={half}-"]
    assert (tmp_path / NPZ).read_bytes() == npz[NPZ] and not (tmp_path / STAGING_DIR).exists()


def test_a_server_that_ignores_range_is_read_again_from_the_start(server, npz, tmp_path):
    server.drop_once[f"/medmnist/{NPZ}"] = 100
    server.ignore_range.add(f"/medmnist/{NPZ}")
    get_npz(server, tmp_path, npz)
    assert server.seen("medmnist", NPZ) == [None, "bytes=100-"]
    assert (tmp_path / NPZ).read_bytes() == npz[NPZ]


def test_a_checksum_mismatch_names_the_file_and_leaves_no_dataset_folder(server, npz, tmp_path):
    good = npz[NPZ]
    server.files[f"/medmnist/{NPZ}"] = good[:-1] + bytes([good[-1] ^ 0xFF])  # the server serves wrong bytes
    root = tmp_path / "medmnist"
    with pytest.raises(ChecksumMismatch) as failure:
        get_npz(server, root, npz)
    message = str(failure.value)
    bad = md5(server.files[f"/medmnist/{NPZ}"])
    assert f"{NPZ} (from {server.url('medmnist')}/{NPZ})" in message
    assert f"expected md5 {md5(good)}, got {bad}" in message and "has been deleted" in message
    assert not root.exists()


def test_a_wrong_size_is_caught_before_the_download(server, npz, tmp_path):
    cfg = compose_download(["source=medmnist:pathmnist@64", f"root={tmp_path / 'm'}",
                            f"sources.medmnist.base_url={server.url('medmnist')}",
                            f"sources.medmnist.checksums={{{NPZ}: {{md5: {md5(npz[NPZ])}, size: 12}}}}"])
    with pytest.raises(DownloadError, match=f"serves {len(npz[NPZ]):,} bytes but {NPZ} has 12"):
        download(cfg)
    assert not (tmp_path / "m").exists()


def test_a_folder_holding_another_dataset_is_refused_unless_forced(server, npz, tmp_path):
    get_npz(server, tmp_path, npz)
    archives = nct_archives()
    server.publish("nct_crc_he", archives)
    with pytest.raises(FolderInUse, match=f"{tmp_path} holds the medmnist dataset .* not nct_crc_he: choose"):
        run_download(server, "nct_crc_he", "nct_crc_he", tmp_path, archives)
    run_download(server, "nct_crc_he", "nct_crc_he", tmp_path, archives, "force=true")
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["source"] == "nct_crc_he"
    assert json.loads((tmp_path / "advmed-download.previous.json").read_text())["source"] == "medmnist"
    assert (tmp_path / NPZ).is_file() and (tmp_path / "NCT-CRC-HE-100K" / "ADI").is_dir()  # nothing deleted


def test_a_non_empty_folder_without_a_manifest_is_refused(server, npz, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FolderInUse, match="is not empty \\(notes.txt\\) and holds no advmed-download.json"):
        get_npz(server, tmp_path, npz)
    assert server.requests == [] and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_full_disk_names_the_folder_and_the_space_needed(server, npz, tmp_path, monkeypatch):
    def full(file, block):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fetch_module, "write_block", full)
    with pytest.raises(DiskFull) as failure:
        get_npz(server, tmp_path / "m", npz)
    message = str(failure.value)
    assert f"not enough free space in {tmp_path / 'm' / STAGING_DIR} for the rest of {NPZ}" in message
    assert "it needs about" in message and "run the same command again" in message
    assert not (tmp_path / "m").exists()  # nothing worth resuming was written


def test_too_little_free_space_is_found_before_downloading(server, npz, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(space.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10, 10))
    with pytest.raises(DiskFull, match=f"not enough free space in {tmp_path / 'm'} for 1 file.*10 B is free"):
        get_npz(server, tmp_path / "m", npz, sizes=True)
    assert server.requests == [] and not (tmp_path / "m").exists()


def test_a_missing_file_on_the_server_is_not_retried(server, tmp_path):
    with pytest.raises(ServerRefused, match=f"{server.url('medmnist')}/{NPZ} answered HTTP 404 .*base_url"):
        get_npz(server, tmp_path, {NPZ: b"x"})
    assert len(server.requests) == 1


def test_a_server_that_cannot_be_reached_fails_after_the_retries(tmp_path):
    cfg = compose_download(["source=medmnist:pathmnist@64", f"root={tmp_path / 'm'}", "retries=1", "retry_wait_s=0",
                            "sources.medmnist.base_url=http://127.0.0.1:9/nothing"])  # port 9 (discard): refused
    with pytest.raises(ConnectionLost, match=f"downloading {NPZ} from http://127.0.0.1:9/nothing/{NPZ} failed 2 times"):
        download(cfg)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("name, match", [
    ("nope", "unknown source 'nope'; the known sources are:\n  nct_crc_he"),
    ("medmnist", "medmnist needs a flag: medmnist:<flag>\\[@size\\], flags: pathmnist, "),
    ("medmnist:organmnist3d", "unknown MedMNIST flag 'organmnist3d' \\(3D sets are not read by data=medmnist\\)"),
    ("medmnist:pathmnist@32", "the size must be one of \\(28, 64, 128, 224\\)"),
    ("msd:Task01_BrainTumour", "msd needs one of its CT tasks: .*Task03_Liver, Task07_Pancreas, Task09_Spleen"),
    ("pcam:x", "pcam takes no argument"),
    (None, "no source given: python -m advmed.data.download <source> root=<folder>"),
])
def test_unknown_sources_list_the_known_ones(name, match, tmp_path):
    overrides = [f"root={tmp_path}"] + ([f"source={name}"] if name else [])
    with pytest.raises(UnknownSource, match=match):
        download(compose_download(overrides))


def test_config_mistakes_are_clear_errors(tmp_path):
    with pytest.raises(DownloadError, match="root=<folder> is required"):
        download(compose_download(["source=pcam"]))
    with pytest.raises(DownloadError, match="checksums names \\['x.zip'\\], which nct_crc_he does not publish"):
        download(compose_download(["source=nct_crc_he", f"root={tmp_path}", "sources.nct_crc_he.checksums={x.zip: 'md5:0'}"]))
    with pytest.raises(DownloadError, match="md5 '0' is not 32 lowercase hex digits"):
        download(compose_download(["source=pcam", f"root={tmp_path}",
                                   "sources.pcam.checksums={camelyonpatch_level_2_split_test_y.h5.gz: 'md5:0'}"]))
    with pytest.raises(DownloadError, match="files=\\['nope'\\] are not files of pcam"):
        download(compose_download(["source=pcam", f"root={tmp_path}", "files=[nope]"]))
    with pytest.raises(DownloadError, match="action='fetch'"):
        download(compose_download(["action=fetch", "source=pcam", f"root={tmp_path}"]))


def test_a_disk_full_while_unpacking_keeps_the_verified_archive_for_the_rerun(server, tmp_path, monkeypatch):
    files = {n: d for n, d in pcam_files().items() if "_test_" in n}
    server.publish("pcam", files)
    real = unpack_module.write_block

    def full(file, block):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(unpack_module, "write_block", full)
    with pytest.raises(DiskFull, match=f"not enough free space in {tmp_path / STAGING_DIR} for unpacking "
                                       "camelyonpatch_level_2_split_test_x.h5.gz: it needs about"):
        run_download(server, "pcam", "pcam", tmp_path, files, "files=[test]")
    assert (tmp_path / STAGING_DIR / "camelyonpatch_level_2_split_test_x.h5.gz").is_file()  # verified, kept
    assert not (tmp_path / "camelyonpatch_level_2_split_test_x.h5").exists()  # never half-written
    monkeypatch.setattr(unpack_module, "write_block", real)
    requests = len(server.requests)
    run_download(server, "pcam", "pcam", tmp_path, files, "files=[test]", "keep_archives=true")
    assert len(server.requests) == requests + 2  # y and meta; x came from the staging folder
    assert (tmp_path / "camelyonpatch_level_2_split_test_x.h5").is_file()
    assert (tmp_path / STAGING_DIR / "camelyonpatch_level_2_split_test_y.h5.gz").is_file()  # keep_archives
