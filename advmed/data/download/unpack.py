"""Unpacking a verified download into a temporary folder, and moving the result into place in one rename.

A DataModule must never read a half-unpacked dataset, so archives unpack under the staging folder
(``<root>/.advmed-download/``, on the same file system as the dataset) and only the finished folder
or file is renamed to its target. zip and tar members that would land outside the folder (absolute
paths, ``..``, links out of it) are refused: :mod:`zipfile` drops such parts of a name and
:mod:`tarfile`'s ``data`` filter rejects them. macOS resource forks (``__MACOSX/``) are not unpacked.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from advmed.data.download.errors import DownloadError, UnpackError
from advmed.data.download.fetch import CHUNK_BYTES, progress_unit, write_block
from advmed.data.download.remote import RemoteFile
from advmed.data.download.space import check_free_space, disk_full, is_disk_full
from advmed.utils.progress import ProgressReporter

JUNK_PARTS = ("__MACOSX",)
JUNK_NAMES = (".DS_Store",)


def is_junk(name: str) -> bool:
    """An archive member that is no part of a dataset (macOS metadata)."""
    path = PurePosixPath(name)
    return any(part in JUNK_PARTS for part in path.parts) or path.name in JUNK_NAMES


def unpack(archive: Path, remote: RemoteFile, staging: Path, progress_every_s: float = 30.0) -> Path:
    """Unpack ``archive`` (verified already) into a fresh folder under ``staging`` and return the path
    of the finished target inside it: the archive's single top folder (or the whole content) for
    zip / tar, the decompressed file for gzip, and the archive itself for ``none``."""
    if remote.unpack == "none":
        return archive
    work = staging / f"unpack-{remote.name}"
    if work.exists():
        shutil.rmtree(work)  # a killed run's leftovers: start the unpacking again
    work.mkdir(parents=True)
    try:
        if remote.unpack == "gzip":
            return _gunzip(archive, work / Path(remote.target).name, progress_every_s)
        if remote.unpack == "zip":
            _unzip(archive, work, progress_every_s)
        else:
            _untar(archive, work, progress_every_s)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full(staging, archive.stat().st_size, f"unpacking {remote.name}") from exc
        if isinstance(exc, DownloadError | KeyboardInterrupt | SystemExit):
            raise
        if isinstance(exc, zipfile.BadZipFile | tarfile.TarError | gzip.BadGzipFile | EOFError | zlib.error):
            raise UnpackError(f"{archive} cannot be unpacked as {remote.unpack} ({exc}); delete it and download "
                              "it again") from exc
        raise
    return _top_folder(work)


def _unzip(archive: Path, work: Path, every_s: float) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not is_junk(m.filename)]
        check_free_space(work, sum(m.file_size for m in members), f"unpacking {archive.name}")
        with ProgressReporter(f"unpack {archive.name}", len(members), unit="files", every_s=every_s) as progress:
            for member in members:
                zf.extract(member, work)  # drops absolute and '..' parts of member names
                progress.update()


def _untar(archive: Path, work: Path, every_s: float) -> None:
    with tarfile.open(archive) as tf:  # any compression
        members = [m for m in tf.getmembers() if not is_junk(m.name)]
        check_free_space(work, sum(m.size for m in members if m.isfile()), f"unpacking {archive.name}")
        with ProgressReporter(f"unpack {archive.name}", len(members), unit="files", every_s=every_s) as progress:
            for member in members:
                try:
                    tf.extract(member, work, filter="data")  # refuses paths and links leaving work/
                except tarfile.FilterError as exc:
                    raise UnpackError(f"{archive} holds an unsafe member {member.name!r} ({exc}); not unpacked") from exc
                progress.update()


def _gunzip(archive: Path, out: Path, every_s: float) -> Path:
    size = archive.stat().st_size
    check_free_space(out.parent, size, f"unpacking {archive.name}")  # at least as large as the archive
    unit, scale = progress_unit(size)
    with archive.open("rb") as raw, gzip.GzipFile(fileobj=raw) as source, out.open("wb") as target, \
            ProgressReporter(f"unpack {archive.name}", size / scale, unit=unit, every_s=every_s) as progress:
        done = 0  # compressed bytes read, which is what the total counts
        for block in iter(lambda: source.read(CHUNK_BYTES), b""):
            write_block(target, block)
            progress.update((raw.tell() - done) / scale)
            done = raw.tell()
    return out


def _top_folder(work: Path) -> Path:
    entries = [p for p in work.iterdir() if not is_junk(p.name)]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return work


def install_target(built: Path, root: Path, target: str, staging: Path) -> Path:
    """Move ``built`` to ``root / target`` in one rename; an existing target is first moved aside into
    ``staging`` and deleted afterwards (so the target is at every moment the old or the new one)."""
    destination = root / target
    destination.parent.mkdir(parents=True, exist_ok=True)
    aside = None
    if destination.exists() or destination.is_symlink():
        aside = staging / f"replaced-{Path(target).name}-{os.getpid()}"
        os.replace(destination, aside)
    os.replace(built, destination)
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside)
        else:
            aside.unlink()
    return destination
