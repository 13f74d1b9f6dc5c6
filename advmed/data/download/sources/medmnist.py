"""MedMNIST v3 2D datasets (Yang et al. 2023), one ``.npz`` per flag and size, Zenodo record 10519652.

``medmnist:<flag>[@size]`` fetches ``<flag>.npz`` (28 px) or ``<flag>_<size>.npz`` (64, 128, 224 px:
MedMNIST+) into ``<root>/``, the file ``data=medmnist`` reads as ``data.path``. Several flags and sizes
can share one folder. The download is the dataset file itself, so ``verify`` checks its md5 again.

URLs and md5 values: the ``INFO`` table of the ``medmnist`` package, version 3.0.2
(``medmnist/info.py``: ``url``, ``MD5``, ``url_64``, ``MD5_64``, ...), copied below for the 2D flags
rather than imported, so that advmed needs neither the package nor its dependencies. Every URL is
``https://zenodo.org/records/10519652/files/<file>?download=1``. No sizes are published. The 3D flags
(``*mnist3d``) are left out: ``data=medmnist`` reads 2D images only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from advmed.data.download.checksums import file_digests
from advmed.data.download.errors import DownloadError, UnknownSource, UnpackError
from advmed.data.download.remote import Expected, RemoteFile, apply_options, select
from advmed.data.download.source import Check, Source
from advmed.data.medmnist.medmnist_layout import KEYS

RECORD = "https://zenodo.org/records/10519652"
ORIGIN = "md5 of medmnist 3.0.2's INFO table (Zenodo record 10519652)"
SIZES = (28, 64, 128, 224)


class Flag(NamedTuple):
    """What a MedMNIST 2D set holds (for the data config) and the md5 of its file per image size."""

    channels: int
    classes: int
    md5: dict[int, str]


FLAGS: dict[str, Flag] = {
    "pathmnist": Flag(3, 9, {
        28: "a8b06965200029087d5bd730944a56c1", 64: "55aa9c1e0525abe5a6b9d8343a507616",
        128: "ac42d08fb904d92c244187169d1fd1d9", 224: "2c51a510bcdc9cf8ddb2af93af1eadec",
    }),
    "chestmnist": Flag(1, 14, {
        28: "02c8a6516a18b556561a56cbdd36c4a8", 64: "9de6cd0b934ebb5b7426cfba5efbae16",
        128: "db107e5590b27930b62dbaf558aebee3", 224: "45bd33e6f06c3e8cdb481c74a89152aa",
    }),
    "dermamnist": Flag(3, 7, {
        28: "0744692d530f8e62ec473284d019b0c7", 64: "b70a2f5635c6199aeaa28c31d7202e1f",
        128: "2defd784463fa5243564e855ed717de1", 224: "8974907d8e169bef5f5b96bc506ae45d",
    }),
    "octmnist": Flag(1, 4, {
        28: "c68d92d5b585d8d81f7112f81e2d0842", 64: "e229e9440236b774d9f0dfef9d07bdaf",
        128: "0a97e76651ace45c5d943ee3f65b63ae", 224: "abc493b6d529d5de7569faaef2773ba3",
    }),
    "pneumoniamnist": Flag(1, 2, {
        28: "28209eda62fecd6e6a2d98b1501bb15f", 64: "8f4eceb4ccffa70c672198ea285246c6",
        128: "05b46931834c231683c68f40c47b2971", 224: "d6a3c71de1b945ea11211b03746c1fe1",
    }),
    "retinamnist": Flag(3, 5, {
        28: "bd4c0672f1bba3e3a89f0e4e876791e4", 64: "afda852cc34dcda56f86ad2b2457dbcc",
        128: "e48e916a24454daf90583d4e6efb1a18", 224: "eae7e3b6f3fcbda4ae613ebdcbe35348",
    }),
    "breastmnist": Flag(1, 2, {
        28: "750601b1f35ba3300ea97c75c52ff8f6", 64: "742edef2a1fd1524b2efff4bd7ba9364",
        128: "363e4b3f8d712e9b5de15470a2aaadf1", 224: "b56378a6eefa9fed602bb16d192d4c8b",
    }),
    "bloodmnist": Flag(3, 8, {
        28: "7053d0359d879ad8a5505303e11de1dc", 64: "2b94928a2ae4916078ca51e05b6b800b",
        128: "adace1e0ed228fccda1f39692059dd4c", 224: "b718ff6835fcbdb22ba9eacccd7b2601",
    }),
    "tissuemnist": Flag(1, 8, {
        28: "ebe78ee8b05294063de985d821c1c34b", 64: "123ece2eba09d0aa5d698fda57103344",
        128: "61b955355d7425a89687b06cca3ce0c2", 224: "b077128c4a949f0a4eb01517f9037b9c",
    }),
    "organamnist": Flag(1, 11, {
        28: "68e3f8846a6bd62f0c9bf841c0d9eacc", 64: "2dcccc29b88e6da5a01161ef20cda288",
        128: "eeae80d0a227a8d099027e1b3cfd3b60", 224: "50747347e05c87dd3aaf92c49f9f3170",
    }),
    "organcmnist": Flag(1, 11, {
        28: "b9ceb9546e10131b32923c5bbeaea2b1", 64: "3ce34a8724ea6f548e6db4744d03b6a9",
        128: "773c1f009daa3fe5d9a2a201b2a7ed94", 224: "050f5e875dc056f6768abf94ec9995d1",
    }),
    "organsmnist": Flag(1, 11, {
        28: "9ab87b696fb54e2a387ebe992d6ed5f1", 64: "53a6d115339d874c25e309a994ff46d3",
        128: "ded0c5fa01a95dc4978b956f613e9b8e", 224: "b354719e553fbbb2513d5533f52a4cb1",
    }),
}


def parse_argument(argument: str | None) -> tuple[str, int]:
    """``pathmnist@64`` -> ``("pathmnist", 64)``; the size defaults to 28."""
    if not argument:
        raise UnknownSource(f"medmnist needs a flag: medmnist:<flag>[@size], flags: {', '.join(FLAGS)}")
    flag, _, size_text = argument.partition("@")
    flag = flag.strip().lower()
    if flag not in FLAGS:
        hint = " (3D sets are not read by data=medmnist)" if flag.endswith("3d") else ""
        raise UnknownSource(f"unknown MedMNIST flag {flag!r}{hint}; the 2D flags are {', '.join(FLAGS)}")
    try:
        size = int(size_text) if size_text else 28
    except ValueError:
        size = -1
    if size not in SIZES:
        raise UnknownSource(f"medmnist:{argument}: the size must be one of {SIZES} (e.g. medmnist:{flag}@64)")
    return flag, size


def file_name(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


class MedMNIST(Source):
    """One MedMNIST ``.npz`` (a flag at a size), verified by the md5 MedMNIST publishes."""

    family = "medmnist"
    title = "MedMNIST v3 2D sets, one .npz per flag and size (Zenodo 10519652)"
    syntax = "<flag>[@size]"

    def __init__(self, argument: str | None, options: Mapping[str, Any] | None) -> None:
        super().__init__(argument, options)
        self.flag, self.size = parse_argument(argument)

    def remote_files(self) -> list[RemoteFile]:
        name = file_name(self.flag, self.size)
        expected = Expected(md5=FLAGS[self.flag].md5[self.size], origin=ORIGIN)
        remote = RemoteFile(name, f"{RECORD}/files/{name}?download=1", expected, "none", name)
        return apply_options([remote], self.options, self.family)

    def check_unpacked(self, path: Path, remote: RemoteFile) -> None:
        missing = _missing_keys(path)
        if missing:
            raise UnpackError(f"{remote.name} is no MedMNIST file: it lacks {missing}")

    def verify(self, root: Path, selected: Sequence[str] | None = None) -> Check:
        check = Check()
        for remote in select(self.remote_files(), selected, self.family):
            path = root / remote.target
            if not path.is_file():
                check.problems.append(f"{path} is missing")
                continue
            md5 = file_digests(path, ("md5",))["md5"]
            if remote.expected.md5 is not None and md5 != remote.expected.md5:
                check.problems.append(f"{path}: md5 {md5}, expected {remote.expected.md5} ({remote.expected.origin}); "
                                      "download it again")
                continue
            missing = _missing_keys(path)
            if missing:
                check.problems.append(f"{path} lacks {missing}")
            else:
                check.checked.append(f"{path}: md5 {md5} as published, keys {', '.join(KEYS)}")
        return check

    def usage(self, root: Path) -> str:
        flag = FLAGS[self.flag]
        return (f"data=medmnist data.path={root / file_name(self.flag, self.size)} data.num_classes={flag.classes} "
                f"data.in_channels={flag.channels} data.image_size={self.size}"
                # conf/data/medmnist.yaml names PathMNIST's classes; another set's are "0", "1", ... unless named
                + (" data.class_names=null" if self.flag != "pathmnist" else ""))


def _missing_keys(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return [key for key in KEYS if key not in npz.files]
    except (OSError, ValueError) as exc:
        raise DownloadError(f"{path} is not a readable .npz ({exc}); download it again") from exc
