"""Checking a download against its published size and checksum, before anything is unpacked.

A file that does not match is deleted (a resume must not build on bad bytes) and the error names the
file, the expected and the computed values, and where the expected ones come from. The sha256 of
every download is computed as well, for the manifest, in the same pass over the file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from advmed.data.download.errors import ChecksumMismatch
from advmed.data.download.fetch import progress_unit
from advmed.data.download.remote import RemoteFile
from advmed.utils.progress import ProgressReporter

BLOCK_BYTES = 1 << 20


def file_digests(path: Path, algorithms: tuple[str, ...] = ("md5", "sha256"),
                 progress_every_s: float = 30.0) -> dict[str, str]:
    """Hex digests of ``path`` for each of ``algorithms``, in one read of the file (with progress)."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    size = path.stat().st_size
    unit, scale = progress_unit(size)
    with ProgressReporter(f"check {path.name}", size / scale, unit=unit, every_s=progress_every_s) as progress, \
            path.open("rb") as file:
        for block in iter(lambda: file.read(BLOCK_BYTES), b""):
            for digest in hashes.values():
                digest.update(block)
            progress.update(len(block) / scale)
    return {name: digest.hexdigest() for name, digest in hashes.items()}


def verify_download(path: Path, remote: RemoteFile, progress_every_s: float = 30.0) -> dict[str, Any]:
    """``{size, md5, sha256}`` of ``path`` once it matches ``remote.expected``; otherwise delete it and
    raise :class:`ChecksumMismatch`."""
    expected = remote.expected
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        _reject(path, remote, "size", f"{expected.size:,} bytes", f"{size:,} bytes")
    digests = file_digests(path, ("md5", "sha256"), progress_every_s)
    for algorithm in ("md5", "sha256"):
        want = getattr(expected, algorithm)
        if want is not None and digests[algorithm] != want:
            _reject(path, remote, algorithm, want, digests[algorithm])
    return {"size": size, **digests}


def _reject(path: Path, remote: RemoteFile, what: str, expected: str, got: str) -> None:
    path.unlink(missing_ok=True)
    raise ChecksumMismatch(
        f"{remote.name} (from {remote.url}) is not the published file: expected {what} {expected}, "
        f"got {got} (expected value: {remote.expected.origin}). The bad download {path} has been deleted; "
        "run the same command again to fetch it anew. If it fails again the server holds another version: "
        "check the source's page before trusting it"
    )
