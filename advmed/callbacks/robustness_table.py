"""Log the clean-vs-attacked metrics of a test run as one table, to any logger."""

from __future__ import annotations

import lightning as L

from advmed.studies.robustness_report import robustness_rows
from advmed.utils.loggers import log_table


class RobustnessTableCallback(L.Callback):
    """At the end of testing, send ``metric | value`` rows (clean / adversarial accuracy, attack
    success rate, perturbation size) through :func:`advmed.utils.loggers.log_table`."""

    def __init__(self, key: str = "test/robustness") -> None:
        super().__init__()
        self.key = key

    def on_test_end(self, trainer, pl_module) -> None:
        rows = robustness_rows({k: float(v) for k, v in trainer.callback_metrics.items()})
        if rows and trainer.is_global_zero:
            log_table(trainer.loggers, self.key, ["metric", "value"], rows)
