"""Training objectives: the loss of one training step given the model, the clean batch and the
training attack, kept apart from the modules (as the GAN losses in :mod:`advmed.losses` are), so
that the classifier and the segmenter train with any of them (``objective=<name>``)::

    objective = build_objective(cfg.objective)      # conf/objective/<name>.yaml
    out = objective(model, x, y, criterion, attack)  # out.loss, out.logits, out.terms

One objective per file: :class:`Standard` (the model's loss on the clean batch), :class:`Mixed`
(a fraction of the batch attacked: what ``model.adv_fraction`` always did), :class:`PGDAT`
(Madry et al. 2018), :class:`TRADES` (Zhang et al. 2019), :class:`MART` (Wang et al. 2020) and
:class:`FGSMRS` (Wong et al. 2020; N-FGSM, de Jorge et al. 2022). The base class and the call
contract are in :mod:`advmed.objectives.base`, the per-sample / per-pixel terms in
:mod:`advmed.objectives.divergences`, the inner loops' steps in :mod:`advmed.objectives.inner`.
"""

from __future__ import annotations

from collections.abc import Mapping

from hydra.utils import instantiate

from advmed.objectives.base import TASKS as TASKS
from advmed.objectives.base import Objective as Objective
from advmed.objectives.base import ObjectiveOutput as ObjectiveOutput
from advmed.objectives.fgsm_rs import FGSMRS
from advmed.objectives.mart import MART
from advmed.objectives.mixed import Mixed
from advmed.objectives.pgd_at import PGDAT
from advmed.objectives.standard import Standard
from advmed.objectives.trades import TRADES

__all__ = ["Standard", "Mixed", "PGDAT", "TRADES", "MART", "FGSMRS"]

NAMES = ("standard", "mixed", "pgd_at", "trades", "mart", "fgsm_rs")


def build_objective(cfg: Mapping | None) -> Objective | None:
    """The objective described by a Hydra config (``conf/objective/*.yaml``), or None when the
    config is absent or empty (an entry config without the group)."""
    if cfg is None or len(cfg) == 0:
        return None
    if "_target_" not in cfg:
        raise ValueError(
            f"the objective config {dict(cfg)} names no objective (_target_): choose one with objective=<name> "
            f"({', '.join(NAMES)}) before setting objective.* values"
        )
    objective = instantiate(cfg)
    if not isinstance(objective, Objective):
        raise ValueError(f"objective._target_={cfg['_target_']} built a {type(objective).__name__}, not an Objective")
    return objective
