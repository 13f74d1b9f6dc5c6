"""A callback the DDP tests add on the command line (``+callbacks.probe._target_=...``): every rank
saves its final weights and buffers, so the test can compare the ranks' copies."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class WeightsPerRank(L.Callback):
    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"world_size": trainer.world_size, "state": state},
                   self.output_dir / f"weights_rank{trainer.global_rank}.pt")
