"""The known sources, and source names (``medmnist:pathmnist@64``) turned into :class:`Source` objects.

A name is ``<family>`` or ``<family>:<argument>``; the family picks the module, the argument (a
MedMNIST flag and size, an MSD task) is the module's to parse. Adding a source is a module under
``sources/`` and a line here (and its ``sources.<family>`` block in ``conf/download.yaml``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from advmed.data.download.errors import UnknownSource
from advmed.data.download.source import Source
from advmed.data.download.sources.btcv import BTCV
from advmed.data.download.sources.kaggle_hcd import KaggleHCD
from advmed.data.download.sources.medmnist import FLAGS, MedMNIST
from advmed.data.download.sources.msd import MSD, TASKS
from advmed.data.download.sources.nct_crc_he import NCTCRCHE
from advmed.data.download.sources.pcam import PCam

SOURCES: dict[str, type[Source]] = {cls.family: cls for cls in (NCTCRCHE, PCam, MedMNIST, MSD, KaggleHCD, BTCV)}
ARGUMENT_CHOICES = {"medmnist": f"flags: {', '.join(FLAGS)}; sizes 28 (default), 64, 128, 224",
                    "msd": f"tasks: {', '.join(TASKS)}"}


def source_names() -> list[str]:
    """``nct_crc_he``, ..., ``medmnist:<flag>[@size]``, ...: how each source is named."""
    return [f"{family}:{cls.syntax}" if cls.syntax else family for family, cls in SOURCES.items()]


def describe_sources() -> str:
    """One line per source (and its argument's choices), for ``list`` and unknown-source errors."""
    lines = []
    for name, (family, cls) in zip(source_names(), SOURCES.items()):
        lines.append(f"  {name:<28} {cls.title}")
        if family in ARGUMENT_CHOICES:
            lines.append(f"  {'':<28}   {ARGUMENT_CHOICES[family]}")
    return "\n".join(lines)


def build_source(name: str | None, options: Mapping[str, Any] | None = None) -> Source:
    """The :class:`Source` named ``name``, configured by ``options[<family>]`` (``sources`` of the config)."""
    if not name or not str(name).strip():
        raise UnknownSource(f"no source given: python -m advmed.data.download <source> root=<folder>, with <source> "
                            f"one of:\n{describe_sources()}")
    family, colon, argument = str(name).strip().partition(":")
    cls = SOURCES.get(family.strip().lower())
    if cls is None:
        raise UnknownSource(f"unknown source {name!r}; the known sources are:\n{describe_sources()}")
    if colon and not cls.syntax:
        raise UnknownSource(f"{cls.family} takes no argument (got {name!r}): use source={cls.family}")
    options = options or {}
    return cls(argument.strip() if colon else None, options.get(cls.family))
