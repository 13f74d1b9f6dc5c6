"""The URLs and checksums the sources carry agree with the installed libraries they were copied from,
and nothing reaches the network before a download is asked for.

The libraries' tables are read from their source files with :mod:`ast` (importing medmnist would
create ~/.medmnist; MONAI's and torchvision's dataset modules import much more than the tables)."""

from __future__ import annotations

import ast
import importlib.util
import socket
from pathlib import Path
from typing import Any

import pytest

from advmed.data.download.job import download
from advmed.data.download.registry import SOURCES, build_source
from advmed.data.download.sources.medmnist import FLAGS, RECORD, SIZES, file_name
from advmed.data.download.sources.msd import MIRROR, TASKS
from advmed.data.download.sources.pcam import GZ_FILES
from tests.data.download.conftest import compose_download


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed: nothing to compare with")
    return Path(spec.submodule_search_locations[0]) / relative


def assigned_literal(path: Path, name: str, in_class: str | None = None) -> Any:
    """The literal value assigned to ``name`` at the top of ``path`` (or in class ``in_class``)."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    if in_class is not None:
        body = next(node.body for node in body if isinstance(node, ast.ClassDef) and node.name == in_class)
    for node in body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not found in {path}")


def test_medmnist_table_is_medmnist_info():
    info = assigned_literal(package_file("medmnist", "info.py"), "INFO")
    two_d = [flag for flag in info if not flag.endswith("3d")]
    assert list(FLAGS) == two_d
    for flag, entry in FLAGS.items():
        assert (entry.channels, entry.classes) == (info[flag]["n_channels"], len(info[flag]["label"]))
        for size in SIZES:
            suffix = "" if size == 28 else f"_{size}"
            assert entry.md5[size] == info[flag][f"MD5{suffix}"]
            assert f"{RECORD}/files/{file_name(flag, size)}?download=1" == info[flag][f"url{suffix}"]


def test_msd_table_is_monai_decathlon_dataset():
    path = package_file("monai", "apps/datasets.py")
    resource = assigned_literal(path, "resource", in_class="DecathlonDataset")
    md5 = assigned_literal(path, "md5", in_class="DecathlonDataset")
    for task, (checksum, _) in TASKS.items():
        assert resource[task] == f"{MIRROR}/{task}.tar" and md5[task] == checksum


def test_pcam_md5_values_are_torchvisions():
    files = assigned_literal(package_file("torchvision", "datasets/pcam.py"), "_FILES", in_class="PCAM")
    theirs = {name: checksum for split in files.values() for name, _, checksum in split.values()}
    ours = {f"camelyonpatch_level_2_split_{split}_{key}.h5": checksum for (split, key), (checksum, _) in GZ_FILES.items()}
    assert ours == theirs


def test_nothing_reaches_the_network_without_a_download(monkeypatch, tmp_path, capsys):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was reached")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for name in ("nct_crc_he", "pcam", "medmnist:pathmnist@224", "msd:Task03_Liver", "kaggle_hcd", "btcv"):
        source = build_source(name)
        assert all(f.url.startswith("https://") for f in source.remote_files())
        assert source.usage(tmp_path)
    assert set(SOURCES) == {"nct_crc_he", "pcam", "medmnist", "msd", "kaggle_hcd", "btcv"}
    download(compose_download(["action=list"]))
    assert "medmnist:<flag>[@size]" in capsys.readouterr().out
