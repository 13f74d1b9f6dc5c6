"""What can go wrong in a download or a verification, each as its own exception type.

Every one is a :class:`DownloadError` whose message says what happened, to which file or folder, and
what to do next: the entry point prints the message alone (no traceback) and exits with status 1.
"""

from __future__ import annotations


class DownloadError(Exception):
    """A failure the user can act on; the message names the file or folder and the fix."""


class UnknownSource(DownloadError):
    """The source name is not one of the registry's (the message lists the known ones)."""


class FolderInUse(DownloadError):
    """The dataset folder holds another dataset: another source's manifest, or files without a manifest."""


class ConnectionLost(DownloadError):
    """The connection dropped more often than ``retries`` allows; the partial file is kept for a resume."""


class ServerRefused(DownloadError):
    """The server answered with an error that a retry will not fix (404, 403, ...)."""


class ChecksumMismatch(DownloadError):
    """A downloaded file is not the published one (size, md5 or sha256); the bad file has been deleted."""


class DiskFull(DownloadError):
    """Not enough free space in the dataset folder (checked before, or ``ENOSPC`` while writing)."""


class UnpackError(DownloadError):
    """An archive could not be unpacked, or does not hold the layout its data config reads."""


class VerificationFailed(DownloadError):
    """``verify`` found problems in the dataset folder (the message lists them)."""
