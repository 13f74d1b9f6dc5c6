"""``<run dir>/checkpoints/last.ckpt``: the latest state of a run, for ``ckpt_path=last`` and SLURM requeues."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """Overwrite ``last.ckpt`` at the end of every ``every_n_epochs``-th training epoch (after its
    validation), and every ``every_n_train_steps`` steps when set (long epochs on a cluster).

    A callback of its own rather than ``ModelCheckpoint(save_last=True)`` on the best-checkpoint
    callback: Lightning 2.6 writes that ``last.ckpt`` only in epochs where the monitored metric
    improved, so a run killed after a few epochs without improvement would resume from far back.
    Saves go through the trainer's checkpoint IO (``AtomicCheckpointIO`` in conf/trainer), so a
    kill mid-save leaves the previous ``last.ckpt`` whole.
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, every_n_train_steps: int | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            save_on_train_epoch_end=True,
            enable_version_counter=False,  # always the same file: last.ckpt, never last-v1.ckpt
            auto_insert_metric_name=False,
        )
