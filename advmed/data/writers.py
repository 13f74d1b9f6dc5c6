"""Writers of datasets on disk: atomic, resumable, with a manifest and a provenance record.

A :class:`~advmed.data.copy_layouts.CopyLayout` says how one item is stored in the layout its
DataModule reads back through ``extra_train_roots`` (:mod:`advmed.data.copy_layouts`).

:class:`DatasetWriter` writes a whole dataset through a layout, batch by batch, for any producer
``(x, y) -> x_out`` (an attack, a generator): every file goes to a hidden ``.<name>.<pid>.tmp`` in its
folder and is then renamed (``os.replace``), so a killed run leaves no truncated file, only
``*.tmp`` leftovers that the next run removes. Batches whose files all exist are skipped, and every
batch runs under a seed drawn from ``(seed, batch index)``, so a rerun completes a killed run with
the same bytes as an uninterrupted one. ``run.json`` holds the run's identity (what determines the
bytes) and its provenance; a folder holding another run is refused (DESIGN contract 9).
``manifest.csv`` lists the items (files, source name, label, group).

Hand-written because no library writes these layouts resumably: torchvision / MONAI savers write
one file at a time, non-atomically, without a resumable plan.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from advmed.data.copy_layouts import (
    TMP_SUFFIX,
    CopyLayout,
    atomic_text,
    remove_tmp_files,
    save_png,
)
from advmed.utils.files import file_sha256
from advmed.utils.progress import ProgressReporter, check_every_s

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.csv"
FORMAT = "advmed.dataset_copy/1"  # run.json format tag

Producer = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- run identity


class OutputDirError(ValueError):
    """The output folder holds something else than (an earlier part of) this run."""


def json_plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples -> lists, ...), for comparisons with run.json."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like values (``attack.eps``)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(set(old) | set(new), key=str)
        return [d for k in keys for d in differing_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".") or "<value>"]


def _lookup(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, Mapping) else None
    return tree


def code_version() -> dict[str, str | None]:
    """advmed's version and, when it runs from a git checkout, the commit (None otherwise)."""
    import advmed

    commit = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(advmed.__file__).parent, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            commit = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"advmed_version": advmed.__version__, "git_commit": commit}


