"""A decoded cache of a folder dataset: every image file of a folder decoded once into one uint8
array file, read back through a memory map (docs/decoded_cache.md: usage and measured speed-up).

Why: NCT-CRC-HE-100K is 100,000 PackBits TIFFs, Kaggle HCD 220,025 TIFFs; decoding a 224 px tile
costs about 5 ms of CPU (tifffile decodes PackBits in Python without imagecodecs), a memory-mapped
row is a page-cache copy.

One cache per folder, ``<cache_dir>/<folder name>-<12 hex digits of sha256(absolute path)>/``:
``images-<token>.npy``, uint8 (N, H, W, 3), row i = :func:`~advmed.data.readers.read_image` of file
i (the folder datasets' reader, so items are equal bit for bit; tiles keep their native size and
``image_size`` / ``center_crop`` apply on access, so one cache serves every size and nothing is
quantised after a resize), and ``manifest.json``: source folder, every file's relative path, size
and mtime_ns, tile shape, the images file's name, size and sha256, advmed version.

Atomic: the images go to ``<name>.partial``, are renamed when complete, and the manifest is
replaced last (the commit point), so a killed build leaves leftovers that the next build removes,
never a manifest naming an incomplete file. A lock file beside the cache (``filelock``) makes the
jobs of a multirun or the ranks of a DDP run build it once; the others wait, then open it.
Opening compares the file list with the folder (a file added, removed, resized or touched ->
rebuilt, reusing the unchanged files' rows) and checks the images file's header and size (a
truncated or unreadable cache is rebuilt with a warning: it is derived data, the folder is the
truth). The sha256 check reads every byte, so it is explicit: :func:`verify_decoded_cache`, or
``python -m advmed.data.decoded_cache verify <cache folder>``.

Hand-written because no library keeps a decoded copy of an image folder in sync with it: numpy's
``.npy`` and memmap store it, filelock locks; FFCV, LitData and WebDataset convert to their own
formats and loaders and do not notice source changes; MONAI's PersistentDataset writes one file
per item (100,000 small files again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from advmed.data.decoded_cache_writer import FORMAT, MANIFEST, Record, build_cache
from advmed.utils.files import file_sha256

log = logging.getLogger(__name__)

_FIX = "delete the folder {path}; the next run with data.cache_dir set rebuilds it"



class CacheError(RuntimeError):
    """A decoded cache's images file does not match its manifest (checksum, header or size)."""


class CachedImages:
    """Decoded tiles of some files of a cache, in the order asked: ``images[i]`` is a writable uint8
    (H, W, 3) array. The memory map opens on first access in each process and is dropped when
    pickled (DataLoader workers under spawn / forkserver reopen it, rather than receive a copy)."""

    def __init__(self, images_path: Path, rows: np.ndarray) -> None:
        self.images_path = Path(images_path)
        self.rows = rows
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.images_path, mmap_mode="r")
        return np.array(self._array[self.rows[index]])  # a copy: torch warns on read-only memory

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}


class DecodedCache:
    """An up-to-date cache of ``folder`` (see :func:`open_decoded_cache`)."""

    def __init__(self, path: Path, folder: Path, manifest: dict[str, Any]) -> None:
        self.path, self.folder, self.manifest = path, folder, manifest
        self.images_path = path / manifest["images_file"]
        self._rows = {record[0]: row for row, record in enumerate(manifest["files"])}

    def images_for(self, paths: Sequence[Path]) -> CachedImages:
        """The decoded images of ``paths`` (files of the folder), in that order."""
        try:
            rows = [self._rows[_relative(path, self.folder)] for path in paths]
        except KeyError as exc:
            raise KeyError(f"{exc.args[0]} is not in the decoded cache {self.path} of {self.folder}") from None
        return CachedImages(self.images_path, np.asarray(rows, dtype=np.int64))

    def verify(self) -> None:
        """Check the images file against the manifest's sha256 (reads every byte); :class:`CacheError` if not."""
        verify_decoded_cache(self.path)


def decoded_images(
    folder: Path, paths: Sequence[Path], cache_dir: str | Path | None, workers: int = 0, keep: Sequence[Path] | None = None
) -> CachedImages | None:
    """The decoded images of ``keep`` (default: ``paths``) from the cache of ``paths`` (the files of
    ``folder``) under ``cache_dir``, built or refreshed first; ``None`` when ``cache_dir`` is unset."""
    if cache_dir is None or not str(cache_dir).strip():
        return None
    cache = open_decoded_cache(folder, paths, cache_dir, workers)
    return cache.images_for(paths if keep is None else keep)


def cache_path(cache_dir: str | Path, folder: Path) -> Path:
    """Where the cache of ``folder`` lives: one per absolute source path."""
    folder = Path(folder).expanduser().resolve()
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    return Path(cache_dir).expanduser() / f"{folder.name}-{digest}"


