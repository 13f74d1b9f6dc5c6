"""Progress of long loops: a bar in a terminal, periodic plain lines in a log (DESIGN contract 10).

A job decides once how to show progress (:func:`resolve_mode`): a ``mode`` from config wins;
``auto`` defers to the environment variable ``ADVMED_PROGRESS`` (``bar | lines | off | auto``),
and otherwise means a bar when the stream the bar would draw on is a terminal, plain lines when it
is not: a SLURM batch job (its output is a file), a pipe, ``nohup``, a CI log, ``TERM=dumb``.

:class:`ProgressReporter` is the reporter of loops outside Lightning (the PGD study, the dataset
writers): a tqdm bar, or at most one line every ``every_s`` seconds such as

    pgd study: 96/256 images (37.5 %), 12.3 images/s, ~13s left, batch=3/8, eps=0.06

Lines go through :mod:`logging` (logger ``advmed.progress`` unless the caller names its own), so
under Hydra they reach the console and the run's ``<task>.log`` with a time stamp; where logging
is not configured at all they are printed to stderr, so they are never lost. The Lightning loops
use the same pieces in :mod:`advmed.callbacks.progress`.

Hand-written because tqdm, the bar, has no log mode: on a file or a pipe it still writes one
carriage-return frame per refresh (a ``make demo`` log was mostly such frames), and neither tqdm
nor Lightning's bars print throttled plain lines with a rate and metrics.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

ENV_VAR = "ADVMED_PROGRESS"
MODES = ("auto", "bar", "lines", "off")
LOGGER_NAME = "advmed.progress"
DEFAULT_EVERY_S = 30.0

Clock = Callable[[], float]


# --------------------------------------------------------------------------- the decision


def _check_mode(value: Any, source: str) -> str:
    mode = str(value).strip().lower()
    if mode not in MODES:
        raise ValueError(f"{source}={value!r} is not a progress mode: use one of {', '.join(MODES)} "
                         "(bar: a terminal bar; lines: plain periodic lines for logs; off: nothing)")
    return mode


def is_interactive(stream: IO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` (stderr by default) is a terminal a bar can redraw: not a file, not a
    pipe (a SLURM batch job's output is a file), ``TERM`` is not ``dumb``, and it is not a
    terminal of zero columns (a pseudo-terminal nobody sized, where a bar draws as nothing)."""
    stream = sys.stderr if stream is None else stream
    environ = os.environ if environ is None else environ
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        tty = False
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):  # no file descriptor (a wrapped stream): trust isatty
        columns = None
    return tty and environ.get("TERM", "") != "dumb" and columns != 0


def resolve_mode(mode: str = "auto", stream: IO | None = None, environ: Mapping[str, str] | None = None,
                 source: str = "progress mode") -> str:
    """``bar``, ``lines`` or ``off`` for a loop drawing on ``stream`` (stderr by default).

    ``mode`` other than ``auto`` is returned as is; with ``auto``, a non-empty ``ADVMED_PROGRESS``
    other than ``auto`` decides, and otherwise :func:`is_interactive`. A bad value is a ValueError
    naming ``source`` (or the environment variable) and the valid modes.
    """
    mode = _check_mode(mode, source)
    if mode != "auto":
        return mode
    environ = os.environ if environ is None else environ
    from_env = environ.get(ENV_VAR, "").strip()
    if from_env and _check_mode(from_env, f"environment variable {ENV_VAR}") != "auto":
        return from_env.lower()
    return "bar" if is_interactive(stream, environ) else "lines"


def check_every_s(every_s: Any, source: str = "every_s") -> float:
    """``every_s`` as a float >= 0 (0: a line at every update), or a ValueError naming ``source``."""
    try:
        value = float(every_s)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(every_s, bool) or not value >= 0 or math.isinf(value):
        raise ValueError(f"{source}={every_s!r} must be a number of seconds >= 0 between progress lines, e.g. 30")
    return value


def process_rank() -> int:
    """The global rank of this process as Lightning sets it for DDP and reads it under SLURM (0 alone)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


# --------------------------------------------------------------------------- line pieces


class Throttle:
    """Says yes at most once every ``every_s`` seconds of ``clock`` (and whenever forced)."""

    def __init__(self, every_s: float, clock: Clock = time.monotonic) -> None:
        self.every_s = check_every_s(every_s)
        self.clock = clock
        self.last = clock()

    def due(self, force: bool = False) -> bool:
        now = self.clock()
        if force or now - self.last >= self.every_s:
            self.last = now
            return True
        return False


def format_number(value: float) -> str:
    """Four significant digits, as metrics and rates read best in a log line."""
    return f"{value:.4g}"


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_rate(count: float, seconds: float, unit: str) -> str:
    """``123.4 images/s`` (``? images/s`` before any time has passed)."""
    return f"{count / seconds:.1f} {unit}/s" if seconds > 0 else f"? {unit}/s"


def scalar(value: Any) -> float | None:
    """A plain number of a metric value (python number, 0-d or one-element tensor); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    numel = getattr(value, "numel", None)
    if callable(numel) and numel() == 1:
        return float(value.item())
    return None


