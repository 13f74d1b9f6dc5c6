"""Filling a dataset folder from a source's published files: fetch, verify, unpack, move into place.

Per file, in order: a file the manifest records as installed is skipped (a rerun completes a killed
one); otherwise it downloads into ``<root>/.advmed-download/<name>.part`` (resumed after an
interruption), is renamed to ``<name>`` once complete, is checked against its published size and
checksum (and deleted when it does not match), is unpacked under the staging folder, checked to
hold the layout the data config reads, and is moved to its target in one rename. The manifest is
updated at each step. When a run fails before anything was installed and with nothing worth
resuming, its manifest and staging folder are removed again (and the folder, when it created it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advmed.data.download.checksums import verify_download
from advmed.data.download.errors import DownloadError
from advmed.data.download.fetch import FetchSettings, fetch
from advmed.data.download.manifest import (
    INSTALLED,
    STAGING_DIR,
    claim_folder,
    discard_if_nothing_done,
    installed,
    now,
    write_manifest,
)
from advmed.data.download.remote import RemoteFile, select
from advmed.data.download.source import Source
from advmed.data.download.space import check_free_space, disk_full, human_size, is_disk_full
from advmed.data.download.unpack import install_target, unpack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstallSettings:
    """``files``: only these (None: all); ``force``: write into a folder holding another dataset;
    ``keep_archives``: keep the verified archives in the staging folder after unpacking."""

    fetch: FetchSettings = FetchSettings()
    files: Sequence[str] | None = None
    force: bool = False
    keep_archives: bool = False


def install(source: Source, root: Path, settings: InstallSettings) -> dict[str, Any]:
    """Download, verify and unpack ``source``'s files into ``root``; returns what was installed and skipped."""
    files = select(source.remote_files(), settings.files, source.family)
    manifest = claim_folder(root, source.family, source.title, settings.force)
    pending = [f for f in files if not installed(manifest, root, f.name, f.target)]
    skipped = [f.name for f in files if f not in pending]
    for name in skipped:
        log.info("%s is in place already (%s); skipped", name, root)
    if not pending:
        return {"source": source.name, "root": str(root), "installed": [], "skipped": skipped}
    staging = root / STAGING_DIR
    try:
        write_manifest(root, manifest)  # from now on the folder is recognised (and cleaned up on a failure)
        staging.mkdir(exist_ok=True)
        _check_space(root, staging, pending)
        for remote in pending:
            _install_one(source, remote, root, staging, manifest, settings)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        discard_if_nothing_done(root)
        raise disk_full(root, None, f"{source.name} (writing its manifest or moving files)") from exc
    except (DownloadError, KeyboardInterrupt):
        if discard_if_nothing_done(root):
            log.info("nothing of %s was installed: removed its download state from %s", source.name, root)
        raise
    _remove_if_empty(staging)
    return {"source": source.name, "root": str(root), "installed": [f.name for f in pending], "skipped": skipped}


def _check_space(root: Path, staging: Path, pending: list[RemoteFile]) -> None:
    """Before any byte: the rest of every download whose size is published, plus as much again for
    unpacking (archives unpack to at least their size)."""
    needed = 0
    for remote in pending:
        if remote.expected.size is None:
            continue  # checked per file when the server announces the size
        part = staging / f"{remote.name}.part"
        done = staging / remote.name
        have = done.stat().st_size if done.exists() else part.stat().st_size if part.exists() else 0
        needed += remote.expected.size - have + (remote.expected.size if remote.unpack != "none" else 0)
    if needed:
        check_free_space(root, needed, f"{len(pending)} file(s) and their unpacking ({human_size(needed)})")


def _install_one(source: Source, remote: RemoteFile, root: Path, staging: Path, manifest: dict[str, Any],
                 settings: InstallSettings) -> None:
    record = manifest["files"].setdefault(remote.name, {})
    record.update({"url": remote.url, "target": remote.target, "unpack": remote.unpack, "source": source.name,
                   "expected": remote.expected.as_record(), "status": "downloading"})
    record.pop("installed", None)
    write_manifest(root, manifest)

    archive = staging / remote.name
    if not archive.exists():
        log.info("downloading %s from %s (%s)", remote.name, remote.url, remote.expected.describe())
        part = fetch(remote, staging / f"{remote.name}.part", settings.fetch)
        os.replace(part, archive)
    log.info("checking %s against %s", remote.name, remote.expected.describe())
    record["verified"] = verify_download(archive, remote, settings.fetch.progress_every_s)
    record["downloaded"] = now()
    write_manifest(root, manifest)

    built = unpack(archive, remote, staging, settings.fetch.progress_every_s)
    source.check_unpacked(built, remote)
    target = install_target(built, root, remote.target, staging)
    if remote.unpack != "none":
        if settings.keep_archives:
            log.info("kept the archive %s", archive)
        else:
            archive.unlink()
        _remove_if_empty(built.parent if built.parent != staging else None)
    record.update({"status": INSTALLED, "installed": now()})
    write_manifest(root, manifest)
    log.info("%s -> %s", remote.name, target)


def _remove_if_empty(folder: Path | None) -> None:
    if folder is None:
        return
    try:
        folder.rmdir()
    except OSError:
        pass
