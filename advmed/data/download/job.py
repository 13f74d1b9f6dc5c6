"""The download job: ``download``, ``verify`` or ``list``, from a composed ``conf/download.yaml``.

``download`` fills ``root`` from the source's published files (:mod:`.install`), or, for a source
behind an account, prints what to fetch and where to put it; ``verify`` checks a folder, filled by
this tool or by hand, and fails listing the problems; ``list`` prints the sources. Each ends by
printing the data config overrides that read the folder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from advmed.data.download.errors import DownloadError, VerificationFailed
from advmed.data.download.fetch import FetchSettings
from advmed.data.download.install import InstallSettings, install
from advmed.data.download.manifest import INSTALLED, MANIFEST_FILE, read_manifest
from advmed.data.download.registry import build_source, describe_sources, source_names
from advmed.data.download.source import Check, Source

log = logging.getLogger(__name__)

ACTIONS = ("download", "verify", "list")


def download(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.action`` for ``cfg.source`` in ``cfg.root``; returns a summary (recorded in status.json).
    Every failure the user can act on is a :class:`~advmed.data.download.errors.DownloadError`."""
    action = str(cfg.get("action") or "download").strip().lower()
    if action not in ACTIONS:
        raise DownloadError(f"action={action!r}: use one of {', '.join(ACTIONS)} "
                            "(python -m advmed.data.download [verify|list] <source> root=<folder>)")
    if action == "list":
        print(f"sources (python -m advmed.data.download <source> root=<folder>):\n{describe_sources()}")
        return {"action": "list", "sources": source_names()}
    options = OmegaConf.to_container(cfg.get("sources") or {}, resolve=True)
    source = build_source(cfg.get("source"), options if isinstance(options, Mapping) else {})
    root = _root(cfg.get("root"), source)
    files = list(cfg.get("files") or []) or None
    if action == "verify":
        return verify(source, root, files)
    if source.manual:
        return _explain(source, root, files)
    settings = InstallSettings(
        fetch=FetchSettings(retries=int(cfg.retries), retry_wait_s=float(cfg.retry_wait_s),
                            timeout_s=float(cfg.timeout_s), progress_every_s=float(cfg.progress_every_s)),
        files=files, force=bool(cfg.force), keep_archives=bool(cfg.keep_archives),
    )
    summary = install(source, root, settings)
    done = "installed " + ", ".join(summary["installed"]) if summary["installed"] else "already complete"
    print(f"{source.name} in {root}: {done} (manifest: {root / MANIFEST_FILE})\nuse it with: {source.usage(root)}")
    return {"action": "download", **summary}


def verify(source: Source, root: Path, files: list[str] | None = None) -> dict[str, Any]:
    """Check ``root`` for ``source`` and print the report; raises :class:`VerificationFailed` on a problem."""
    if not root.is_dir():
        raise VerificationFailed(f"{root} does not exist: nothing to verify for {source.name}. "
                                 + (source.instructions(root) if source.manual else
                                    f"Download it: python -m advmed.data.download {source.name} root={root}"))
    check = source.verify(root, files)
    _check_manifest(root, source, check)
    report = check.report(f"{source.name} in {root}")
    if not check.ok:
        raise VerificationFailed(report)
    print(f"{report}\nuse it with: {source.usage(root)}")
    return {"action": "verify", "source": source.name, "root": str(root), "ok": True, "checked": check.checked}


def _check_manifest(root: Path, source: Source, check: Check) -> None:
    try:
        manifest = read_manifest(root)
    except DownloadError as exc:
        check.notes.append(str(exc))
        return
    if manifest is None:
        check.notes.append(f"no {MANIFEST_FILE}: a folder filled by hand (fine)")
    elif manifest["source"] != source.family:
        check.problems.append(f"{root / MANIFEST_FILE} says the folder holds {manifest['source']}, not {source.family}")
    else:
        unfinished = [name for name, record in manifest.get("files", {}).items() if record.get("status") != INSTALLED]
        if unfinished:
            check.notes.append(f"unfinished download(s) {unfinished}: rerun "
                               f"`python -m advmed.data.download {source.name} root={root}` to complete them")


def _explain(source: Source, root: Path, files: list[str] | None) -> dict[str, Any]:
    """A source behind an account: confirm a filled folder, or print what to fetch and where."""
    if root.is_dir() and any(root.iterdir()):
        check = source.verify(root, files)
        report = check.report(f"{source.name} in {root}")
        if check.ok:
            print(f"{report}\nuse it with: {source.usage(root)}")
            return {"action": "download", "source": source.name, "root": str(root), "status": "in place"}
        print(f"{report}\n")  # what is there already, and what is wrong with it
    print(source.instructions(root))
    return {"action": "download", "source": source.name, "root": str(root), "status": "manual download needed"}


def _root(value: Any, source: Source) -> Path:
    if value is None or not str(value).strip():
        raise DownloadError(f"root=<folder> is required: the folder {source.name} goes to (or is in), "
                            f"e.g. python -m advmed.data.download {source.name} root=/data/{source.family}")
    return Path(str(value)).expanduser().resolve()