def format_metrics(metrics: Mapping[str, Any], strip_prefix: str = "") -> str:
    """``loss=0.5312 acc=0.8125``: the scalar entries of ``metrics``, ``strip_prefix`` removed
    from their names (``train/loss`` -> ``loss`` on a train line); other entries are left out."""
    parts = []
    for key, value in metrics.items():
        number = scalar(value)
        if number is not None:
            name = key[len(strip_prefix):] if strip_prefix and key.startswith(strip_prefix) else key
            parts.append(f"{name}={format_number(number)}")
    return " ".join(parts)


def emit(line: str, logger: logging.Logger | None = None) -> None:
    """Write one progress line: to ``logger`` (``advmed.progress`` by default) at INFO when logging
    is configured (Hydra's console and run log), else to stderr."""
    if logger is None:
        logger = logging.getLogger(LOGGER_NAME)
        if logger.level == logging.NOTSET:  # shown even where the root logger only passes warnings
            logger.setLevel(logging.INFO)
    if logger.hasHandlers():
        logger.info(line)
    else:
        print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- loops outside Lightning


class ProgressReporter:
    """Progress of a loop over ``total`` items: a tqdm bar, plain lines or nothing (see the module
    docstring). Use as a context manager, or call :meth:`close` at the end.

    Args:
        stage: what runs, at the start of every line (``pgd study``); None: no prefix (a caller
            whose own logger names the stage).
        total: items to do in all (None: unknown, lines then give no percentage or time left).
        unit: what an item is, in lines and on the bar (``images``).
        done: items already done before this run (a resumed writer): counted in ``done / total``,
            not in the rate.
        every_s: seconds between lines (0: a line at every update).
        mode: ``auto | bar | lines | off`` (:func:`resolve_mode`).
        logger: where lines go (:func:`emit`).
        stream: where the bar draws (stderr).
        clock: seconds, monotonic (injected by tests).
        rank: this process's rank; any but 0 reports nothing (one report per job, not per DDP
            process). None: the rank Lightning sees (``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``).
    """

    def __init__(self, stage: str | None, total: float | None, *, unit: str = "images", done: float = 0,
                 every_s: float = DEFAULT_EVERY_S, mode: str = "auto", logger: logging.Logger | None = None,
                 stream: IO | None = None, clock: Clock = time.monotonic, rank: int | None = None) -> None:
        self.stage, self.total, self.unit = stage, total, unit
        self.done, self.new = done, 0.0
        self.mode = resolve_mode(mode, stream)
        if (process_rank() if rank is None else rank) != 0:
            self.mode = "off"
        self.logger, self.clock = logger, clock
        self.throttle = Throttle(every_s, clock)
        self.start = clock()
        self.info: dict[str, Any] = {}
        self._unreported = False
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=done, desc=stage, unit=unit, file=stream or sys.stderr,
                             dynamic_ncols=True)

    def update(self, n: float = 1, force: bool = False, **info: Any) -> None:
        """``n`` more items done; ``info`` (``eps=0.06``, ``batch="3/8"``) is shown with them until
        replaced. A line is written when ``every_s`` has passed since the last one, or when forced."""
        self.done += n
        self.new += n
        self.info.update(info)
        self._unreported = True
        if self._bar is not None:
            if info:
                self._bar.set_postfix({k: _short(v) for k, v in self.info.items()}, refresh=False)
            self._bar.update(int(_count(self.done)) - self._bar.n)  # whole items: "3/10", not "2.6666666/10"
        elif self.mode == "lines" and self.throttle.due(force):
            emit(self.line(), self.logger)
            self._unreported = False

    def line(self) -> str:
        """``[stage: ]done/total unit (pct %), rate, ~time left[, key=value ...]``."""
        elapsed = self.clock() - self.start
        count = f"{_count(self.done)}/{_count(self.total)} {self.unit}" if self.total is not None else \
            f"{_count(self.done)} {self.unit}"
        parts = [count]
        if self.total:
            parts[0] += f" ({100.0 * self.done / self.total:.1f} %)"
        parts.append(format_rate(self.new, elapsed, self.unit))
        if self.total is not None:
            left = (self.total - self.done) * elapsed / self.new if self.new > 0 else math.nan
            parts.append(f"~{format_duration(left)} left")
        parts += [f"{key}={_short(value)}" for key, value in self.info.items()]
        text = ", ".join(parts)
        return f"{self.stage}: {text}" if self.stage else text

    def close(self) -> None:
        """End the bar, or write a last line when updates came after the last one."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self._unreported:
            emit(self.line(), self.logger)
            self._unreported = False

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _count(value: float | None) -> str:
    # Fractions of a batch add up to whole items only up to rounding: 31.999999 is 32.
    return "?" if value is None else str(math.floor(value + 1e-6))


def _short(value: Any) -> str:
    return format_number(value) if isinstance(value, float) else str(value)
