"""Adversarial attacks in plain torch (no Lightning): one attack per file.

Usage (DESIGN.md contract 2)::

    attack = PGD(eps=8 / 255, steps=10)          # or build_attack(cfg.attack)
    x_adv = attack(model, x, y)                  # x in [0, 1], y (N,) or (N, H, W)
    x_adv, trace = PGD(eps=8 / 255, steps=20, trace=True)(model, x, y)

Where things are: single attacks at the top (gradient: FGSM, BIM, PGD, PGDL2, APGD, SegPGD,
CosPGD, C&W, FAB; score-based: Square), the ensembles that report the worst case in
``ensembles/`` (AutoAttack, SEA), the attacks applied from a trained generator in ``generative/``
(AdvGAN, the VAE-GAN deformation), SNAP's region attack in ``patch/``, and what they are all built
from in ``core/``.

``__all__`` lists exactly the single attacks that optimise against the model they are given (the
contract tests parametrise over it); the base classes, :class:`AttackTrace`, :func:`build_attack`,
the ensembles and the generator attacks (each tested in its own file) are importable from here too.
"""

from __future__ import annotations

from collections.abc import Mapping

from hydra.utils import instantiate

from advmed.attacks.apgd import APGD
from advmed.attacks.bim import BIM
from advmed.attacks.core.base import Attack as Attack
from advmed.attacks.core.iterative import IterativeAttack as IterativeAttack
from advmed.attacks.core.result import AttackResult as AttackResult
from advmed.attacks.core.trace import AttackTrace as AttackTrace
from advmed.attacks.cospgd import CosPGD
from advmed.attacks.cw import CW
from advmed.attacks.ensembles.autoattack import AutoAttack as AutoAttack
from advmed.attacks.ensembles.sea import SEA as SEA
from advmed.attacks.fab import FAB
from advmed.attacks.fgsm import FGSM

# `X as X`: Attack, AttackResult, IterativeAttack and AttackTrace are public but stay out of __all__ (attack classes only).
from advmed.attacks.generative.advgan import AdvGANAttack as AdvGANAttack
from advmed.attacks.generative.deformation import DeformationAttack as DeformationAttack
from advmed.attacks.inverse_fgsm import InverseFGSM
from advmed.attacks.patch.snap import SNAP
from advmed.attacks.pgd import PGD
from advmed.attacks.pgd_l2 import PGDL2
from advmed.attacks.segpgd import SegPGD
from advmed.attacks.square import Square

__all__ = [
    "FGSM",
    "InverseFGSM",
    "BIM",
    "PGD",
    "PGDL2",
    "SNAP",
    "SegPGD",
    "CosPGD",
    "APGD",
    "FAB",
    "CW",
    "Square",
]


def build_attack(cfg: Mapping | None) -> Attack | None:
    """The attack described by a Hydra config (``conf/attack/*.yaml``), or None for no attack
    (``attack=none``: None or an empty config)."""
    if cfg is None or len(cfg) == 0:
        return None
    if "_target_" not in cfg:
        raise ValueError(
            f"the attack config {dict(cfg)} names no attack (_target_): choose one with attack=<name> "
            "(fgsm, pgd, snap, ...) before setting attack.* values, or drop those values for attack=none"
        )
    return instantiate(cfg)
