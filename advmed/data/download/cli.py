"""The command line of ``python -m advmed.data.download``: positional words, and errors without tracebacks.

Hydra reads ``key=value`` overrides only, but a download reads best as ``download <source>``, so
the leading bare words become overrides before Hydra parses: ``verify`` / ``list`` / ``download``
-> ``action=...``, then the source name -> ``source=...``::

    python -m advmed.data.download medmnist:pathmnist@64 root=/data/medmnist
        == python -m advmed.data.download source=medmnist:pathmnist@64 root=/data/medmnist
    python -m advmed.data.download verify btcv root=/data/btcv
        == python -m advmed.data.download action=verify source=btcv root=/data/btcv

A :class:`~advmed.data.download.errors.DownloadError` is a message for the user, not a bug: it is
logged alone (Hydra's console and the run's log) and the process exits with status 1.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from advmed.data.download.errors import DownloadError
from advmed.data.download.job import ACTIONS

log = logging.getLogger("advmed.data.download")
T = TypeVar("T")


def _bare(word: str) -> bool:
    """A positional word: no ``=`` (an override), no leading ``-`` (a Hydra flag), no ``+``/``~`` prefix."""
    return "=" not in word and not word.startswith(("-", "+", "~"))


def rewrite_argv(args: Sequence[str]) -> list[str]:
    """``[verify, btcv, root=/x]`` -> ``[action=verify, source=btcv, root=/x]`` (only leading bare words)."""
    out = list(args)
    i = 0
    if i < len(out) and _bare(out[i]) and out[i].lower() in ACTIONS:
        out[i] = f"action={out[i].lower()}"
        i += 1
    if i < len(out) and _bare(out[i]):
        out[i] = f"source={out[i]}"
    return out


def clean_errors(main: Callable[..., T]) -> Callable[..., T]:
    """Decorate the task function: a :class:`DownloadError` is logged as its message and exits with 1."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> T:
        try:
            return main(*args, **kwargs)
        except DownloadError as exc:
            log.error("%s", exc)
            raise SystemExit(1) from exc

    return wrapped
