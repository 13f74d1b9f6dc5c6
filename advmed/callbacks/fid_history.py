"""FID over training: ``<run dir>/fid.csv`` with a first row before any training, the judge of a
GAN run (Lockshin et al. 2022, eq. 2), whatever logger is configured."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch

from advmed.metrics.generator_fid import (
    add_generated_images,
    add_real_images,
    balanced_labels,
    reference_loader,
)
from advmed.utils.files import write_json, write_text


class FidHistoryCallback(L.Callback):
    """FID of ``num_images`` generated images against the module's reference split, once at the start
    of the fit (the first row, step 0 for a fresh run) and after every ``every_n_epochs``-th training
    epoch, written to ``<output_dir>/fid.csv`` (columns ``step,fid``) and logged as ``train/fid``.

    The module provides the sampling and the metric: a :class:`~advmed.models.stylegan2.StyleGAN2Module`
    (``sample``, ``build_fid``, ``hparams.fid``: the features and the reference split). The generated
    images are balanced over the classes and drawn from a generator seeded with ``seed`` at every
    evaluation, so successive rows differ only by the weights; the real statistics (at most
    ``num_real`` images of the reference split, None: all) are computed once per fit. Only the pooled
    FID is computed (per-class values of a few hundred images would be mostly bias).

    ``step`` is the module's ``generator_steps``: generator updates, the paper's "iterations" (280k
    at batch 32), unlike ``trainer.global_step``, which also counts critic and regulariser steps.
    The file is rewritten atomically after each row (rank 0 only); the rows travel in the
    checkpoint, so a fit resumed from it continues the file (without a second first row).
    ``<output_dir>/fid.json`` names the feature extractor and the image counts (FIDs compare only at
    equal settings) and, after a test, the module's test FID per class.

    Args:
        output_dir: the run directory.
        every_n_epochs: epochs between rows (>= 1).
        num_images: generated images per row (>= 2).
        num_real: cap on the reference images (>= 2); None: the whole split.
        seed: seed of the generated latents.
        batch_size: images per generator / extractor call.
        file_name: the CSV's name.
    """

    def __init__(self, output_dir: str, every_n_epochs: int = 1, num_images: int = 1000, num_real: int | None = None,
                 seed: int = 0, batch_size: int = 64, file_name: str = "fid.csv") -> None:
        super().__init__()
        for name, value, low in (("every_n_epochs", every_n_epochs, 1), ("num_images", num_images, 2),
                                 ("batch_size", batch_size, 1), ("num_real", 2 if num_real is None else num_real, 2)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"callbacks.fid_history.{name}={value} must be an integer >= {low}")
        self.path = Path(output_dir) / file_name
        self.settings_path = self.path.with_suffix(".json")
        self.every_n_epochs, self.num_images, self.num_real = every_n_epochs, num_images, num_real
        self.seed, self.batch_size = seed, batch_size
        self.rows: list[tuple[int, float]] = []
        self.settings: dict[str, Any] = {}
        self._fid = None

    def state_dict(self) -> dict[str, list[list[float]]]:
        return {"rows": [[step, fid] for step, fid in self.rows]}  # in checkpoints: a resumed fit keeps its rows

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = [(int(step), float(fid)) for step, fid in state_dict.get("rows", [])]

    @property
    def metrics(self) -> dict[str, float]:
        """The first and last FID, merged into the run's metrics.json by ``advmed.train``."""
        return {"train/fid_first": self.rows[0][1], "train/fid_last": self.rows[-1][1]} if self.rows else {}

    # ------------------------------------------------------------------ hooks

    def on_fit_start(self, trainer, pl_module) -> None:
        for needed in ("sample", "build_fid", "generator_steps"):
            if not hasattr(pl_module, needed):
                raise ValueError(f"FidHistoryCallback needs a class-conditional generator module (StyleGAN2Module); "
                                 f"{type(pl_module).__name__} has no {needed}: drop callbacks.fid_history")
        split = pl_module.hparams.fid["reference_split"]
        self._fid = pl_module.build_fid(["all"], reset_real_features=False)  # one pooled class: the overall FID
        loader = reference_loader(trainer.datamodule, split)
        real = add_real_images(self._fid, loader, self.num_real, pooled=True, rank=trainer.global_rank,
                               world_size=trainer.world_size)
        self.settings = {"feature_extractor": self._fid.feature_extractor_name, "reference_split": split,
                         "num_real": int(len(real)) * trainer.world_size, "num_generated": self.num_images,
                         "seed": self.seed, "step": "generator steps (generator_steps)",
                         "truncation_psi": float(pl_module.hparams.get("truncation_psi", 1.0)),
                         "noise_mode": pl_module.hparams.fid["noise_mode"]}
        if trainer.is_global_zero:
            write_json(self.settings_path, self.settings)
        if self.rows:  # resumed with its rows: the file continues
            if trainer.is_global_zero:
                self._write()
        else:
            self._evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            fid = self._evaluate(trainer, pl_module)
            pl_module.log("train/fid", fid)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.rows and self.rows[-1][0] != pl_module.generator_steps:  # the last epochs fell between rows
            self._evaluate(trainer, pl_module)

    def on_test_end(self, trainer, pl_module) -> None:
        result = getattr(pl_module, "test_fid_result", None)
        if result and trainer.is_global_zero:
            self.settings = {**self.settings, "test": {k: v if isinstance(v, str | int) else _finite(v) for k, v in result.items()}}
            write_json(self.settings_path, self.settings)

    # ------------------------------------------------------------------ work

    def evaluate(self, pl_module, rank: int = 0, world_size: int = 1) -> float:
        """The FID of this evaluation's generated images (the same latents every time) against the real statistics."""
        self._fid.reset()  # forgets the generated features only (reset_real_features=False)
        labels = balanced_labels(self.num_images, pl_module.hparams.num_classes)[rank::world_size]
        generator = torch.Generator().manual_seed(self.seed + rank)
        add_generated_images(self._fid, pl_module.sample, labels, self.batch_size, generator, pooled=True,
                             noise_mode=pl_module.hparams.fid["noise_mode"])
        return float(self._fid.compute()["fid"])

    def _evaluate(self, trainer, pl_module) -> float:
        fid = self.evaluate(pl_module, trainer.global_rank, trainer.world_size)
        self.rows.append((int(pl_module.generator_steps), fid))
        if trainer.is_global_zero:
            self._write()
        return fid

    def _write(self) -> None:
        lines = ["step,fid", *(f"{step},{fid:.6g}" for step, fid in self.rows)]
        write_text(self.path, "\n".join(lines) + "\n")


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None  # JSON has no NaN
