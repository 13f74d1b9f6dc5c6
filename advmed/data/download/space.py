"""Free disk space: checked before writing, and ``ENOSPC`` turned into a message that says how much is needed.

A dataset of tens of GB that fills the disk halfway through should fail early, or at least say which
folder is full and how much more it needs, rather than end in a bare ``[Errno 28]``.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from advmed.data.download.errors import DiskFull


def human_size(num_bytes: float) -> str:
    """``11.7 GB``, ``800.3 MB``, ``512 B`` (decimal units, as Zenodo and ``df -H`` show sizes)."""
    value = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def free_bytes(folder: Path) -> int:
    """Free bytes on the file system of ``folder`` (its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _message(folder: Path, needed: int | None, what: str, free: int | None) -> str:
    free_text = "" if free is None else f", {human_size(free)} is free"
    amount = "more space" if not needed else f"about {human_size(needed)} more"
    return (
        f"not enough free space in {folder} for {what}: it needs {amount}{free_text}. "
        "Free some space (or choose another root=...) and run the same command again: it resumes where it stopped"
    )


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise :class:`DiskFull` when ``folder`` has less than ``needed`` bytes free for ``what``."""
    free = free_bytes(folder)
    if needed > free:
        raise DiskFull(_message(folder, needed, what, free))


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(folder: Path, needed: int | None, what: str) -> DiskFull:
    """The :class:`DiskFull` to raise (``from`` the ``OSError``) when writing ``what`` in ``folder`` hit ENOSPC
    (``needed``: bytes still to write, None when unknown)."""
    try:
        free: int | None = free_bytes(folder)
    except OSError:
        free = None
    return DiskFull(_message(folder, needed, what, free))
