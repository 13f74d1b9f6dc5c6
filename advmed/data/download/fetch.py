"""Streaming HTTP download into a ``.part`` file, resumed with a Range request after an interruption.

The bytes go to ``<name>.part`` as they arrive, so a dropped connection, a timeout or a killed run
loses nothing: the next attempt (a retry within this run, after a wait that doubles each time, or a
rerun of the command) asks for ``Range: bytes=<size of .part>-`` and appends. A server that ignores
the Range header (status 200) is read again from the start; one that answers 416 to a ``.part`` as
long as the file has nothing left to send. Errors a retry cannot fix (404, 403, ...) stop at once.

Hand-written on the standard library's ``urllib`` because resuming, bounded retries and advmed's
progress reporting are what the task needs, and no extra dependency is then required (torchvision's
and MONAI's download helpers neither resume nor report progress in a log).
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import advmed
from advmed.data.download.errors import ConnectionLost, DownloadError, ServerRefused
from advmed.data.download.remote import RemoteFile
from advmed.data.download.space import check_free_space, disk_full, human_size, is_disk_full
from advmed.utils.progress import ProgressReporter

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
MAX_WAIT_S = 300.0
TRANSIENT_HTTP = (408, 425, 429, 500, 502, 503, 504)  # worth a retry: the server may answer later


def progress_unit(num_bytes: float | None) -> tuple[str, float]:
    """``("MB", 1e6)`` for files of 10 MB and more (or of unknown size), ``("kB", 1e3)`` below: progress
    counts whole units, and 3 kB shown as 0 MB says nothing."""
    return ("kB", 1e3) if num_bytes is not None and num_bytes < 10e6 else ("MB", 1e6)


@dataclass(frozen=True)
class FetchSettings:
    """How hard to try: ``retries`` after the first attempt, waits from ``retry_wait_s`` doubling (at most
    5 minutes), ``timeout_s`` of silence before a connection counts as dropped, progress lines every
    ``progress_every_s`` in a log."""

    retries: int = 5
    retry_wait_s: float = 5.0
    timeout_s: float = 60.0
    progress_every_s: float = 30.0


class _Dropped(Exception):
    """A transient failure: the attempt may be retried, resuming at the size of the ``.part`` file."""


def write_block(file: IO[bytes], block: bytes) -> None:
    """Write one block of a download. Every downloaded byte passes here, so that a test can make the
    disk look full in one place."""
    file.write(block)


def fetch(remote: RemoteFile, part: Path, settings: FetchSettings,
          sleep: Callable[[float], None] = time.sleep) -> Path:
    """Download ``remote`` into ``part`` (appending to what it holds) and return ``part`` once the server
    has sent everything. Raises :class:`ConnectionLost` after ``settings.retries`` failed retries (the
    ``.part`` file is kept: a rerun resumes), :class:`ServerRefused` for a permanent HTTP error, and
    :class:`~advmed.data.download.errors.DiskFull` when the disk fills up."""
    part.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    while True:
        size = remote.expected.size
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > size:
            log.warning("%s holds %d bytes, more than the %d of %s: starting again", part, offset, size, remote.name)
            part.unlink()
            offset = 0
        if size is not None and offset == size and size > 0:
            return part  # complete already (a run killed before the rename): verified next
        try:
            _attempt(remote, part, offset, settings)
            return part
        except _Dropped as exc:
            failures += 1
            kept = part.stat().st_size if part.exists() else 0
            if failures > settings.retries:
                raise ConnectionLost(
                    f"downloading {remote.name} from {remote.url} failed {failures} times (last: {exc}). "
                    f"{kept:,} bytes are kept in {part}: run the same command again to resume from there "
                    "(more tries: retries=..., a slow link: timeout_s=...)"
                ) from exc
            wait = min(settings.retry_wait_s * 2 ** (failures - 1), MAX_WAIT_S)
            log.warning("%s: %s; retry %d/%d in %.0fs, resuming at byte %d",
                        remote.name, exc, failures, settings.retries, wait, kept)
            sleep(wait)


def _attempt(remote: RemoteFile, part: Path, offset: int, settings: FetchSettings) -> None:
    headers = {"User-Agent": f"advmed/{advmed.__version__} (python urllib)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(remote.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=settings.timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            # The part is at least as long as the file: done when no size says otherwise, else start again.
            if remote.expected.size in (None, offset):
                return
            part.unlink()
            raise _Dropped(f"the server refused the range from byte {offset}") from exc
        if exc.code in TRANSIENT_HTTP:
            raise _Dropped(f"HTTP {exc.code} {exc.reason}") from exc
        raise ServerRefused(
            f"{remote.url} answered HTTP {exc.code} {exc.reason} for {remote.name}. The file may have moved: "
            "check the source's page (python -m advmed.data.download list), or set sources.<source>.base_url "
            "to a mirror that holds it"
        ) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Dropped(f"cannot connect ({getattr(exc, 'reason', exc)})") from exc
    with response:
        start, total = _range_of(response, offset)
        if start == 0 and offset:
            log.info("%s: the server does not resume (HTTP %d): downloading it again from the start",
                     remote.name, response.status)
        _check_server_size(remote, total)
        if total is not None:
            check_free_space(part.parent, total - start, f"the rest of {remote.name}")
        _stream(response, remote, part, start, total, settings)


def _range_of(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """``(byte the body starts at, total size of the file or None)`` from the response headers."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")  # bytes 100-999/1000
        try:
            first = int(content_range.split()[1].split("-")[0])
            whole = content_range.rsplit("/", 1)[1]
        except (IndexError, ValueError) as exc:
            raise _Dropped(f"unreadable Content-Range {content_range!r}") from exc
        if first != offset:
            raise _Dropped(f"the server resumed at byte {first}, not {offset}")
        return offset, None if whole == "*" else int(whole)
    return 0, None if length is None else int(length)


def _check_server_size(remote: RemoteFile, total: int | None) -> None:
    # A file of another size is another file: no need to download gigabytes to find out.
    size = remote.expected.size
    if size is not None and total is not None and total != size:
        raise DownloadError(
            f"{remote.url} serves {total:,} bytes but {remote.name} has {size:,} ({remote.expected.origin}): "
            "the server holds another version of the file. Check the source's page; if you trust this "
            f"version, set sources.<source>.checksums={{{remote.name}: ...}} to its published checksum"
        )


def _stream(response: http.client.HTTPResponse, remote: RemoteFile, part: Path, start: int,
            total: int | None, settings: FetchSettings) -> None:
    received = start
    unit, scale = progress_unit(total)
    with ProgressReporter(f"download {remote.name}", None if total is None else total / scale, unit=unit,
                          done=start / scale, every_s=settings.progress_every_s) as progress, \
            part.open("r+b" if start else "wb") as file:
        file.seek(start)
        file.truncate()
        while True:
            try:
                block = response.read(CHUNK_BYTES)
            except (http.client.IncompleteRead, OSError, http.client.HTTPException) as exc:
                raise _Dropped(f"connection lost at byte {received:,} ({type(exc).__name__})") from exc
            if not block:
                break
            try:
                write_block(file, block)
            except OSError as exc:
                if is_disk_full(exc):
                    rest = None if total is None else total - received
                    what = f"the rest of {remote.name}" + (
                        "" if total is None else f" ({human_size(rest)} of {human_size(total)})")
                    raise disk_full(part.parent, rest, what) from exc
                raise
            received += len(block)
            progress.update(len(block) / scale)
    if total is not None and received < total:
        raise _Dropped(f"connection closed at byte {received:,} of {total:,}")
