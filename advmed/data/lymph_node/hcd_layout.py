"""The Kaggle Histopathologic Cancer Detection layout on disk: ``<root>/train_labels.csv`` (``id,label``)
and ``<root>/{train,test}/<id>.tif``, read without the DataModule (no Lightning), so that
``advmed.data.download verify kaggle_hcd`` checks a folder in a second, not after Lightning's import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

LABELS_CSV = "train_labels.csv"
TILE_SUFFIX = ".tif"
_SHOWN = 5  # names listed in a message about many files
DOWNLOAD_HINT = (
    "Download the Kaggle competition data (kaggle competitions download -c "
    "histopathologic-cancer-detection), unzip it so that <root>/train_labels.csv and <root>/train/*.tif "
    "exist, and set data.root=... or ADVMED_HCD_ROOT"
)


def read_label_csv(path: Path) -> dict[str, int]:
    """``{id: label}`` from a Kaggle ``train_labels.csv`` (columns ``id,label``, labels 0/1, unique ids)."""
    if not path.is_file():
        raise FileNotFoundError(f"label file {path} is missing. {DOWNLOAD_HINT}")
    try:
        # Read as text: ids are hex strings (an all-digit id must not become a number) and labels
        # are checked below rather than coerced.
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable CSV ({exc}); download {LABELS_CSV} again") from exc
    table.columns = [str(column).strip() for column in table.columns]
    if not {"id", "label"} <= set(table.columns):
        raise ValueError(
            f"{path} has columns {list(table.columns)}; expected a header 'id,label' as in the Kaggle "
            f"{LABELS_CSV}: download it again"
        )
    ids = table["id"].str.strip()
    labels = table["label"].str.strip()
    bad = ~labels.isin(["0", "1"])
    if bad.any():
        examples = [f"{i}={v!r}" for i, v in zip(ids[bad][:_SHOWN], labels[bad][:_SHOWN])]
        raise ValueError(
            f"{path}: labels must be 0 or 1, but {int(bad.sum())} row(s) have others ({', '.join(examples)})"
        )
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise ValueError(
            f"{path}: {len(duplicated)} duplicated id(s) ({first_names(sorted(set(duplicated)))}); "
            "each tile must have one row"
        )
    return dict(zip(ids, labels.astype(int)))


def tile_files(folder: Path) -> dict[str, Path]:
    """``{id: path}`` of the ``<id>.tif`` files of ``folder`` (hidden files and other extensions ignored)."""
    files = {
        name[: -len(TILE_SUFFIX)]: folder / name
        for name in os.listdir(folder)  # faster than pathlib for the 220,025 Kaggle tiles
        if name.lower().endswith(TILE_SUFFIX) and not name.startswith(".")
    }
    if not files:
        raise FileNotFoundError(
            f"{folder} holds no {TILE_SUFFIX} tiles; re-extract the dataset. {DOWNLOAD_HINT}"
        )
    return files


def mismatches(labels: dict[str, int], files: dict[str, Path], folder: Path) -> list[str]:
    """What does not pair between ``train_labels.csv`` and the tiles of ``folder`` (:func:`tile_files`): ids
    without a file, files without a row; empty when every id has its file and every file its row."""
    no_file = sorted(set(labels) - set(files))
    no_row = sorted(set(files) - set(labels))
    problems = []
    if no_file:
        problems.append(f"{len(no_file)} id(s) of {LABELS_CSV} have no file in {folder} ({first_names(no_file)})")
    if no_row:
        names = [files[i].name for i in no_row]
        problems.append(f"{len(no_row)} file(s) in {folder} have no row in {LABELS_CSV} ({first_names(names)})")
    return problems


def first_names(names: Sequence[str]) -> str:
    """``"first: a, b, c, d, e, ..."``: the start of a long list of names, for a message."""
    shown = ", ".join(names[:_SHOWN])
    return f"first: {shown}" + (", ..." if len(names) > _SHOWN else "")
