"""The logger-agnostic helpers route images and tables to W&B (offline) and leave CSV alone."""

from lightning.pytorch.loggers import CSVLogger, WandbLogger

from advmed.callbacks import RobustnessTableCallback
from advmed.utils.loggers import log_table, markdown_table


class _Trainer:
    is_global_zero = True

    def __init__(self, loggers, metrics):
        self.loggers, self.callback_metrics = loggers, metrics


def test_markdown_table_formats_floats():
    table = markdown_table(["metric", "value"], [["clean accuracy", 0.5]])
    assert table.splitlines()[2] == "| clean accuracy | 0.5000 |"


def test_robustness_table_reaches_wandb_and_not_csv(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(WandbLogger, "log_table", lambda self, key, columns, data: logged.append((key, columns, data)))
    wandb_logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    csv_logger = CSVLogger(str(tmp_path))
    trainer = _Trainer([csv_logger, wandb_logger], {"test/acc": 0.9, "test/adv_acc": 0.2, "val/acc": 1.0})
    RobustnessTableCallback().on_test_end(trainer, None)
    assert logged == [("test/robustness", ["metric", "value"], [["clean accuracy", 0.9], ["adversarial accuracy", 0.2]])]
    log_table([csv_logger], "t", ["a"], [[1]])  # CSV keeps files only: nothing to call, nothing raised
    assert not (tmp_path / "lightning_logs").exists()
