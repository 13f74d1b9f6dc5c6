"""``verify`` on folders filled by hand (the sources behind an account, and a downloadable one), and
``download`` of a source behind an account: what to fetch, where to put it."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from advmed.data.download.errors import VerificationFailed
from advmed.data.download.job import download
from tests.data.download.conftest import compose_download, ct_volume, gz_nifti, pcam_h5, tiff_bytes

HCD_COUNTS = "sources.kaggle_hcd.counts={train: 4, test: 2}"


def fill_hcd(root: Path) -> Path:
    """Kaggle's layout: ``train_labels.csv``, ``train/<id>.tif``, ``test/<id>.tif``."""
    ids = [f"{i:040x}" for i in range(4)]
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for i, tile_id in enumerate(ids):
        (root / "train" / f"{tile_id}.tif").write_bytes(tiff_bytes(i % 2, i, size=96))
    for i in range(2):
        (root / "test" / f"{i + 100:040x}.tif").write_bytes(tiff_bytes(0, i, size=96))
    (root / "train_labels.csv").write_text("id,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(ids)))
    return root


def fill_btcv(root: Path, n: int = 3) -> Path:
    for i in range(1, n + 1):
        image, label = ct_volume(i)
        (root / "img").mkdir(parents=True, exist_ok=True)
        (root / "label").mkdir(exist_ok=True)
        (root / "img" / f"img{i:04d}.nii.gz").write_bytes(gz_nifti(image))
        (root / "label" / f"label{i:04d}.nii.gz").write_bytes(gz_nifti(label))
    return root


def verify(source: str, root: Path, *extra: str) -> dict:
    return download(compose_download(["action=verify", f"source={source}", f"root={root}", *extra]))


def test_kaggle_hcd_filled_by_hand_verifies(tmp_path, capsys):
    result = verify("kaggle_hcd", fill_hcd(tmp_path), HCD_COUNTS)
    out = capsys.readouterr().out
    assert result["ok"] and "kaggle_hcd in" in out and ": OK" in out
    assert "train_labels.csv: 4 labelled ids, one per train/ tile" in out
    assert "Kaggle publishes no checksum" in out and f"use it with: data=hcd data.root={tmp_path}" in out


def test_kaggle_hcd_missing_tile_is_named(tmp_path):
    root = fill_hcd(tmp_path)
    missing = sorted((root / "train").iterdir())[1]
    missing.unlink()
    with pytest.raises(VerificationFailed) as failure:
        verify("kaggle_hcd", root, HCD_COUNTS)
    message = str(failure.value)
    assert f"1 id(s) of train_labels.csv have no file in {root / 'train'} (first: {missing.stem})" in message
    assert f"{root / 'train'}: 3 tiles, expected 4" in message


def test_kaggle_hcd_published_counts_apply_without_an_override(tmp_path):
    with pytest.raises(VerificationFailed, match="4 tiles, expected 220,025"):
        verify("kaggle_hcd", fill_hcd(tmp_path))


def test_btcv_filled_by_hand_verifies_and_a_missing_label_is_named(tmp_path):
    root = fill_btcv(tmp_path)
    assert verify("btcv", root, "sources.btcv.counts={volumes: 3}")["ok"]
    (root / "label" / "label0002.nii.gz").unlink()
    with pytest.raises(VerificationFailed, match="\\['img0002.nii.gz'\\] have no label"):
        verify("btcv", root, "sources.btcv.counts={volumes: 3}")


def test_btcv_label_of_another_shape_is_a_problem(tmp_path):
    root = fill_btcv(tmp_path, n=2)
    image, _ = ct_volume(0)
    (root / "label" / "label0002.nii.gz").write_bytes(gz_nifti(image[:8].astype("uint8")))
    with pytest.raises(VerificationFailed, match="label0002.nii.gz is \\(8, 16, 3\\) but img0002.nii.gz is \\(16, 16, 3\\)"):
        verify("btcv", root, "sources.btcv.counts={volumes: 2}")


def test_download_of_a_source_behind_an_account_says_what_to_fetch(tmp_path, capsys):
    result = download(compose_download(["source=kaggle_hcd", f"root={tmp_path / 'hcd'}"]))
    out = capsys.readouterr().out
    assert result["status"] == "manual download needed"
    assert f"kaggle competitions download -c histopathologic-cancer-detection -p {tmp_path / 'hcd'}" in out
    assert f"python -m advmed.data.download verify kaggle_hcd root={tmp_path / 'hcd'}" in out
    assert not (tmp_path / "hcd").exists()  # nothing is created for a manual source

    download(compose_download(["source=btcv", f"root={tmp_path}"]))
    assert "in Files > Abdomen, download RawData.zip" in capsys.readouterr().out

    fill_hcd(tmp_path / "filled")
    result = download(compose_download(["source=kaggle_hcd", f"root={tmp_path / 'filled'}", HCD_COUNTS]))
    assert result["status"] == "in place"


def test_verify_of_an_empty_place_says_how_to_fill_it(tmp_path):
    with pytest.raises(VerificationFailed, match=f"{tmp_path / 'x'} does not exist.*python -m advmed.data.download pcam"):
        verify("pcam", tmp_path / "x")


def test_pcam_filled_by_hand_with_a_file_still_gzipped(tmp_path):
    for split in ("train", "valid", "test"):
        for name, data in pcam_h5(split).items():
            (tmp_path / name).write_bytes(data)
    counts = "sources.pcam.counts={train: 4, valid: 2, test: 2}"
    result = verify("pcam", tmp_path, counts)
    assert result["ok"]
    x = tmp_path / "camelyonpatch_level_2_split_valid_x.h5"
    x.with_name(x.name + ".gz").write_bytes(gzip.compress(x.read_bytes()))
    x.unlink()
    with pytest.raises(VerificationFailed, match="camelyonpatch_level_2_split_valid_x.h5 missing \\(.* still gzipped"):
        verify("pcam", tmp_path, counts)
