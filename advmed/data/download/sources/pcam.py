"""PatchCamelyon (Veeling et al. 2018), Zenodo record 2546921.

Files (https://zenodo.org/records/2546921): ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5.gz``,
gunzipped into ``<root>/camelyonpatch_level_2_split_*.h5`` (the layout ``data=pcam`` reads), and the
three ``camelyonpatch_level_2_split_*_meta.csv`` (the source slide of every tile), copied as they are.

md5 values: the PCam README (github.com/basveeling/pcam) lists them with valid and test swapped;
the values below are those of the files as named on Zenodo and Google Drive, as the author confirmed
(basveeling/pcam issue #1) and torchvision uses since pytorch/vision PR #6644. Sizes of the ``.h5.gz``
files: TensorFlow Datasets' checksum file for the same Zenodo URLs (``url_checksums/patch_camelyon.txt``).
The meta CSVs' sizes are not published.

=============  ===============  ================================
file           bytes            md5
=============  ===============  ================================
train_x.h5.gz  6,421,353,462    ``1571f514728f59376b705fc836ff4b63``
train_y.h5.gz  21,378           ``35c2d7259d906cfc8143347bb8e05be7``
valid_x.h5.gz  805,965,320      ``d5b63470df7cfa627aeec8b9dc0c066e``
valid_y.h5.gz  3,038            ``2b85f58b927af9964a4c15b8f7e8f179``
test_x.h5.gz   800,875,929      ``d8c2d60d490dbd479f8199bdfa0cf6ec``
test_y.h5.gz   3,040            ``60a7035772fbdb7f34eb86d4420cf66a``
train_meta.csv                  ``5a3dd671e465cfd74b5b822125e65b0a``
valid_meta.csv                  ``67589e00a4a37ec317f2d1932c7502ca``
test_meta.csv                   ``3455fd69135b66734e1008f3af684566``
=============  ===============  ================================

Tiles per split (verified on a hand-filled folder): 262,144 train, 32,768 valid, 32,768 test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from advmed.data.download.errors import UnpackError
from advmed.data.download.remote import Expected, RemoteFile, apply_options, select
from advmed.data.download.source import Check, Source
from advmed.data.lymph_node.pcam_layout import FILE_TEMPLATE, check_images, read_labels

RECORD = "https://zenodo.org/records/2546921"
ORIGIN_GZ = "md5 of Zenodo record 2546921 (README swap fixed, basveeling/pcam#1), size from TFDS url_checksums"
ORIGIN_CSV = "md5 of Zenodo record 2546921 (README swap fixed, basveeling/pcam#1), no published size"
GZ_FILES = {  # (split word of the file names, x / y) -> (md5, bytes)
    ("train", "x"): ("1571f514728f59376b705fc836ff4b63", 6_421_353_462),
    ("train", "y"): ("35c2d7259d906cfc8143347bb8e05be7", 21_378),
    ("valid", "x"): ("d5b63470df7cfa627aeec8b9dc0c066e", 805_965_320),
    ("valid", "y"): ("2b85f58b927af9964a4c15b8f7e8f179", 3_038),
    ("test", "x"): ("d8c2d60d490dbd479f8199bdfa0cf6ec", 800_875_929),
    ("test", "y"): ("60a7035772fbdb7f34eb86d4420cf66a", 3_040),
}
META_FILES = {
    "train": "5a3dd671e465cfd74b5b822125e65b0a",
    "valid": "67589e00a4a37ec317f2d1932c7502ca",
    "test": "3455fd69135b66734e1008f3af684566",
}
META_TEMPLATE = "camelyonpatch_level_2_split_{split}_meta.csv"
TILES = {"train": 262_144, "valid": 32_768, "test": 32_768}


class PCam(Source):
    """The six gzipped HDF5 files (gunzipped) and three meta CSVs of Zenodo record 2546921, in one folder."""

    family = "pcam"
    title = "PatchCamelyon, 96x96 lymph-node tiles, 2 classes (Zenodo 2546921, 8 GB)"

    def remote_files(self) -> list[RemoteFile]:
        files = []
        for split in TILES:
            for key in "xy":
                md5, size = GZ_FILES[(split, key)]
                target = FILE_TEMPLATE.format(split=split, key=key)
                files.append(RemoteFile(f"{target}.gz", f"{RECORD}/files/{target}.gz?download=1",
                                        Expected(md5=md5, size=size, origin=ORIGIN_GZ), "gzip", target, (split,)))
            meta = META_TEMPLATE.format(split=split)
            files.append(RemoteFile(meta, f"{RECORD}/files/{meta}?download=1",
                                    Expected(md5=META_FILES[split], origin=ORIGIN_CSV), "none", meta, (split,)))
        return apply_options(files, self.options, self.family)

    def check_unpacked(self, path: Path, remote: RemoteFile) -> None:
        try:
            if path.name.endswith("_x.h5"):
                check_images(path)
            elif path.name.endswith("_y.h5"):
                read_labels(path)
        except (OSError, ValueError) as exc:
            raise UnpackError(f"{remote.name} did not gunzip to the HDF5 file data=pcam reads: {exc}") from exc

    def verify(self, root: Path, selected: Sequence[str] | None = None) -> Check:
        check = Check()
        counts = self.counts(TILES)
        wanted = select(self.remote_files(), selected, self.family)
        for split in {s: None for f in wanted for s in f.groups}:
            x_path, y_path = (root / FILE_TEMPLATE.format(split=split, key=key) for key in "xy")
            missing = [p.name for p in (x_path, y_path) if not p.is_file()]
            if missing:
                gz = [name for name in missing if (root / f"{name}.gz").is_file()]
                hint = f" ({', '.join(gz)} still gzipped: gunzip them)" if gz else ""
                check.problems.append(f"{root}: {', '.join(missing)} missing{hint}")
                continue
            try:
                tiles, labels = check_images(x_path), len(read_labels(y_path))
            except (OSError, ValueError) as exc:
                check.problems.append(str(exc))
                continue
            if tiles != labels or tiles != int(counts[split]):
                check.problems.append(f"{split}: {tiles:,} tiles and {labels:,} labels, expected {int(counts[split]):,} "
                                      "of each: download the split again")
            else:
                check.checked.append(f"{split}: {x_path.name} and {y_path.name}, {tiles:,} tiles with labels")
            meta = root / META_TEMPLATE.format(split=split)
            if not meta.is_file():
                check.notes.append(f"{meta.name} is missing (data=pcam does not need it)")
        check.notes.append("the published md5 values are of the .gz files; they are checked on download")
        return check

    def usage(self, root: Path) -> str:
        return f"data=pcam data.root={root}"

