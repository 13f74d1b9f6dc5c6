"""Send images, tables and configs to whichever Lightning loggers a run has.

Callbacks call these instead of a logger's own API, so swapping ``logger=csv`` for
``logger=wandb`` needs no code change (DESIGN contract 6). File-based loggers (CSV) keep
nothing extra: the PNG / markdown files in the run directory are the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger


def log_image(loggers: Sequence[Logger], key: str, path: str | Path) -> None:
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)])
        elif isinstance(logger, TensorBoardLogger):
            import numpy as np
            from PIL import Image

            logger.experiment.add_image(key, np.asarray(Image.open(path).convert("RGB")), dataformats="HWC")


def log_table(loggers: Sequence[Logger], key: str, columns: list[str], rows: list[list[Any]]) -> None:
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=columns, data=rows)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(key, markdown_table(columns, rows))


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    def fmt(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
