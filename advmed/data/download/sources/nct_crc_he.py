"""NCT-CRC-HE-100K and CRC-VAL-HE-7K (Kather et al. 2018/2019), Zenodo record 1214456.

Files (https://zenodo.org/records/1214456), with the md5 and size Zenodo lists for each (as quoted by
several independent download scripts; Zenodo computes the md5 of every file it stores):

=========================  ===============  ================================
file                       bytes            md5
=========================  ===============  ================================
``NCT-CRC-HE-100K.zip``    11,690,284,003   ``6fd702d11df6292bc054397ae038a464``
``CRC-VAL-HE-7K.zip``         800,276,929   ``2fd1651b4f94ebd818ebf90ad2b6ce06``
=========================  ===============  ================================

Each zip holds one folder of the same name with the nine class folders (``ADI/ADI-AAAWMSFI.tif``,
...), which becomes ``<root>/NCT-CRC-HE-100K`` and ``<root>/CRC-VAL-HE-7K``: ``data=nct_crc_he``
reads them as ``data.root`` and ``data.test_root``. The record's third file,
``NCT-CRC-HE-100K-NONORM.zip`` (the same tiles without Macenko normalisation), is not offered here.

Tiles per class (verified by ``verify`` on a hand-filled folder), from the record's description and
the class boundaries of other loaders of the same files: 100K: ADI 10,407, BACK 10,566, DEB 11,512,
LYM 11,557, MUC 8,896, MUS 13,536, NORM 8,763, STR 10,446, TUM 14,317 (100,000); 7K: 1,338, 847, 339,
634, 1,035, 592, 741, 421, 1,233 (7,180).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from advmed.data.download.errors import UnpackError
from advmed.data.download.remote import Expected, RemoteFile, apply_options, select
from advmed.data.download.source import Check, Source
from advmed.data.histology.nct_crc_he_layout import CLASS_NAMES
from advmed.data.readers import scan_class_folders

RECORD = "https://zenodo.org/records/1214456"
ORIGIN = "md5 and size listed on Zenodo record 1214456"
ARCHIVES = {  # target folder -> (md5, bytes)
    "NCT-CRC-HE-100K": ("6fd702d11df6292bc054397ae038a464", 11_690_284_003),
    "CRC-VAL-HE-7K": ("2fd1651b4f94ebd818ebf90ad2b6ce06", 800_276_929),
}
TILES_PER_CLASS = {
    "NCT-CRC-HE-100K": dict(zip(CLASS_NAMES, (10407, 10566, 11512, 11557, 8896, 13536, 8763, 10446, 14317))),
    "CRC-VAL-HE-7K": dict(zip(CLASS_NAMES, (1338, 847, 339, 634, 1035, 592, 741, 421, 1233))),
}


class NCTCRCHE(Source):
    """The two zips of Zenodo record 1214456, unzipped into ``<root>/NCT-CRC-HE-100K`` and ``<root>/CRC-VAL-HE-7K``."""

    family = "nct_crc_he"
    title = "NCT-CRC-HE-100K + CRC-VAL-HE-7K, 9 H&E tissue classes (Zenodo 1214456, 12.5 GB)"

    def remote_files(self) -> list[RemoteFile]:
        files = [
            RemoteFile(f"{target}.zip", f"{RECORD}/files/{target}.zip?download=1",
                       Expected(md5=md5, size=size, origin=ORIGIN), "zip", target)
            for target, (md5, size) in ARCHIVES.items()
        ]
        return apply_options(files, self.options, self.family)

    def check_unpacked(self, path: Path, remote: RemoteFile) -> None:
        try:
            scan_class_folders(path, CLASS_NAMES)
        except (OSError, ValueError) as exc:
            raise UnpackError(f"{remote.name} did not unpack to the class folders data=nct_crc_he reads: {exc}") from exc

    def verify(self, root: Path, selected: Sequence[str] | None = None) -> Check:
        check = Check()
        counts = self.counts(TILES_PER_CLASS)
        for remote in select(self.remote_files(), selected, self.family):
            folder = root / remote.target
            try:
                items = scan_class_folders(folder, CLASS_NAMES)
            except (OSError, ValueError) as exc:
                check.problems.append(f"{folder}: {exc}")
                continue
            found = {name: 0 for name in CLASS_NAMES}
            for _, label in items:
                found[CLASS_NAMES[label]] += 1
            wrong = _count_problems(found, counts[remote.target])
            if wrong:
                check.problems.append(f"{folder}: tiles per class differ from the published counts ({wrong}); "
                                      f"re-extract {remote.name}")
            else:
                check.checked.append(f"{folder}: {len(items):,} tiles in the 9 class folders, as published")
        check.notes.append(f"no archive checksum to check in an unpacked folder ({ORIGIN} are checked on download)")
        return check

    def usage(self, root: Path) -> str:
        return f"data=nct_crc_he data.root={root / 'NCT-CRC-HE-100K'} data.test_root={root / 'CRC-VAL-HE-7K'}"


def _count_problems(found: Mapping[str, int], expected: Any) -> str:
    """``ADI 3 (expected 10407), ...`` for the classes whose counts differ; ``expected`` is per class or a total."""
    if isinstance(expected, Mapping):
        return ", ".join(f"{name} {found[name]} (expected {expected[name]})"
                         for name in found if found[name] != int(expected[name]))
    total = sum(found.values())
    return "" if total == int(expected) else f"{total} tiles in all, expected {expected}"
