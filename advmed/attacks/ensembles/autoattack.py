"""AutoAttack (Croce & Hein, ICML 2020): a fixed ensemble of parameter-free attacks whose robust
accuracy is the pointwise worst case, the field's standard evaluation of a classifier's robustness.

Written for advmed rather than wrapped: the reference (fra31/auto-attack, ``autoattack.py``) holds
the model from construction and evaluates whole tensors; an advmed attack takes the model at call
time, runs inside Lightning's test step one batch at a time, and reports per-image figures that
the test metrics aggregate over the split (so the per-attack robust accuracies of a multi-GPU run
are exact). The versions, their attacks, order and settings are the reference's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from advmed.attacks.apgd import APGD
from advmed.attacks.core.base import Attack
from advmed.attacks.core.batch import AttackBatch
from advmed.attacks.core.margin_losses import loss_for_classes
from advmed.attacks.core.result import AttackResult
from advmed.attacks.core.validation import check_count, check_seed, looks_like_probabilities
from advmed.attacks.fab import FAB
from advmed.attacks.square import Square

log = logging.getLogger(__name__)

# The reference's versions (autoattack.py, set_version): the attacks in their order of execution.
VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
ATTACK_NAMES = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
# Draws over which version='rand' averages each gradient (Expectation over Transformation).
RAND_EOT_ITER = 20
# The reference's check_square_sr: Square, a black-box attack, should not find what the white-box
# attacks missed; a drop of robust accuracy above 0.2 percentage points hints at gradient masking.
SQUARE_WARNING = 0.002


def stat_name(attack: str) -> str:
    """The key of an attack's per-image robustness flag in ``AttackResult.stats``
    (``acc_after_apgd_ce``): logged as ``test/acc_after_apgd_ce``, its mean is the robust
    accuracy after that attack and every one before it."""
    return "acc_after_" + attack.replace("-", "_")


@dataclass
class _Stage:
    name: str
    attack: Attack


class AutoAttack(Attack):
    """AutoAttack (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", Sec. 4): the attacks of ``version`` run in turn,
    each only on the images that every earlier attack left correctly classified, each from the
    original image; an image counts as robust only if no attack broke it (the pointwise worst
    case), and its result is the first adversarial image found.

    Versions (as the reference, 100 iterations per gradient attack):

    * ``standard``: APGD-CE, APGD-T (9 target classes), FAB-T (9 target classes), Square (5000
      queries, p_init 0.8), one run each;
    * ``plus``: APGD-CE and APGD-DLR with 5 restarts, FAB with 5 restarts, Square, APGD-T, FAB-T;
    * ``rand`` (randomised defences): APGD-CE and APGD-DLR, each gradient averaged over 20
      draws of the model (EOT).

    With K classes the targeted attacks use ``min(n_target_classes, K - 1)`` targets. DLR needs
    K >= 3 and targeted DLR K >= 4 classes (the reference only warns); below that APGD ascends the
    margin / the targeted cross-entropy instead, and :meth:`report_notes` names each substitution.
    No attack is skipped.

    Each call returns the adversarial images and, in ``AttackResult.stats``, one 0/1 flag per image
    and attack, ``acc_after_<attack>`` (see :func:`stat_name`): whether the image was still
    classified correctly after that attack. A module logs their means: the robust accuracy after
    each attack of the ensemble, the last being AutoAttack's figure.

    Args:
        eps: budget; L-inf in [0, 1]; L2 a radius >= 0 over (C, H, W) in [0, 1]-pixel units.
        norm: ``"Linf"`` or ``"L2"``.
        version: ``"standard"``, ``"plus"`` or ``"rand"`` (above).
        attacks: run these attacks instead of the version's (the reference's ``version='custom'``),
            in this order, with the version's settings; names from ``ATTACK_NAMES``.
        steps: iterations of APGD and FAB (100 as the reference; fewer only for quick checks).
        n_queries: Square's query budget (5000).
        n_target_classes: targets of APGD-T and FAB-T (9, capped at K - 1).
        seed: seeds every attack's private generator (0); None: the global RNG.
        amp_dtype, channels_last: passed to every attack (see :class:`Attack`).

    The ensemble is untargeted by definition and picks each attack's loss itself: ``targeted``,
    ``target_class``, ``loss`` and ``loss_classes`` are refused.
    """

    def __init__(
        self,
        eps: float,
        norm: str = "Linf",
        version: str = "standard",
        *,
        attacks: Sequence[str] | None = None,
        steps: int = 100,
        n_queries: int = 5000,
        n_target_classes: int = 9,
        seed: int | None = 0,
        amp_dtype: str | torch.dtype | None = None,
        channels_last: bool = False,
        **refused,
    ):
        if refused:
            raise ValueError(
                f"AutoAttack takes no {sorted(refused)}: it is an untargeted ensemble whose attacks pick their own "
                "losses; use attack=apgd (or pgd, fab, square) for a targeted or masked attack"
            )
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {sorted(VERSIONS)}, got {version!r}")
        norm_name = str(norm).lower()
        if norm_name not in ("linf", "l2"):
            raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
        self.norm = norm_name
        self._eps_upper = None if norm_name == "l2" else 1.0
        super().__init__(eps, amp_dtype=amp_dtype, channels_last=channels_last)
        self.version = version
        names = VERSIONS[version] if attacks is None else tuple(attacks)
        unknown = [a for a in names if a not in ATTACK_NAMES]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(
                f"attacks must be distinct names from {list(ATTACK_NAMES)}, got {list(names)}"
                + (f" ({unknown} unknown)" if unknown else "")
            )
        self.attacks = names
        self.steps = check_count("steps", steps)
        self.n_queries = check_count("n_queries", n_queries)
        self.n_target_classes = check_count("n_target_classes", n_target_classes)
        self.seed = check_seed(seed)
        self._stages = [_Stage(name, self._build(name)) for name in names]
        # What each attack of the last call substituted, {attack: {asked loss: used loss}}.
        self.substitutions: dict[str, dict[str, str]] = {}
        self._num_classes: int | None = None

    def _build(self, name: str) -> Attack:
        """One attack of the ensemble with the reference's settings for this version."""
        common = dict(norm=self.norm, seed=self.seed, amp_dtype=self.amp_dtype, channels_last=self.channels_last)
        restarts = 5 if self.version == "plus" else 1
        if name.startswith("apgd"):
            loss = {"apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-t": "dlr-targeted"}[name]
            eot = {"eot_iter": RAND_EOT_ITER} if self.version == "rand" else {}
            # early_stop: a fooled image leaves the run (only whether it is fooled counts here); the
            # fooled set is the original's, at a fraction of its passes on an undefended model.
            return APGD(
                self.eps, steps=self.steps, n_restarts=1 if name == "apgd-t" else restarts, loss=loss,
                n_target_classes=self.n_target_classes, early_stop=True, **eot, **common,
            )
        if name.startswith("fab"):
            targeted = name == "fab-t"
            return FAB(
                self.eps, steps=self.steps, n_restarts=1 if targeted else restarts, multi_targeted=targeted,
                n_target_classes=self.n_target_classes, **common,
            )
        return Square(self.eps, n_queries=self.n_queries, p_init=0.8, n_restarts=1, **common)

    def _perturb(self, batch: AttackBatch) -> AttackResult:
        x, y, model = batch.x, batch.y, batch.model
        clean = batch.predict(x)
        if clean.ndim != 2:
            raise ValueError(
                f"AutoAttack evaluates classifiers (logits (N, K)), got logits {tuple(clean.shape)}; "
                "for segmentation use attack=sea"
            )
        if looks_like_probabilities(clean):
            log.warning(
                "AutoAttack: the model's outputs look like probabilities (every row in [0, 1], summing to 1); "
                "its attacks need logits: drop the final softmax"
            )
        k = self._num_classes = clean.shape[1]
        # Known from K alone, so reported even when no image is left for the attack concerned.
        self.substitutions = {
            s.name: {s.attack.loss: loss_for_classes(s.attack.loss, k)}
            for s in self._stages
            if isinstance(s.attack, APGD) and loss_for_classes(s.attack.loss, k) != s.attack.loss
        }
        robust = clean.argmax(1) == y
        # Only the images given to the attack count (a classification mask leaves the others alone).
        mask = None if batch.weight is None else batch.weight > 0
        if mask is not None:
            robust &= mask
        x_out = x.clone()
        stats: dict[str, Tensor] = {}
        for stage in self._stages:
            idx = robust.nonzero().squeeze(1)
            if idx.numel() > 0:
                started = time.perf_counter()
                x_adv = stage.attack.run(model, x[idx], y[idx]).x_adv
                broken = batch.predict(x_adv).argmax(1) != y[idx]
                x_out[idx[broken]] = x_adv[broken]
                robust[idx[broken]] = False
                log.info(
                    "AutoAttack %s: %d of %d images broken, %d of %d robust (%.1f s)",
                    stage.name, int(broken.sum()), idx.numel(), int(robust.sum()), x.shape[0],
                    time.perf_counter() - started,
                )
            stats[stat_name(stage.name)] = robust.float()
        return AttackResult(x_out, stats=stats)

    def report_notes(self, metrics: dict[str, float]) -> list[str]:
        """What a reader of the report must know: the losses substituted for too few classes, the
        number of target classes used, and a warning when Square lowered the robust accuracy
        that the white-box attacks before it left (``metrics``: the logged ``test/*`` means)."""
        notes = []
        k = self._num_classes
        if k is not None and any(a in self.attacks for a in ("apgd-t", "fab-t")):
            notes.append(
                f"targeted attacks: {min(self.n_target_classes, k - 1)} target class(es) per image "
                f"(min(n_target_classes={self.n_target_classes}, K - 1) with K={k})"
            )
        for name, subs in self.substitutions.items():
            for asked, used in subs.items():
                notes.append(
                    f"{name}: loss {asked!r} is undefined with K={k} classes; {used!r} was used instead"
                )
        if "square" in self.attacks:
            i = self.attacks.index("square")
            before = metrics.get(f"test/{stat_name(self.attacks[i - 1])}") if i > 0 else None
            after = metrics.get(f"test/{stat_name('square')}")
            if before is not None and after is not None and before - after > SQUARE_WARNING:
                message = (
                    f"WARNING: Square (black-box) lowered the robust accuracy left by the white-box attacks "
                    f"from {before:.4f} to {after:.4f}: a sign of gradient masking; the white-box figures "
                    "may overstate robustness (try more Square queries/restarts or an adaptive attack)"
                )
                log.warning(message)
                notes.append(message)
        return notes
