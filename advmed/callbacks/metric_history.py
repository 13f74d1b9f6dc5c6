"""Write the epoch-level metrics of a fit to ``history.csv``, whatever logger is configured, so
that learning curves (Pervin Table 1: IoU over epochs) can be read back from the run directory."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import lightning as L

from advmed.utils.files import write_text


class MetricHistoryCallback(L.Callback):
    """After every training epoch (validation included), append the ``train/*`` and ``val/*``
    values of ``trainer.callback_metrics`` as one row of ``<output_dir>/history.csv``.

    ``epoch`` is Lightning's 0-based epoch index (0 = after the first epoch, the paper's "0th").
    The file is rewritten atomically each epoch (rank 0 only), so a killed run leaves a complete
    file of the epochs it finished; the rows travel in the checkpoint, so a fit resumed from it
    (``ckpt_path=...``) continues the same history.
    """

    def __init__(self, output_dir: str, file_name: str = "history.csv", prefixes: tuple[str, ...] = ("train/", "val/")) -> None:
        super().__init__()
        self.path = Path(output_dir) / file_name
        self.prefixes = tuple(prefixes)
        self.rows: list[dict[str, float]] = []

    def state_dict(self) -> dict[str, list[dict[str, float]]]:
        return {"rows": [dict(row) for row in self.rows]}  # in checkpoints: a resumed fit keeps its history

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = [dict(row) for row in state_dict.get("rows", [])]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": float(trainer.current_epoch), "step": float(trainer.global_step)}
        for name, value in trainer.callback_metrics.items():
            if name.startswith(self.prefixes) and value.numel() == 1:
                row[name] = float(value)
        self.rows.append(row)
        if trainer.is_global_zero:
            self._write()

    def _write(self) -> None:
        columns = ["epoch", "step", *sorted({k for row in self.rows for k in row} - {"epoch", "step"})]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _format(k, row.get(k)) for k in columns})
        write_text(self.path, buffer.getvalue())


def _format(name: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(int(value)) if name in ("epoch", "step") else f"{value:.6g}"
