"""Save and log a grid of clean / adversarial / difference images at the end of testing."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from advmed.studies.figures import adversarial_grid, deformation_grid, segmentation_grid
from advmed.utils.loggers import log_image


class AdversarialExamplesCallback(L.Callback):
    """Collects the first ``num_images`` test images with their attacked versions (and the
    outlines of a patch attack's mask); for segmentation (label maps as ``y``) also the ground
    truth and both predictions; when the test step also returns ``deformation`` and ``intensity``
    (the deformation attacker) the grid shows those fields (:func:`~advmed.studies.figures.deformation_grid`).

    Works with any logger: the PNG is written to ``output_dir`` and handed to
    :func:`advmed.utils.loggers.log_image`. Does nothing when the test ran without an attack.
    """

    def __init__(self, output_dir: str, num_images: int = 8, amplify: float = 10.0, file_name: str = "adversarial_examples.png"):
        super().__init__()
        self.path = Path(output_dir) / file_name
        self.num_images = num_images
        self.amplify = amplify
        self._examples: dict[str, list[torch.Tensor]] = {}

    def on_test_start(self, trainer, pl_module) -> None:
        self._examples = {}

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not isinstance(outputs, dict) or "x_adv" not in outputs:
            return
        have = sum(len(t) for t in self._examples.get("x", []))
        take = self.num_images - have
        if take <= 0:
            return
        for key in ("x", "x_adv", "y", "pred", "adv_pred", "region", "deformation", "intensity"):
            if outputs.get(key) is not None:  # region: patch attacks; deformation / intensity: the Chen attacker
                self._examples.setdefault(key, []).append(outputs[key][:take].detach().cpu())

    def on_test_end(self, trainer, pl_module) -> None:
        if not self._examples or not trainer.is_global_zero:
            return
        ex = {k: torch.cat(v) for k, v in self._examples.items()}
        grid = segmentation_grid if ex["y"].ndim == 3 else adversarial_grid  # label maps or labels
        if "deformation" in ex:  # a generator that returns its fields: draw them
            grid = deformation_grid
        grid(self.path, **ex, class_names=pl_module.hparams.get("class_names"), amplify=self.amplify)
        log_image(trainer.loggers, "test/adversarial_examples", self.path)
