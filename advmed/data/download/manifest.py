"""The manifest of a downloaded dataset folder: what is there, where it came from, how it was checked.

``<root>/advmed-download.json`` records the source, and per published file its URL, the expected
checksum and who published it, the size / md5 / sha256 actually verified, what it became in the
folder, when it was downloaded and installed, and advmed's version and git commit (DESIGN contract 9).
It is written (atomically) before the first byte is fetched, so a folder that is being filled is
recognised by the next run, which resumes it; a folder holding another source's manifest, or files
and no manifest, is refused unless ``force=true``. Nothing is ever deleted from such a folder except
what this source replaces.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from advmed.data.download.errors import DownloadError, FolderInUse
from advmed.data.writers import code_version
from advmed.utils.files import write_json

log = logging.getLogger(__name__)

MANIFEST_FILE = "advmed-download.json"
STAGING_DIR = ".advmed-download"  # downloads in progress, archives, unpacking: never read by a DataModule
FORMAT = "advmed.download/1"
INSTALLED = "installed"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of ``root`` (None when it has none); an unreadable one is a :class:`FolderInUse`."""
    path = root / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FolderInUse(f"{path} is not a readable manifest ({exc}); move it away or pass force=true") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT or "source" not in record:
        raise FolderInUse(f"{path} is not a manifest written by advmed.data.download; move it away or pass force=true")
    return record


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = now()
    write_json(root / MANIFEST_FILE, manifest)


def new_manifest(family: str, title: str, created_root: bool) -> dict[str, Any]:
    return {"format": FORMAT, "source": family, "title": title, "created": now(), "created_root": created_root,
            **code_version(), "files": {}}


def _contents(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name not in (MANIFEST_FILE, STAGING_DIR))


def claim_folder(root: Path, family: str, title: str, force: bool) -> dict[str, Any]:
    """The manifest of ``root`` to extend (same source: a resume or another file of it) or a new one;
    refuses a folder holding another dataset unless ``force``. Creates ``root`` when missing."""
    if root.exists() and not root.is_dir():
        raise DownloadError(f"root={root} is a file, not a folder; choose a folder for the dataset")
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        manifest = read_manifest(root)
    except FolderInUse:
        if not force:
            raise
        manifest = {"source": "unknown (unreadable manifest)"}
    if manifest is not None and manifest["source"] == family:
        return manifest
    if not force:
        if manifest is not None:
            raise FolderInUse(
                f"{root} holds the {manifest['source']} dataset ({root / MANIFEST_FILE}), not {family}: choose "
                f"another root=... for {family}, or pass force=true to write {family} into it as well (nothing "
                f"of {manifest['source']} is deleted except files of the same name)"
            )
        contents = _contents(root)
        if contents:
            shown = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
            raise FolderInUse(
                f"{root} is not empty ({shown}) and holds no {MANIFEST_FILE} of an advmed download: choose a new "
                "or empty root=..., check it with `python -m advmed.data.download verify <source> root=...` if "
                "you filled it by hand, or pass force=true to download into it anyway (nothing is deleted "
                "except files of the same name)"
            )
    elif manifest is not None or _contents(root):
        if manifest is not None:  # keep the other dataset's record beside the new one
            previous = root / MANIFEST_FILE
            previous.replace(root / f"{previous.stem}.previous{previous.suffix}")
        log.warning("force=true: writing %s into %s, which holds other files (kept)", family, root)
    return new_manifest(family, title, created_root=created)


def installed(manifest: dict[str, Any], root: Path, name: str, target: str) -> bool:
    """Whether file ``name`` is recorded as installed and its target is still there."""
    record = manifest.get("files", {}).get(name, {})
    return record.get("status") == INSTALLED and (root / target).exists()


def discard_if_nothing_done(root: Path) -> bool:
    """After a failure: delete the manifest and staging folder when no file is installed and no partial
    download is worth resuming, and ``root`` itself when this tool created it and it is then empty.
    Returns whether the folder's download state was removed."""
    staging = root / STAGING_DIR
    manifest = read_manifest(root) if (root / MANIFEST_FILE).is_file() else None
    if manifest is None:
        return False
    if any(r.get("status") == INSTALLED for r in manifest.get("files", {}).values()):
        return False
    if staging.is_dir() and any(p.is_file() and p.stat().st_size > 0 for p in staging.iterdir()):
        return False  # a .part file to resume from
    shutil.rmtree(staging, ignore_errors=True)
    (root / MANIFEST_FILE).unlink(missing_ok=True)
    if manifest.get("created_root"):
        try:
            root.rmdir()  # only when empty: never deletes anything else
        except OSError:
            pass
    return True
