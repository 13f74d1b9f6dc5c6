"""Universal SNAP patch: one set of cell-shaped patches trained over a training split against a
frozen classifier, then applied to unseen images (``attack=snap attack.patch_path=...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from advmed.attacks.patch.cell_masks import cell_masks, nucleus_density
from advmed.attacks.patch.snap import SNAP, apply_universal_patch, save_universal_patch
from advmed.metrics import AttackSuccessRate
from advmed.metrics.robustness import AdversarialClassificationMetrics
from advmed.models.base import AdvmedModule, build_untrained_target
from advmed.models.checkpoint import load_module, read_checkpoint
from advmed.models.classifier import ClassifierModule
from advmed.utils.files import file_sha256
from advmed.utils.run import plain

# Pixels per channel used to estimate the data's colour range (torch.quantile has a size limit).
_RANGE_SAMPLE = 1 << 20


class UniversalPatchModule(AdvmedModule):
    """Trains one SNAP patch ``delta`` (C, H, W) on a fixed cell-shaped mask so that a frozen
    classifier predicts ``target_class`` on every patched training image (paper eq. 2 with a shared
    ``delta``; the loss is the cross-entropy to the target, or minus the cross-entropy to the true
    label when untargeted).

    At the first fit the mask is drawn (``seed``; nuclei placement uses the mean haematoxylin
    density of the first training batch), the data's colour range is the pooled per-channel
    ``colour_quantiles`` of that batch, and ``delta`` starts at its median colour. After every step
    ``delta`` is projected into that range, and on every image the patch is first projected into the
    image's own range (:func:`apply_universal_patch`), exactly as ``attack=snap attack.patch_path=``
    applies it later. Validation and test report the targeted success rate, adversarial accuracy and
    covered area; when fitting ends the best checkpoint's patch is written to ``patch_file``.

    The classifier is loaded from ``classifier_ckpt`` (a ClassifierModule checkpoint), kept in eval
    mode, out of the optimiser, and saved with the patch so the checkpoint is self-contained.

    Args:
        classifier_ckpt: the attacked classifier's checkpoint (None only when restoring).
        image_size, in_channels: the patch's shape (from the data config).
        target_class: class every image is pulled toward (paper: 0, no metastasis); None: untargeted.
        area_fraction ... init: as :class:`advmed.attacks.SNAP`.
        optimizer: ``_target_`` dict of a torch optimiser for ``delta`` (default Adam, lr 0.01).
        patch_file: where the trained patch goes (``<run dir>/universal_patch.pt``).
        seed: seeds the mask and a random init.
        classifier_hparams: set from the checkpoint; rebuilds the classifier when restoring.
        untrained_target: ClassifierModule settings (``arch``, ``num_classes``, ``class_names``; the
            channels and size are the patch's) of a freshly initialised classifier to attack when
            ``classifier_ckpt`` is unset. Only ``debug=tiny`` sets it (a smoke run checks the
            pipeline, not the figure); None: the checkpoint is required.
        train_attack, test_attack: accepted from the entry point and unused (the attack is the patch).
    """

    monitor = ("val/attack_success_rate", "max")  # keep the patch that fools the most validation images

    def __init__(
        self,
        classifier_ckpt: str | None = None,
        image_size: int = 96,
        in_channels: int = 3,
        target_class: int | None = 0,
        area_fraction: float = 0.05,
        num_blobs: int | None = None,
        blob_radius: tuple[float, float] = (0.03, 0.06),
        blob_aspect: tuple[float, float] = (0.6, 1.0),
        blob_irregularity: float = 0.15,
        placement: str = "random",
        stain_backend: str = "torch",
        density_power: float = 4.0,
        colour_quantiles: tuple[float, float] = (0.02, 0.98),
        init: str = "median",
        optimizer: dict[str, Any] | None = None,
        patch_file: str | None = None,
        seed: int = 0,
        classifier_hparams: dict[str, Any] | None = None,
        untrained_target: dict[str, Any] | None = None,
        train_attack=None,
        test_attack=None,
    ) -> None:
        super().__init__()
        blob_radius, blob_aspect, colour_quantiles, optimizer, untrained_target = (
            plain(v) for v in (blob_radius, blob_aspect, colour_quantiles, optimizer, untrained_target)
        )
        # The attack object validates every patch setting with the same messages as attack=snap.
        self.snap = SNAP(
            area_fraction=area_fraction, num_blobs=num_blobs, blob_radius=blob_radius, blob_aspect=blob_aspect,
            blob_irregularity=blob_irregularity, placement=placement, stain_backend=stain_backend,
            density_power=density_power, colour_quantiles=colour_quantiles, init=init, seed=seed,
            targeted=target_class is not None, target_class=target_class,
        )
        if classifier_ckpt is not None:
            classifier = load_module(classifier_ckpt, ClassifierModule)
            classifier_hparams = dict(classifier.hparams)
            classifier_sha256 = file_sha256(classifier_ckpt)
        elif classifier_hparams is not None:
            classifier = ClassifierModule(**ClassifierModule.restore_kwargs(classifier_hparams))
            classifier_sha256 = None
        elif untrained_target is not None:
            settings = {"in_channels": in_channels, "image_size": image_size, **untrained_target}
            classifier = build_untrained_target(ClassifierModule, settings, "model.classifier_ckpt")
            classifier_hparams = dict(classifier.hparams)  # restoring rebuilds it as from a checkpoint
            classifier_sha256 = None
        else:
            raise ValueError(
                "model.classifier_ckpt is not set: pass the checkpoint of the classifier to attack, "
                "e.g. model.classifier_ckpt=<run dir>/checkpoints/best.ckpt"
            )
        num_classes = classifier_hparams["num_classes"]
        if target_class is not None and not 0 <= target_class < num_classes:
            raise ValueError(
                f"model.target_class={target_class} but the classifier has {num_classes} classes: "
                f"choose a class index below {num_classes}"
            )
        self.save_hyperparameters(ignore=["train_attack", "test_attack"])
        self.classifier_ckpt = classifier_ckpt
        self.classifier_sha256 = classifier_sha256
        self.classifier = classifier.eval().requires_grad_(False)
        self.delta = nn.Parameter(torch.full((in_channels, image_size, image_size), 0.5))
        self.register_buffer("mask", torch.zeros(1, image_size, image_size, dtype=torch.bool))
        self.register_buffer("colour_low", torch.zeros(in_channels, 1, 1))
        self.register_buffer("colour_high", torch.ones(in_channels, 1, 1))
        self.register_buffer("initialised", torch.tensor(False))

        self.val_success = AttackSuccessRate()
        self.val_adv_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_adversarial = AdversarialClassificationMetrics(num_classes, prefix="test")

    @classmethod
    def restore_kwargs(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        return {**hparams, "classifier_ckpt": None}  # the classifier's weights are in the checkpoint

    def check_datamodule(self, datamodule) -> None:
        self.classifier.check_datamodule(datamodule)
        size = getattr(datamodule, "image_size", None)
        if size is not None and size != self.hparams.image_size:
            raise ValueError(f"model.image_size={self.hparams.image_size} but the data has image_size={size}")

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.eval()  # frozen: batch-norm statistics never move
        return self

    # ------------------------------------------------------------------ patch

    def patched(self, x: Tensor):
        """The :class:`AttackResult` of this patch on images ``x``."""
        return apply_universal_patch(x, self.delta, self.mask, self.snap.colour_quantiles)

    def on_fit_start(self) -> None:
        if bool(self.initialised):
            return  # resumed or fine-tuned: keep the mask, range and patch
        x, _ = next(iter(self.trainer.datamodule.train_dataloader()))
        x = x.to(self.device)
        self._initialise(x)

    @torch.no_grad()
    def _initialise(self, x: Tensor) -> None:
        snap, (_, c, h, w) = self.snap, x.shape
        generator = torch.Generator(device=x.device).manual_seed(self.hparams.seed)
        density = None
        if snap.placement == "nuclei":
            mean_radius = sum(snap.blob_radius) / 2 * min(h, w)
            density = nucleus_density(x, mean_radius, snap.stain_backend).mean(0, keepdim=True)
        self.mask.copy_(cell_masks(
            1, h, w, snap.area_fraction, snap.blob_radius, snap.blob_aspect, snap.blob_irregularity,
            snap.num_blobs, density, snap.density_power, generator, x.device,
        )[0])
        pixels = x.transpose(0, 1).reshape(c, -1)[:, :_RANGE_SAMPLE].float()
        q = torch.tensor(snap.colour_quantiles, device=x.device)
        low, high = torch.quantile(pixels, q, dim=1)
        self.colour_low.copy_(low.view(c, 1, 1))
        self.colour_high.copy_(high.view(c, 1, 1))
        if snap.init == "median":
            start = pixels.median(dim=1).values.view(c, 1, 1).expand(c, h, w)
        else:
            start = low.view(c, 1, 1) + (high - low).view(c, 1, 1) * torch.rand(c, h, w, generator=generator, device=x.device)
        self.delta.copy_(torch.maximum(torch.minimum(start, self.colour_high), self.colour_low))
        self.initialised.fill_(True)

    def _objective_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        target = self.hparams.target_class
        if target is None:
            return -F.cross_entropy(logits, y)
        return F.cross_entropy(logits, torch.full_like(y, target))

    def _attack_targets(self, y: Tensor) -> Tensor | None:
        target = self.hparams.target_class
        return None if target is None else torch.full_like(y, target)

    # ------------------------------------------------------------------ steps

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.classifier(self.patched(x).x_adv)
        loss = self._objective_loss(logits, y)
        if not self.finite_on_every_rank(loss):
            self.nonfinite_training_loss(f"patch loss is {loss.item()} at step {self.global_step}: lower model.optimizer.lr")
            return None
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        with torch.no_grad():  # projection onto the data's colour range after every step
            self.delta.copy_(torch.maximum(torch.minimum(self.delta, self.colour_high), self.colour_low))

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        pred = self.classifier(x).argmax(1)
        adv_pred = self.classifier(self.patched(x).x_adv).argmax(1)
        self.val_success(pred, adv_pred, y, self._attack_targets(y))
        self.val_adv_acc(adv_pred, y)
        self.log("val/attack_success_rate", self.val_success, prog_bar=True)
        self.log("val/adv_acc", self.val_adv_acc, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        logits = self.classifier(x)
        pred = logits.argmax(1)
        result = self.patched(x)
        adv_logits = self.classifier(result.x_adv)
        adv_pred = adv_logits.argmax(1)
        self.test_acc(pred, y)
        self.log("test/acc", self.test_acc)
        self.test_adversarial.update(x, y, pred, adv_pred, result, self._attack_targets(y))
        self.test_adversarial.log_to(self)
        return {"x": x, "y": y, "pred": pred, "x_adv": result.x_adv, "adv_pred": adv_pred, "region": result.region,
                "confidence": logits.softmax(1).amax(1), "adv_confidence": adv_logits.softmax(1).amax(1)}

    def configure_optimizers(self):
        cfg = self.hparams.optimizer or {"_target_": "torch.optim.Adam", "lr": 0.01}
        return instantiate(cfg, params=[self.delta])

    # ------------------------------------------------------------------ export

    def on_fit_end(self) -> None:
        """Write the best checkpoint's patch (the last one when none was saved) to ``patch_file``."""
        if not self.hparams.patch_file or not self.trainer.is_global_zero:
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        delta, mask = self.delta, self.mask
        if best:
            state = read_checkpoint(best)["state_dict"]
            delta, mask = state["delta"], state["mask"]
        self.export(self.hparams.patch_file, delta, mask, source=best or "final weights")

    def export(self, path: str | Path, delta: Tensor | None = None, mask: Tensor | None = None, source: str = "") -> Path:
        """Save a universal patch file with its provenance."""
        provenance = {
            "classifier_ckpt": str(self.classifier_ckpt) if self.classifier_ckpt else None,
            "classifier_sha256": self.classifier_sha256,
            "patch_checkpoint": source,
            "hparams": {k: v for k, v in plain(dict(self.hparams)).items() if k != "classifier_hparams"},
        }
        return save_universal_patch(path, self.delta if delta is None else delta, self.mask if mask is None else mask, provenance)