def batch_seed(seed: int, batch: int) -> int:
    """The seed of batch ``batch`` of a run seeded ``seed`` (independent of which batches run)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(batch)]).generate_state(1)[0])


def seed_batch(seed: int, batch: int) -> None:
    s = batch_seed(seed, batch)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)  # every device


def item_names(dataset: Dataset, split: str) -> list[str]:
    """``dataset.names`` when the dataset has them, else ``<split>_<index:06d>``."""
    names = getattr(dataset, "names", None)
    if names is not None and len(names) == len(dataset):
        return [str(n) for n in names]
    return [f"{split}_{i:06d}" for i in range(len(dataset))]


# --------------------------------------------------------------------------- the writer


class DatasetWriter:
    """Write a dataset copy into ``root`` through ``layout``, resumably (see the module docstring).

    Args:
        root: the output folder: new, empty, or holding an earlier part of this very run.
        layout: how items are stored (``datamodule.copy_layout()``).
        identity: JSON-able values that determine the bytes written (checkpoint hash, attack, data,
            split, seed, batch size): a folder whose run.json has another identity is refused.
        provenance: more JSON-able facts for run.json (paths, device, versions).
        overwrite: delete a folder holding another advmed run and start again. A non-empty folder
            without run.json is never deleted.
        progress_every_s: seconds between progress lines in a log (a terminal gets a bar instead;
            ``ADVMED_PROGRESS=bar|lines|off`` forces one, :mod:`advmed.utils.progress`).
    """

    def __init__(
        self,
        root: str | Path,
        layout: CopyLayout,
        identity: Mapping[str, Any],
        provenance: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        progress_every_s: float = 10.0,
    ) -> None:
        self.root = Path(root).expanduser()
        self.layout = layout
        self.identity = json_plain(dict(identity))
        self.provenance = json_plain(dict(provenance or {}))
        self.overwrite = bool(overwrite)
        self.progress_every_s = check_every_s(progress_every_s, "progress_every_s")

    # ------------------------------------------------------------------ the folder

    def _earlier_run(self) -> dict | None:
        """The run.json of an earlier part of this run (None for a new or empty folder); refuses
        anything else, or deletes it with ``overwrite``."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise OutputDirError(f"output_dir {root} is a file, not a folder; choose another output_dir")
        if not root.is_dir() or not any(p for p in root.iterdir() if not p.name.endswith(TMP_SUFFIX)):
            return None
        run_file = root / RUN_FILE
        try:
            record = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if not isinstance(record, dict) or record.get("format") != FORMAT or "identity" not in record:
            raise OutputDirError(
                f"output_dir {root} is not empty and holds no {RUN_FILE} of a dataset copy written by advmed: "
                "choose a new or empty output_dir (overwrite=true deletes only folders written by advmed)"
            )
        if record["identity"] == self.identity:
            return record
        if self.overwrite:
            log.info("overwrite=true: deleting %s (it held another run)", root)
            shutil.rmtree(root)
            return None
        keys = differing_keys(record["identity"], self.identity)
        shown = "; ".join(
            f"{k}: {_lookup(record['identity'], k)!r} there, {_lookup(self.identity, k)!r} here" for k in keys[:6]
        )
        more = f" (and {len(keys) - 6} more)" if len(keys) > 6 else ""
        raise OutputDirError(
            f"output_dir {root} holds another run: {', '.join(keys)} differ ({shown}{more}). "
            f"Choose another output_dir=..., or pass overwrite=true to delete {root} and start again"
        )

    def _write_run(self, created: str, num_items: int, done: int, complete: bool) -> None:
        record = {
            "format": FORMAT,
            "identity": self.identity,
            **self.provenance,
            "layout": self.layout.kind,
            "num_items": num_items,
            "items_written": done,
            "complete": complete,
            "created": created,
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_text(self.root / RUN_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")

    # ------------------------------------------------------------------ writing

    def plan(self, dataset: Dataset, names: Sequence[str]) -> list[dict[str, Any]]:
        """One manifest row per item (index, source name, files by role, label columns, group)."""
        if len(names) != len(dataset):
            raise ValueError(f"{len(names)} names for a dataset of {len(dataset)} items")
        targets = getattr(dataset, "targets", None)
        groups = getattr(dataset, "groups", None)
        rows = []
        for i, name in enumerate(names):
            label = None if targets is None else int(targets[i])
            row: dict[str, Any] = {"index": i, "source": name, **self.layout.files(name, label)}
            row.update(self.layout.columns(label))
            if groups is not None:
                row["group"] = int(groups[i])
            rows.append(row)
        paths = [f for row in rows for f in self._files(row)]
        if len(set(paths)) != len(paths):
            seen: set[str] = set()
            twice = sorted({p for p in paths if p in seen or seen.add(p)})
            raise ValueError(
                f"{len(twice)} output file name(s) would be written twice (first: {twice[:3]}): the dataset's "
                "item names are not unique"
            )
        return rows

    def _files(self, row: Mapping[str, Any]) -> list[str]:
        return [row[role] for role in self.layout.roles]

    def write(
        self,
        dataset: Dataset,
        produce: Producer,
        *,
        names: Sequence[str],
        batch_size: int,
        seed: int,
        num_workers: int = 0,
    ) -> int:
        """Write ``produce(x, y)`` for every batch of ``dataset`` (in order) that is not on disk yet;
        return the number of items of the complete copy."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        batch_size = int(batch_size)
        rows = self.plan(dataset, names)
        earlier = self._earlier_run()
        self.root.mkdir(parents=True, exist_ok=True)
        removed = remove_tmp_files(self.root)
        if removed:
            log.info("removed %d temporary file(s) left by a killed run", removed)
        n = len(rows)
        batches = [list(range(start, min(start + batch_size, n))) for start in range(0, n, batch_size)]
        pending = [b for b, items in enumerate(batches) if not self._written(rows, items)]
        done = n - sum(len(batches[b]) for b in pending)
        created = earlier["created"] if earlier else datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._write_run(created, n, done, complete=False)
        if earlier is not None:
            log.info("resuming %s: %d/%d items already written, %d batch(es) to go", self.root, done, n, len(pending))
        else:
            log.info("writing %d items in %d batch(es) to %s", n, len(pending), self.root)

        # A bar in a terminal, else plain lines on this module's logger (its name says who writes):
        # "120/500 items (24.0 %), 35.2 items/s, ~11s left".
        progress = ProgressReporter(None, n, unit="items", done=done, every_s=self.progress_every_s, logger=log)
        loader = DataLoader(dataset, batch_sampler=[batches[b] for b in pending], num_workers=num_workers)
        with progress:
            for b, (x, y) in zip(pending, loader):
                seed_batch(seed, b)
                out = produce(x, y)
                if not isinstance(out, Tensor) or out.shape != x.shape:
                    raise ValueError(f"the producer must return images shaped like x {tuple(x.shape)}, got "
                                     f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
                out, y = out.detach().cpu(), y.cpu()
                for k, i in enumerate(batches[b]):
                    for role, image in self.layout.encode(out[k], y[k]).items():
                        save_png(self.root / rows[i][role], image)
                progress.update(len(batches[b]), force=b == pending[-1])

        missing = [i for i in range(n) if not self._written(rows, [i])]
        if missing:
            raise RuntimeError(f"{len(missing)} item(s) are missing after writing (first: {rows[missing[0]]})")
        self._write_manifest(rows)
        self._write_run(created, n, n, complete=True)
        return n

    def _written(self, rows: Sequence[Mapping[str, Any]], items: Sequence[int]) -> bool:
        return all((self.root / f).is_file() for i in items for f in self._files(rows[i]))

    def _write_manifest(self, rows: Sequence[Mapping[str, Any]]) -> None:
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_text(self.root / MANIFEST_FILE, buffer.getvalue())


def read_manifest(root: str | Path) -> list[dict[str, str]]:
    """The rows of ``<root>/manifest.csv``."""
    with open(Path(root) / MANIFEST_FILE, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class IncompleteCopyError(ValueError):
    """A dataset folder written by advmed whose run did not finish or whose files went missing."""


def verify_copy(root: str | Path, rerun_hint: str = "rerun the command that wrote it (it resumes)") -> dict[str, Any]:
    """Check that ``root`` holds a finished dataset written by :class:`DatasetWriter` (``run.json``
    complete, every file that ``manifest.csv`` lists present and non-empty) and return its digest:
    ``{"manifest_sha256", "num_items", "identity"}``. Raises :class:`IncompleteCopyError` naming the
    folder, what is missing and ``rerun_hint`` (how to complete it)."""
    root = Path(root).expanduser()
    manifest, run_file = root / MANIFEST_FILE, root / RUN_FILE
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist: {rerun_hint}")
    try:
        record = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise IncompleteCopyError(f"{run_file} is missing or unreadable ({err}): {root} is not a finished advmed "
                                  f"dataset copy; {rerun_hint}") from err
    if not record.get("complete") or not manifest.is_file():
        raise IncompleteCopyError(f"{root} holds an unfinished copy ({record.get('items_written')}/"
                                  f"{record.get('num_items')} items written, no complete manifest): {rerun_hint}")
    rows = read_manifest(root)
    roles = [c for c in ("image", "mask") if rows and c in rows[0]]
    missing = [row[role] for row in rows for role in roles
               if not (root / row[role]).is_file() or (root / row[role]).stat().st_size == 0]
    if missing:
        raise IncompleteCopyError(f"{manifest} lists {len(rows) * len(roles)} files but {len(missing)} are missing or "
                                  f"empty (first: {missing[:3]}): {rerun_hint}")
    if len(rows) != record.get("num_items"):
        raise IncompleteCopyError(f"{manifest} has {len(rows)} rows but {run_file} says {record.get('num_items')} "
                                  f"items: {rerun_hint}")
    return {"manifest_sha256": file_sha256(manifest), "num_items": len(rows), "identity": record.get("identity")}
