"""Writing a decoded cache (:mod:`advmed.data.decoded_cache`): the images file, row by row with
``pwrite`` (from worker processes when asked), then its manifest, the commit point. A build never
overwrites the file the current manifest names, and a failed one removes what it wrote."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

import advmed
from advmed.data.readers import read_image
from advmed.utils.files import file_sha256, write_text
from advmed.utils.progress import ProgressReporter

log = logging.getLogger("advmed.data.decoded_cache")  # one logger for the cache, opened or built

FORMAT = "advmed.decoded_cache/1"  # manifest format tag
MANIFEST = "manifest.json"
_CHUNK = 256  # files per worker task: amortises the task overhead, keeps progress lines flowing
_PROGRESS_EVERY_S = 30.0

Record = tuple[str, int, int]  # (path relative to the folder, size in bytes, mtime_ns)


def build_cache(
    path: Path, folder: Path, paths: list[Path], records: list[Record], workers: int,
    old: tuple[dict[str, Any], Path] | None,
) -> dict[str, Any]:
    """Decode ``paths`` (the files of ``folder``, ``records`` their stats) into a new images file in the
    cache folder ``path``, copying the rows of files unchanged since ``old`` (the current cache's
    manifest and images file, if any); write the manifest last
    (the commit point) and remove earlier images files. Returns the manifest. ``workers`` > 0 decodes
    in that many processes."""
    start = time.monotonic()
    tile_shape = read_image(paths[0]).shape
    shape = (len(paths), *tile_shape)
    _check_free_space(path, int(np.prod(shape)))
    # A new name per build: the file that the current manifest names is never overwritten.
    token = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    final = path / f"images-{token}.npy"
    partial = final.with_name(final.name + ".partial")
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
    offset = array.offset
    del array  # the file now has its header and full (sparse) size; rows are written with pwrite
    try:
        progress = ProgressReporter(f"decoded cache {path}", len(paths), unit="tiles", every_s=_PROGRESS_EVERY_S, logger=log)
        pending = _copy_unchanged(partial, offset, records, tile_shape, old, progress)
        jobs = [(row, str(paths[row])) for row in pending]
        chunks = [jobs[i : i + _CHUNK] for i in range(0, len(jobs), _CHUNK)]
        if workers > 0 and len(chunks) > 1:
            _decode_in_pool(str(partial), offset, tile_shape, chunks, workers, progress)
        else:
            for chunk in chunks:
                progress.update(_decode_rows(str(partial), offset, tile_shape, chunk))
        progress.close()
        with open(partial, "rb+") as file:
            os.fsync(file.fileno())
        digest = file_sha256(partial)
        os.replace(partial, final)
        manifest = {
            "format": FORMAT,
            "advmed_version": advmed.__version__,
            "source": str(folder.expanduser().resolve()),
            "reader": "advmed.data.readers.read_image",
            "tile_shape": list(tile_shape),
            "images_file": final.name,
            "images_bytes": final.stat().st_size,
            "images_sha256": digest,
            "build_seconds": round(time.monotonic() - start, 3),
            "files": [list(r) for r in records],
        }
        write_text(path / MANIFEST, json.dumps(manifest, separators=(",", ":")) + "\n")  # the commit point
    except BaseException:
        partial.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise
    for leftover in path.glob("images-*.npy*"):  # earlier versions and killed builds' files
        if leftover.name != final.name:
            leftover.unlink(missing_ok=True)
    log.info("decoded cache %s: %d tiles %s in %.1f s", path, len(paths), "x".join(map(str, tile_shape)),
             manifest["build_seconds"])
    return manifest


def _check_free_space(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if needed > free:
        raise OSError(
            f"the decoded cache {path} needs {needed / 1e6:,.0f} MB but only {free / 1e6:,.0f} MB are free there; "
            "point data.cache_dir at a larger disk, or set data.cache_dir=null to read the folder"
        )


def _copy_unchanged(
    partial: Path, offset: int, records: list[Record], tile_shape: tuple[int, ...], old: tuple[dict[str, Any], Path] | None,
    progress: ProgressReporter,
) -> list[int]:
    """Copy the rows of files unchanged since ``old`` was built; return the rows still to decode."""
    old_rows = {}
    if old is not None and tuple(old[0]["tile_shape"]) == tuple(tile_shape):
        old_rows = {tuple(r): row for row, r in enumerate(old[0]["files"])}
    reused = [(row, old_rows[r]) for row, r in enumerate(records) if r in old_rows]
    if reused:
        source = np.load(old[1], mmap_mode="r")
        fd = os.open(partial, os.O_WRONLY)
        try:
            for row, old_row in reused:
                _write_row(fd, np.ascontiguousarray(source[old_row]), offset, row)
        finally:
            os.close(fd)
        del source
        log.info("decoded cache: reused %d unchanged tiles", len(reused))
        progress.update(len(reused))
    done = {row for row, _ in reused}
    return [row for row in range(len(records)) if row not in done]


def _write_row(fd: int, tile: np.ndarray, offset: int, row: int) -> None:
    data = memoryview(tile).cast("B")
    position = offset + row * len(data)
    while data:  # pwrite may write less than asked; an error (ENOSPC) raises instead of a SIGBUS
        written = os.pwrite(fd, data, position)
        data, position = data[written:], position + written


def _decode_rows(partial: str, offset: int, tile_shape: tuple[int, ...], jobs: list[tuple[int, str]]) -> int:
    """Decode ``(row, file)`` jobs into the images file (also run in worker processes)."""
    fd = os.open(partial, os.O_WRONLY)
    try:
        for row, file in jobs:
            tile = read_image(file)
            if tile.shape != tuple(tile_shape):
                raise ValueError(
                    f"{file} is {tile.shape[1]}x{tile.shape[0]} but the folder's first tile is "
                    f"{tile_shape[1]}x{tile_shape[0]}: a decoded cache holds tiles of one size. "
                    "Set data.cache_dir=null to read the files one by one"
                )
            _write_row(fd, tile, offset, row)
    finally:
        os.close(fd)
    return len(jobs)


def _decode_in_pool(
    partial: str, offset: int, tile_shape: tuple[int, ...], chunks: list, workers: int, progress: ProgressReporter
) -> None:
    # fork, where there is one: the workers run numpy / Pillow / tifffile only, never torch, so
    # they inherit the imports for free (spawn would re-import advmed in every worker).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_decode_rows, partial, offset, tile_shape, chunk) for chunk in chunks]
        try:
            for future in concurrent.futures.as_completed(futures):
                progress.update(future.result())
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
