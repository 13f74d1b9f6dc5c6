"""A local HTTP server for the download tests, tiny archives in each source's exact layout, config composition.

The server (``http.server`` in a thread on 127.0.0.1) serves bytes registered per path, honours
``Range: bytes=N-`` (206 / 416), records every request with its Range header, can drop the
connection once mid-file or ignore Range, and shuts itself down after ``LIFETIME_S`` whatever
happens to the test. Nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from advmed.data.download.job import download
from advmed.data.histology.nct_crc_he import CLASS_NAMES
from tests.conftest import CONFIG_DIR

LIFETIME_S = 120.0  # the server stops by itself after this, even if a test never tears it down


@dataclass
class FileServer:
    """What the local server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> bytes
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    drop_once: dict[str, int] = field(default_factory=dict)  # path -> byte after which the connection drops, once
    ignore_range: set[str] = field(default_factory=set)  # paths answered 200 whatever the Range
    port: int = 0

    def url(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.port}/{prefix}"

    def publish(self, prefix: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self.files[f"/{prefix}/{name}"] = data

    def seen(self, prefix: str, name: str) -> list[str | None]:
        """The Range headers of the requests for ``/<prefix>/<name>``, in order (None: no Range)."""
        return [rng for path, rng in self.requests if path == f"/{prefix}/{name}"]


class _Handler(BaseHTTPRequestHandler):
    timeout = 10  # seconds a connection may idle: a stuck client never blocks the server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        state: FileServer = self.server.state  # type: ignore[attr-defined]
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        rng = self.headers.get("Range")
        state.requests.append((path, rng))
        data = state.files.get(path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and path not in state.ignore_range:
            start = int(match[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        drop = state.drop_once.pop(path, None)
        if drop is not None and drop > start:
            self.wfile.write(data[start:drop])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the peer sees the connection end mid-file
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def log_message(self, *args) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a dropped connection is on purpose
        pass


@pytest.fixture
def server():
    """A :class:`FileServer` listening on 127.0.0.1 (a free port) for the duration of the test."""
    state = FileServer()
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = state
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(LIFETIME_S, httpd.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield state
    finally:
        watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- config and runs


def compose_download(overrides: list[str]) -> DictConfig:
    """``conf/download.yaml`` composed as ``python -m advmed.data.download`` would with these overrides."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("download", overrides=overrides)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def checksum_override(family: str, files: dict[str, bytes], sizes: bool = False) -> str:
    """``sources.<family>.checksums={name: {md5: ..}, ...}``: the test files' own checksums replace the published ones."""
    entries = ", ".join(f"{name}: {{md5: {md5(data)}" + (f", size: {len(data)}" if sizes else "") + "}"
                        for name, data in files.items())
    return f"sources.{family}.checksums={{{entries}}}"


def run_download(server: FileServer, source: str, family: str, root: Path, files: dict[str, bytes],
                 *extra: str, sizes: bool = False) -> dict:
    """``download`` of ``source`` from the local server, its files' checksums set by config override."""
    cfg = compose_download([
        f"source={source}", f"root={root}", f"sources.{family}.base_url={server.url(family)}",
        checksum_override(family, files, sizes), "retry_wait_s=0", "timeout_s=10", *extra,
    ])
    return download(cfg)


# --------------------------------------------------------------------------- tiny datasets, real layouts


def tiff_bytes(label: int, index: int, size: int = 16) -> bytes:
    tile = np.full((size, size, 3), 20 * label, dtype=np.uint8)
    tile[0, 0] = index
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, tile, photometric="rgb")
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def nct_archives(per_class: dict[str, int] | None = None) -> dict[str, bytes]:
    """NCT-CRC-HE-100K.zip and CRC-VAL-HE-7K.zip: ``<folder>/<CLASS>/<CLASS>-<ID>.tif`` (16 px tiles),
    plus the ``__MACOSX/`` entries a zip made on a Mac carries."""
    per_class = per_class or {"NCT-CRC-HE-100K": 4, "CRC-VAL-HE-7K": 2}
    archives = {}
    for folder, count in per_class.items():
        members = {f"{folder}/{name}/{name}-{i:04X}.tif": tiff_bytes(label, i)
                   for label, name in enumerate(CLASS_NAMES) for i in range(count)}
        members[f"__MACOSX/{folder}/._ADI"] = b"\x00\x05\x16\x07"
        archives[f"{folder}.zip"] = zip_bytes(members)
    return archives


PCAM_SPLITS = {"train": 4, "valid": 2, "test": 2}


def h5_bytes(key: str, array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset(key, data=array)
    return buffer.getvalue()


def pcam_h5(split: str) -> dict[str, bytes]:
    """The uncompressed ``_x.h5`` / ``_y.h5`` of a split (``x``: (N, 96, 96, 3) uint8, ``y``: (N, 1, 1, 1))."""
    n = PCAM_SPLITS[split]
    x = np.zeros((n, 96, 96, 3), dtype=np.uint8)
    x[:, :2, :2] = np.arange(n, dtype=np.uint8)[:, None, None, None]
    y = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
    return {f"camelyonpatch_level_2_split_{split}_x.h5": h5_bytes("x", x),
            f"camelyonpatch_level_2_split_{split}_y.h5": h5_bytes("y", y)}


def pcam_files() -> dict[str, bytes]:
    """The nine published PCam files: six ``.h5.gz`` and three meta CSVs."""
    files = {}
    for split in PCAM_SPLITS:
        for name, data in pcam_h5(split).items():
            files[f"{name}.gz"] = gzip.compress(data, mtime=0)
        files[f"camelyonpatch_level_2_split_{split}_meta.csv"] = b"coord_y,coord_x,tumor_patch,center_tumor_patch,wsi\n"
    return files


def medmnist_npz(size: int, channels: int = 3, classes: int = 9) -> bytes:
    """A MedMNIST ``.npz``: ``{train,val,test}_{images,labels}``."""
    rng = np.random.default_rng(size)
    arrays = {}
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        shape = (n, size, size, 3) if channels == 3 else (n, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(n, 1)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def nifti_bytes(array: np.ndarray) -> bytes:
    image = nib.Nifti1Image(array, np.eye(4))
    return image.to_bytes()


def gz_nifti(array: np.ndarray) -> bytes:
    return gzip.compress(nifti_bytes(array), mtime=0)


def ct_volume(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 16 x 16 x 3 HU volume with a 'spleen' blob, and its label (1 = the organ)."""
    image = np.full((16, 16, 3), -1000, dtype=np.int16)
    label = np.zeros((16, 16, 3), dtype=np.uint8)
    image[4 + seed:10 + seed, 4:10] = 50
    label[4 + seed:10 + seed, 4:10] = 1
    return image, label


def msd_tar(task: str = "Task09_Spleen", training: int = 3) -> bytes:
    """``<task>.tar``: ``<task>/dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` of .nii.gz
    volumes, and the macOS ``._`` files the real archives carry."""
    organ = task.split("_")[1].lower()
    members: dict[str, bytes] = {}
    entries = []
    for i in range(1, training + 1):
        image, label = ct_volume(i)
        members[f"{task}/imagesTr/{organ}_{i}.nii.gz"] = gz_nifti(image)
        members[f"{task}/labelsTr/{organ}_{i}.nii.gz"] = gz_nifti(label)
        members[f"{task}/imagesTr/._{organ}_{i}.nii.gz"] = b"\x00\x05\x16\x07junk"
        entries.append({"image": f"./imagesTr/{organ}_{i}.nii.gz", "label": f"./labelsTr/{organ}_{i}.nii.gz"})
    members[f"{task}/imagesTs/{organ}_99.nii.gz"] = gz_nifti(ct_volume(0)[0])
    members[f"{task}/dataset.json"] = json.dumps({
        "name": organ, "labels": {"0": "background", "1": organ}, "numTraining": training, "numTest": 1,
        "training": entries, "test": [f"./imagesTs/{organ}_99.nii.gz"],
    }).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
