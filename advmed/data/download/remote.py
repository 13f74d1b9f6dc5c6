"""A published file: where it is, what it must hash to, and what it becomes in the dataset folder.

:class:`RemoteFile` is what a source module declares per file; :class:`Expected` holds the values a
download is checked against before it is unpacked (md5 and/or sha256 and/or size in bytes) and says
where they come from. :func:`apply_options` applies the per-source config (``base_url``: a mirror or
a local test server; ``checksums``: expectations that replace the published ones) to a source's files.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from advmed.data.download.errors import DownloadError

UNPACK_KINDS = ("zip", "tar", "gzip", "none")  # none: the download is the dataset file itself
_HEX = {"md5": 32, "sha256": 64}


@dataclass(frozen=True)
class Expected:
    """What a downloaded file must match: any of ``md5``, ``sha256`` (hex) and ``size`` (bytes).

    ``origin`` says who published the values (a record page, a library's table, a config override):
    it is printed in a mismatch message and written to the manifest.
    """

    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    origin: str = ""

    def __post_init__(self) -> None:
        for algorithm, length in _HEX.items():
            value = getattr(self, algorithm)
            if value is not None and not re.fullmatch(f"[0-9a-f]{{{length}}}", value):
                raise DownloadError(f"{algorithm} {value!r} is not {length} lowercase hex digits ({self.origin})")
        if self.md5 is None and self.sha256 is None and self.size is None:
            raise DownloadError(
                f"no md5, sha256 or size to check the file against ({self.origin}); a download is always "
                "verified: give at least one, e.g. 'md5:<hex>' or 'size:<bytes>'"
            )
        if self.size is not None and self.size < 0:
            raise DownloadError(f"size {self.size} must be a number of bytes >= 0 ({self.origin})")

    @property
    def has_checksum(self) -> bool:
        return self.md5 is not None or self.sha256 is not None

    def describe(self) -> str:
        """``md5 6fd7..., 11,690,284,003 bytes`` (``no published checksum`` when only a size is known)."""
        parts = [f"{name} {value}" for name in ("md5", "sha256") if (value := getattr(self, name))]
        if not parts:
            parts.append("no published checksum")
        if self.size is not None:
            parts.append(f"{self.size:,} bytes")
        return ", ".join(parts)

    def as_record(self) -> dict[str, Any]:
        return {"md5": self.md5, "sha256": self.sha256, "size": self.size, "origin": self.origin}


@dataclass(frozen=True)
class RemoteFile:
    """One published file of a source.

    Args:
        name: the file name as published (also its name while it downloads).
        url: where to fetch it.
        expected: what it must match before it is unpacked.
        unpack: ``zip`` / ``tar`` (a folder: the archive's single top folder, or its whole content),
            ``gzip`` (one file) or ``none`` (the download is the dataset file).
        target: what it becomes, relative to the dataset folder: a folder for zip / tar, a file otherwise.
        groups: further names that select it in ``files=[...]`` (e.g. a split), besides ``name`` and ``target``.
    """

    name: str
    url: str
    expected: Expected
    unpack: str
    target: str
    groups: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.unpack not in UNPACK_KINDS:
            raise ValueError(f"unpack={self.unpack!r}: use one of {UNPACK_KINDS}")

    @property
    def selectors(self) -> tuple[str, ...]:
        """The names ``files=[...]`` may use for this file."""
        return (self.name, self.target, *self.groups)

    def at_base_url(self, base_url: str) -> RemoteFile:
        """The same file fetched from ``<base_url>/<name>`` (a mirror, or a local server in tests)."""
        return replace(self, url=f"{base_url.rstrip('/')}/{urllib.parse.quote(self.name)}")


def parse_expected(value: Any, origin: str) -> Expected:
    """An :class:`Expected` from config: ``"md5:<hex>"``, ``"sha256:<hex>"``, ``"size:<bytes>"``, a list
    of those, or a mapping ``{md5: ..., sha256: ..., size: ...}``."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, Sequence) and value and all(isinstance(v, str) and ":" in v for v in value):
        items = [tuple(v.split(":", 1)) for v in value]
    else:
        raise DownloadError(
            f"{origin}: {value!r} is not a checksum; write 'md5:<hex>', 'sha256:<hex>', 'size:<bytes>' "
            "or a mapping {md5: <hex>, size: <bytes>}"
        )
    fields: dict[str, Any] = {}
    for key, raw in items:
        key = key.strip().lower()
        if key not in ("md5", "sha256", "size"):
            raise DownloadError(f"{origin}: unknown checksum kind {key!r}; use md5, sha256 or size")
        try:
            fields[key] = int(raw) if key == "size" else str(raw).strip().lower()
        except (TypeError, ValueError) as exc:
            raise DownloadError(f"{origin}: size {raw!r} is not a whole number of bytes") from exc
    return Expected(origin=origin, **fields)


def apply_options(files: Sequence[RemoteFile], options: Mapping[str, Any] | None, family: str) -> list[RemoteFile]:
    """``files`` with the config of their source applied: ``base_url`` moves every URL, ``checksums``
    replaces the expectations of the files it names (an unknown name is an error listing the files)."""
    options = options or {}
    base_url = options.get("base_url")
    checksums = options.get("checksums") or {}
    names = [f.name for f in files]
    unknown = sorted(set(checksums) - set(names))
    if unknown:
        raise DownloadError(
            f"sources.{family}.checksums names {unknown}, which {family} does not publish; its files are {names}"
        )
    out = []
    for remote in files:
        if base_url:
            remote = remote.at_base_url(str(base_url))
        if remote.name in checksums:
            origin = f"config override sources.{family}.checksums"
            remote = replace(remote, expected=parse_expected(checksums[remote.name], origin))
        out.append(remote)
    return out


def select(files: Sequence[RemoteFile], wanted: Sequence[str] | None, family: str) -> list[RemoteFile]:
    """The files named in ``wanted`` (by file name, target or group; None: all), in published order."""
    if not wanted:
        return list(files)
    wanted = [str(w) for w in wanted]
    known = {s for f in files for s in f.selectors}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise DownloadError(
            f"files={unknown} are not files of {family}; choose among {sorted(known)} (or leave files unset)"
        )
    return [f for f in files if set(f.selectors) & set(wanted)]