def open_decoded_cache(folder: Path, paths: Sequence[Path], cache_dir: str | Path, workers: int = 0) -> DecodedCache:
    """The cache of the image files ``paths`` of ``folder``, built when missing, rebuilt when the
    files changed or the cache is unreadable. ``workers`` > 0 decodes in that many processes."""
    folder = Path(folder)
    if not paths:
        raise ValueError(f"no image files of {folder} to cache")
    cache_dir = Path(cache_dir).expanduser()
    if cache_dir.exists() and not cache_dir.is_dir():
        raise NotADirectoryError(f"data.cache_dir={cache_dir} is a file; point it at a folder (or null: no cache)")
    path = cache_path(cache_dir, folder)
    path.mkdir(parents=True, exist_ok=True)
    records = [_record(p, folder) for p in paths]
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process building the decoded cache %s", path)
        lock.acquire()
    try:
        manifest, problem = _read_valid_manifest(path)
        if problem:
            warnings.warn(f"decoded cache {path} is unusable ({problem}); rebuilding it", UserWarning, stacklevel=2)
        old = DecodedCache(path, folder, manifest) if manifest else None
        if manifest and {tuple(r) for r in manifest["files"]} == set(records):  # rows are found by name
            log.info("decoded cache %s: %d tiles of %s, up to date", path, len(records), folder)
            return old
        if manifest:
            log.info("decoded cache %s is stale (%s since it was built); rebuilding", path, _changes(manifest, records))
        else:
            log.info("building the decoded cache %s of %d files of %s", path, len(records), folder)
        reuse = None if old is None else (old.manifest, old.images_path)
        manifest = build_cache(path, folder, list(paths), records, workers, reuse)
        return DecodedCache(path, folder, manifest)
    finally:
        lock.release()


def verify_decoded_cache(path: str | Path) -> dict[str, Any]:
    """Check a cache folder: manifest, header, size and the images file's sha256. Returns the
    manifest; raises :class:`CacheError` naming the file and the fix."""
    path = Path(path)
    if not path.is_dir():
        raise CacheError(f"{path} is not a folder; give a cache folder, <cache_dir>/<folder name>-<hash>")
    manifest, problem = _read_valid_manifest(path)
    if manifest is None:
        problem = problem or f"no {MANIFEST}: not a decoded cache, or its first build never finished"
        raise CacheError(f"decoded cache {path}: {problem}; {_FIX.format(path=path)}")
    images = path / manifest["images_file"]
    digest = file_sha256(images)
    if digest != manifest["images_sha256"]:
        raise CacheError(
            f"{images} has sha256 {digest[:16]}..., the manifest says {manifest['images_sha256'][:16]}...: "
            f"the file is corrupt; {_FIX.format(path=path)}"
        )
    return manifest


# --------------------------------------------------------------------------- checks


def _relative(path: Path, folder: Path) -> str:
    return Path(path).relative_to(folder).as_posix()


def _record(path: Path, folder: Path) -> Record:
    stat = os.stat(path)
    return (_relative(path, folder), stat.st_size, stat.st_mtime_ns)


def _changes(manifest: dict[str, Any], records: Sequence[Record]) -> str:
    old = {r[0]: tuple(r) for r in manifest["files"]}
    new = {r[0]: r for r in records}
    changed = sum(1 for name in new.keys() & old.keys() if new[name] != old[name])
    return f"{len(new.keys() - old.keys())} file(s) added, {len(old.keys() - new.keys())} removed, {changed} changed"


def _header(images: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a .npy file, from its header alone."""
    with open(images, "rb") as file:
        version = np.lib.format.read_magic(file)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f".npy format version {version} (a cache writes 1.0 or 2.0)")
        shape, fortran, dtype = readers[version](file)
        if fortran:
            raise ValueError("Fortran-ordered array")
        return shape, dtype, file.tell()


def _read_valid_manifest(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(manifest, None)`` when the cache at ``path`` is readable and whole, ``(None, why)`` when it
    is not, ``(None, None)`` when there is none."""
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        return None, None
    try:
        manifest = json.loads(manifest_file.read_text())
        if manifest.get("format") != FORMAT:
            return None, f"{manifest_file} has format {manifest.get('format')!r}, not {FORMAT!r}"
        images = path / manifest["images_file"]
        if not images.is_file():
            return None, f"its images file {images} is missing"
        shape, dtype, offset = _header(images)
        expected = (len(manifest["files"]), *manifest["tile_shape"])
        if dtype != np.uint8 or tuple(shape) != expected:
            return None, f"{images} holds {dtype} {tuple(shape)}, the manifest says uint8 {expected}"
        size, wanted = images.stat().st_size, offset + int(np.prod(expected))
        if size != wanted:
            return None, f"{images} is {size:,} bytes, expected {wanted:,}: truncated or overwritten"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"cannot read it: {type(exc).__name__}: {exc}"
    return manifest, None


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``verify <cache folder>...``: check each cache's checksum; exit status 1 if one fails."""
    parser = argparse.ArgumentParser(prog="python -m advmed.data.decoded_cache", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check manifest, size and sha256 of decoded caches")
    verify.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    failed = 0
    for folder in args.folders:
        try:
            manifest = verify_decoded_cache(folder)
        except CacheError as exc:
            print(f"FAILED {exc}", file=sys.stderr)
            failed += 1
            continue
        shape = "x".join(map(str, manifest["tile_shape"]))
        print(f"ok {folder}: {len(manifest['files'])} tiles {shape} of {manifest['source']}, "
              f"{manifest['images_bytes'] / 1e9:.2f} GB, sha256 {manifest['images_sha256'][:16]}...")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
