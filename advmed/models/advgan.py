"""AdvGAN (Xiao et al. 2018) as Lockshin et al. 2022 train it (sec. 3.3, eqs. 6-9): a generator of
adversarial noise for a frozen classifier, trained on the GAN base.

    python -m advmed.train experiment=lockshin/advgan model.classifier_ckpt=<classifier run>/checkpoints/best.ckpt

The networks are in :mod:`advmed.nets.advgan`, the losses in :mod:`advmed.losses.advgan`; a trained
generator is applied to any classifier by :class:`advmed.attacks.AdvGANAttack` (``attack=advgan``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from advmed.attacks.core.result import AttackResult
from advmed.attacks.generative.advgan import mean_abs_noise
from advmed.losses.advgan import AdvGANLoss
from advmed.metrics.attack_success import AttackSuccessRate
from advmed.metrics.robustness import AdversarialClassificationMetrics
from advmed.models.base import build_untrained_target
from advmed.models.checkpoint import load_module
from advmed.models.gan import GANModule, LossTerms
from advmed.nets.advgan import AdvGANDiscriminator, AdvGANGenerator, apply_perturbation
from advmed.utils.files import file_sha256
from advmed.utils.run import plain

TRAIN_CLASSIFIER = "python -m advmed.train experiment=lockshin/classifier_tiny (or a ResNet34 run on this data)"


def _as_list(value: Any) -> Any:
    """Lists and tuples compare as lists (class names from a config or from a checkpoint)."""
    return list(value) if isinstance(value, list | tuple) else value


class AdvGANModule(GANModule):
    """Trains an AdvGAN generator against a frozen :class:`~advmed.models.classifier.ClassifierModule`.

    Generator loss: eq. 9, ``gamma * l_nce + theta * l_GAN + zeta * l_threshold``
    (:class:`~advmed.losses.advgan.AdvGANLoss`) on ``x_adv = clamp(x + G(x), 0, 1)``; discriminator
    loss: eq. 1 with clean ``x`` as real and ``x_adv`` as fake. One discriminator step then one
    generator step per batch (``n_critic=1``).

    Logged: ``train/g_nce`` (``train/g_target_ce`` when targeted), ``train/g_gan``, ``train/g_threshold``,
    ``train/d_real``, ``train/d_fake`` and ``train/ce`` (eq. 8, batch mean); ``val/attack_success_rate``
    (fraction of the correctly classified validation images the attack fools; targeted: moves to
    ``target_class``), ``val/linf`` and ``val/mean_abs_noise``; in the test ``test/acc`` (the
    classifier on clean images), ``test/adv_acc``, ``test/attack_success_rate``, ``test/linf``,
    ``test/l2`` and ``test/mean_abs_noise``, all measured on ``x_adv - x``. Validation and test use
    the EMA generator when one is kept, as :class:`~advmed.attacks.AdvGANAttack` does.

    Args:
        classifier_ckpt: the attacked ClassifierModule checkpoint; frozen, checked against
            ``num_classes`` / ``in_channels`` / ``class_names``, rebuilt from this path on restore.
        num_classes, in_channels, class_names: of the data (checked against the classifier).
        image_size: of the data; recorded, :class:`~advmed.attacks.AdvGANAttack` refuses other sizes.
        gamma, theta, zeta: eq. 9's weights (paper: 10, 1, 1).
        thr: eq. 6's threshold in [0, 1] pixel units. The paper gives no value; 0.1 is the FGSM eps
            it compares AdvGAN with (Table 1), so both attacks get the same L-inf scale.
        targeted: pull every image toward ``target_class`` (cross-entropy to it) instead of away
            from its label (``1 / l_ce``).
        target_class: the target class index (targeted only).
        non_saturating: the generator's GAN term is ``-log D`` (True) or eq. 1's ``log(1 - D)``.
        base_width, depth, residual_blocks, max_perturbation, upsampling: :class:`~advmed.nets.advgan.AdvGANGenerator`.
        critic_width, critic_depth: :class:`~advmed.nets.advgan.AdvGANDiscriminator`.
        generator_optimizer, critic_optimizer, n_critic, gradient_clip_val, accumulate_grad_batches, ema_decay, ema_rampup:
            the GAN base's (:class:`~advmed.models.gan.GANModule`); None optimisers
            are its Adam lr 2e-4, betas (0.5, 0.999); ``conf/model/advgan.yaml`` sets Xiao et al.'s lr 1e-3.
        classifier_sha256: recorded by the module (the SHA-256 of ``classifier_ckpt`` when it was
            trained); restoring with a classifier file of another hash warns.
        untrained_target: ClassifierModule settings (e.g. ``{arch: resnet18}``; the data-derived ones
            come from this module's) of a freshly initialised classifier to attack when
            ``classifier_ckpt`` is unset. Only ``debug=tiny`` sets it (a smoke run checks the
            pipeline, not the figure); None: the checkpoint is required.
        train_attack, test_attack: accepted from the entry point and unused (the attack is the generator).
    """

    monitor = None  # success and noise trade off through thr: no single validation metric picks an epoch

    def __init__(
        self,
        classifier_ckpt: str | None = None,
        num_classes: int = 9,
        in_channels: int = 3,
        class_names: list[str] | None = None,
        image_size: int | None = None,
        gamma: float = 10.0,
        theta: float = 1.0,
        zeta: float = 1.0,
        thr: float = 0.1,
        targeted: bool = False,
        target_class: int | None = None,
        non_saturating: bool = True,
        base_width: int = 8,
        depth: int = 2,
        residual_blocks: int = 4,
        max_perturbation: float = 1.0,
        upsampling: str = "transposed",
        critic_width: int = 8,
        critic_depth: int = 3,
        generator_optimizer: dict[str, Any] | None = None,
        critic_optimizer: dict[str, Any] | None = None,
        n_critic: int = 1,
        gradient_clip_val: float | None = None,
        accumulate_grad_batches: int = 1,
        ema_decay: float | None = None,
        ema_rampup: float | None = None,
        classifier_sha256: str | None = None,
        untrained_target: dict[str, Any] | None = None,
        train_attack=None,
        test_attack=None,
    ) -> None:
        super().__init__()
        class_names, untrained_target = plain(class_names), plain(untrained_target)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}")
        if targeted and (target_class is None or isinstance(target_class, bool) or not 0 <= target_class < num_classes):
            raise ValueError(f"model.target_class={target_class} must be a class index in [0, {num_classes - 1}] "
                             "for a targeted AdvGAN (model.targeted=true)")
        if not targeted and target_class is not None:
            raise ValueError(f"model.target_class={target_class} needs model.targeted=true (or set it to null)")
        self.save_hyperparameters(ignore=["train_attack", "test_attack"])
        self.hparams.class_names = class_names
        # Validated before the classifier is read: a bad weight fails fast, whatever the checkpoint.
        self.loss = AdvGANLoss(gamma, theta, zeta, thr, targeted, non_saturating)
        self.generator = AdvGANGenerator(in_channels, base_width, depth, residual_blocks, max_perturbation, upsampling)
        self.critic = AdvGANDiscriminator(in_channels, critic_width, critic_depth)
        self.freeze_target("classifier", self._load_classifier(classifier_ckpt))
        self.init_gan()
        self.val_success = AttackSuccessRate()
        self.val_linf, self.val_noise = MeanMetric(), MeanMetric()
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_adversarial = AdversarialClassificationMetrics(num_classes, prefix="test")

    def _load_classifier(self, path: str | None):
        from advmed.models.classifier import ClassifierModule

        h = self.hparams
        if path is None and h.untrained_target is not None:
            data = {"num_classes": h.num_classes, "in_channels": h.in_channels, "class_names": h.class_names,
                    "image_size": h.image_size}
            return build_untrained_target(ClassifierModule, {**data, **h.untrained_target}, "model.classifier_ckpt")
        if path is None:
            raise ValueError(f"model.classifier_ckpt is not set: pass the checkpoints/best.ckpt of the classifier to "
                             f"attack, e.g. model.classifier_ckpt=<run dir>/checkpoints/best.ckpt (train one with "
                             f"{TRAIN_CLASSIFIER})")
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"model.classifier_ckpt='{file}' does not exist: pass the checkpoints/best.ckpt of a "
                                    f"classifier trained on this data (train one with {TRAIN_CLASSIFIER})")
        classifier = load_module(file, ClassifierModule)
        theirs = {"num_classes": classifier.hparams.num_classes, "in_channels": classifier.hparams.in_channels,
                  "class_names": plain(classifier.hparams.get("class_names"))}
        ours = {"num_classes": h.num_classes, "in_channels": h.in_channels, "class_names": h.class_names}
        for name in ours:
            if ours[name] is not None and theirs[name] is not None and _as_list(ours[name]) != _as_list(theirs[name]):
                raise ValueError(
                    f"the classifier checkpoint '{file}' was trained with {name}={theirs[name]} but the data has "
                    f"{name}={ours[name]}: attack a classifier trained on this data ({TRAIN_CLASSIFIER}), "
                    "or choose its data with data=..."
                )
        # Provenance: which classifier the generator learnt to fool.
        digest = file_sha256(file)
        if h.classifier_sha256 is not None and h.classifier_sha256 != digest:
            warnings.warn(f"the classifier checkpoint '{file}' is not the one this AdvGAN was trained against (sha256 "
                          f"{digest[:12]}, trained against {h.classifier_sha256[:12]}): its metrics measure the new "
                          "file", stacklevel=3)
        h.classifier_sha256 = digest
        return classifier

    # ------------------------------------------------------------------ training

    def forward(self, x: Tensor) -> Tensor:
        """``x_adv = clamp(x + G(x), 0, 1)`` with the sampling generator (the EMA copy when kept)."""
        return apply_perturbation(x, self.sampling_generator(x))

    def _goal(self, y: Tensor) -> Tensor:
        """The labels the adversarial term is measured against: the true ones, or the target class."""
        return torch.full_like(y, self.hparams.target_class) if self.hparams.targeted else y

    def generator_loss(self, batch) -> LossTerms:
        x, y = batch
        perturbation = self.generator(x)
        x_adv = apply_perturbation(x, perturbation)
        terms, ce = self.loss.generator(self.classifier(x_adv), self._goal(y), self.critic(x_adv), perturbation)
        self.log("train/ce", ce, prog_bar=True)
        return terms

    def critic_loss(self, batch) -> LossTerms:
        x, _ = batch
        with torch.no_grad():
            x_adv = apply_perturbation(x, self.generator(x))
        return self.loss.critic(self.critic(x), self.critic(x_adv))

    # ------------------------------------------------------------------ validation and test

    def _attack_target(self, y: Tensor) -> Tensor | None:
        return self._goal(y) if self.hparams.targeted else None

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        x_adv = self(x)
        self.val_success.update(self.classifier(x).argmax(1), self.classifier(x_adv).argmax(1), y, self._attack_target(y))
        self.val_linf.update((x_adv - x).flatten(1).abs().amax(1))
        self.val_noise.update(mean_abs_noise(x, x_adv))

    def on_validation_epoch_end(self) -> None:
        self.log("val/attack_success_rate", self.val_success.compute(), prog_bar=True)
        self.log("val/linf", self.val_linf.compute())
        self.log("val/mean_abs_noise", self.val_noise.compute(), prog_bar=True)
        for metric in (self.val_success, self.val_linf, self.val_noise):
            metric.reset()

    def test_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        logits = self.classifier(x)
        pred = logits.argmax(1)
        x_adv = self(x)
        adv_logits = self.classifier(x_adv)
        adv_pred = adv_logits.argmax(1)
        self.test_acc(pred, y)
        self.log("test/acc", self.test_acc)
        result = AttackResult(x_adv, stats={"mean_abs_noise": mean_abs_noise(x, x_adv)})
        self.test_adversarial.update(x, y, pred, adv_pred, result, self._attack_target(y))
        self.test_adversarial.log_to(self)
        return {"x": x, "y": y, "pred": pred, "confidence": logits.softmax(1).amax(1), "x_adv": x_adv,
                "adv_pred": adv_pred, "adv_confidence": adv_logits.softmax(1).amax(1)}
