"""What every dataset source provides: its files, a check of the folder it fills, and how to use it.

A source module (``advmed/data/download/sources/<name>.py``) subclasses :class:`Source`. Downloadable
sources list :class:`~advmed.data.download.remote.RemoteFile` objects; sources behind an account
(``manual = True``) instead say what to fetch and where to put it. Every source can verify a folder,
whether this tool or a person filled it, and reports in a :class:`Check`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from advmed.data.download.errors import DownloadError
from advmed.data.download.remote import RemoteFile


@dataclass
class Check:
    """The outcome of verifying a folder: what was checked, the problems found, and remarks."""

    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self, title: str) -> str:
        lines = [f"{title}: {'OK' if self.ok else f'{len(self.problems)} problem(s)'}"]
        lines += [f"  ok       {line}" for line in self.checked]
        lines += [f"  PROBLEM  {line}" for line in self.problems]
        lines += [f"  note     {line}" for line in self.notes]
        return "\n".join(lines)


class Source(ABC):
    """A dataset this tool can fetch (or explain how to fetch) and verify.

    Args:
        argument: what follows ``<family>:`` in the source name (``pathmnist@64``), or None.
        options: the source's config (``sources.<family>``: ``base_url``, ``checksums``, ``counts``, ...).
    """

    family: ClassVar[str]  # the registry name; also the manifest's ``source``
    title: ClassVar[str]  # one line for `list` and the manifest
    syntax: ClassVar[str] = ""  # the argument's form, e.g. "<flag>[@size]", for `list` and errors
    manual: ClassVar[bool] = False  # behind an account: `download` explains, `verify` checks

    def __init__(self, argument: str | None, options: Mapping[str, Any] | None) -> None:
        self.argument = argument
        self.options = dict(options or {})

    @property
    def name(self) -> str:
        """The full source name, as given on the command line."""
        return self.family if self.argument is None else f"{self.family}:{self.argument}"

    def remote_files(self) -> list[RemoteFile]:
        """The published files, with their checksums (none for a manual source)."""
        return []

    def check_unpacked(self, path: Path, remote: RemoteFile) -> None:
        """Raise :class:`~advmed.data.download.errors.UnpackError` when what ``remote`` unpacked to
        (``path``, not yet in place) is not the layout the data config reads. Default: no check."""
        return None

    @abstractmethod
    def verify(self, root: Path, selected: Sequence[str] | None = None) -> Check:
        """Check the dataset folder ``root`` (restricted to the files named in ``selected``)."""

    @abstractmethod
    def usage(self, root: Path) -> str:
        """How to point the data config at the dataset in ``root`` (a command-line fragment)."""

    def instructions(self, root: Path) -> str:
        """For a manual source: exactly what to fetch and where to put it."""
        raise NotImplementedError(f"{self.family} is downloaded by this tool")

    def counts(self, published: Mapping[str, Any]) -> dict[str, Any]:
        """Expected file / tile counts: ``sources.<family>.counts`` entries replace the published ones."""
        override = self.options.get("counts") or {}
        unknown = sorted(set(override) - set(published))
        if unknown:
            raise DownloadError(f"sources.{self.family}.counts names {unknown}; its counts are {sorted(published)}")
        return {**published, **{str(k): v for k, v in override.items()}}
