"""Kaggle Histopathologic Cancer Detection (PCam tiles as TIFFs): behind a Kaggle account.

The competition data (https://www.kaggle.com/competitions/histopathologic-cancer-detection/data) can
only be fetched by a Kaggle account that has accepted the competition's rules, so ``download`` says
what to run and ``verify`` checks the folder afterwards. Kaggle publishes no checksum of the
archive or its files (no published checksum): ``verify`` checks the layout ``data=hcd`` reads
(``train_labels.csv`` with a row per ``train/<id>.tif``, labels 0/1), the published file counts
(220,025 labelled tiles, 57,458 unlabelled test tiles) and that no tile file is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from advmed.data.download.source import Check, Source
from advmed.data.lymph_node.hcd_layout import LABELS_CSV, mismatches, read_label_csv, tile_files

COMPETITION = "histopathologic-cancer-detection"
TILES = {"train": 220_025, "test": 57_458}


class KaggleHCD(Source):
    """The Kaggle competition's ``train/``, ``test/`` and ``train_labels.csv`` in one folder (fetched by hand)."""

    family = "kaggle_hcd"
    title = "Kaggle Histopathologic Cancer Detection, 96x96 TIFF tiles (Kaggle account needed)"
    manual = True

    def instructions(self, root: Path) -> str:
        return "\n".join([
            "Kaggle Histopathologic Cancer Detection needs a Kaggle account (no published checksum):",
            f"  1. accept the rules at https://www.kaggle.com/competitions/{COMPETITION}/rules",
            "  2. put your API token in ~/.kaggle/kaggle.json (https://www.kaggle.com/settings, 'Create New Token')",
            "     and install the client: pip install kaggle",
            f"  3. kaggle competitions download -c {COMPETITION} -p {root}",
            f"  4. unzip -q {root / (COMPETITION + '.zip')} -d {root} && rm {root / (COMPETITION + '.zip')}",
            f"so that {root / LABELS_CSV}, {root / 'train'}/<id>.tif ({TILES['train']:,} files) and "
            f"{root / 'test'}/<id>.tif ({TILES['test']:,}) exist. Then check it:",
            f"  python -m advmed.data.download verify kaggle_hcd root={root}",
        ])

    def verify(self, root: Path, selected: Sequence[str] | None = None) -> Check:
        check = Check()
        counts = self.counts(TILES)
        try:
            labels = read_label_csv(root / LABELS_CSV)
            files = tile_files(root / "train") if (root / "train").is_dir() else {}
        except (OSError, ValueError) as exc:
            check.problems.append(str(exc))
            return check
        if not files:
            check.problems.append(f"{root / 'train'} holds no .tif tiles")
            return check
        problems = mismatches(labels, files, root / "train")
        check.problems += problems
        _check_tiles(check, root / "train", files, int(counts["train"]))
        if not problems and len(labels) == int(counts["train"]):
            check.checked.append(f"{LABELS_CSV}: {len(labels):,} labelled ids, one per train/ tile")
        if (root / "test").is_dir():
            _check_tiles(check, root / "test", tile_files(root / "test"), int(counts["test"]))
        else:
            check.notes.append(f"{root / 'test'} is missing: only prediction (Kaggle submissions) needs it")
        check.notes.append("Kaggle publishes no checksum: counts, the label file and non-empty tiles are checked")
        return check

    def usage(self, root: Path) -> str:
        return f"data=hcd data.root={root}"


def _check_tiles(check: Check, folder: Path, files: dict[str, Path], expected: int) -> None:
    empty = sorted(path.name for path in files.values() if path.stat().st_size == 0)
    if len(files) != expected:
        check.problems.append(f"{folder}: {len(files):,} tiles, expected {expected:,}; unzip the archive again")
    elif empty:
        check.problems.append(f"{folder}: {len(empty)} empty tile file(s) (first: {', '.join(empty[:5])})")
    else:
        check.checked.append(f"{folder}: {len(files):,} tiles, none empty")
