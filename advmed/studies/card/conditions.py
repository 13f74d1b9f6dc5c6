"""The conditions of a robustness card: clean, every corruption of the data's modality at each
severity, the stain shifts (H&E data) and each attack at each eps. A shift is measured as
:class:`~advmed.attacks.natural_shift.NaturalShift`, so every condition goes through the module's
own test step and is reported in one format (DESIGN.md, contract 11)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from advmed.corruptions.base import SEVERITIES, Shift, check_severity

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
KINDS = ("clean", "corruption", "stain", "attack")
# `attacks: auto`: the quick attacks, then the strongest standard evaluation of the task (contract 11).
AUTO_ATTACKS = {"classification": ("fgsm", "pgd", "autoattack"), "segmentation": ("fgsm", "pgd", "sea")}


@dataclass(frozen=True)
class Condition:
    """One row of the card. ``settings`` is everything that made it (the attack's config, the
    shift's name and severity), so that a resumed card can tell a finished condition from a
    different one under the same id."""

    kind: str
    name: str
    severity: int | None = None
    eps: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """``clean``, ``corruption/defocus_blur/3``, ``stain/macenko/5``, ``attack/pgd/eps=0.0313725``."""
        if self.kind == "clean":
            return "clean"
        if self.kind == "attack":
            return f"attack/{self.name}/eps={self.eps:.7g}"
        return f"{self.kind}/{self.name}/{self.severity}"

    @property
    def file_name(self) -> str:
        return self.id.replace("/", "__") + ".json"

    def digest(self) -> str:
        """A short hash of the condition's full description (its id alone does not say e.g. the steps)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def attack_config(name: str, overrides: Mapping[str, Any] | None, eps: float) -> dict[str, Any]:
    """``conf/attack/<name>.yaml`` with ``overrides`` and ``eps`` applied: the card reads the same
    files as ``attack=<name>``, so an attack has one definition of its defaults."""
    path = CONF_DIR / "attack" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / "attack").glob("*.yaml") if p.stem != "none")
        raise ValueError(f"suite.attacks names attack '{name}', which has no config {path}: choose from {', '.join(known)}")
    node = OmegaConf.merge(OmegaConf.load(path), OmegaConf.create(dict(overrides or {})), {"eps": float(eps)})
    return OmegaConf.to_container(node, resolve=True)


def attack_names(attacks: Any, task: str) -> dict[str, dict[str, Any]]:
    """``suite.attacks`` as ``{name: overrides}``: ``auto`` (the task's default list), a list of
    names, or a mapping of name to overrides (``{pgd: {steps: 20}}``); null or empty: none."""
    if attacks is None:
        return {}
    if isinstance(attacks, str):
        if attacks != "auto":
            raise ValueError(f"suite.attacks={attacks!r}: use auto, a list of attack names or a mapping name -> overrides")
        if task not in AUTO_ATTACKS:
            raise ValueError(f"suite.attacks=auto has no default for a {task} model: list the attacks")
        return {name: {} for name in AUTO_ATTACKS[task]}
    if isinstance(attacks, Mapping):
        return {str(k): dict(v or {}) for k, v in attacks.items()}
    if isinstance(attacks, Sequence):
        return {str(name): {} for name in attacks}
    raise ValueError(f"suite.attacks={attacks!r}: use auto, a list of attack names or a mapping name -> overrides")


def check_eps_list(eps: Sequence[float]) -> list[float]:
    values = [float(e) for e in eps]
    bad = [e for e in values if not 0.0 < e <= 1.0]
    if bad:
        raise ValueError(f"suite.eps={values}: every eps must be in (0, 1] (a fraction of the [0, 1] pixel range), got {bad}")
    return values


def card_conditions(suite: Mapping[str, Any], *, task: str, modality: str, corruptions: Mapping[str, Shift],
                    stains: Mapping[str, Shift], image_side: int) -> tuple[list[Condition], list[dict[str, Any]]]:
    """Every condition of the card, in the order it runs (clean, corruptions, stain shifts,
    attacks), and the shift conditions that cannot run on images of ``image_side`` px (MedMNIST-C's
    stain deposits and bubbles are drawn in pixels of its 224 px images), each with the reason:
    the card lists them as not measured, never drops them silently. ``corruptions`` / ``stains``
    are the shifts already chosen for the data (empty: none)."""
    severities = [check_severity(s, "suite.severities") for s in suite.get("severities", SEVERITIES)]
    conditions, not_measured = [Condition("clean", "clean")], []
    for kind, shifts in (("corruption", corruptions), ("stain", stains)):
        for name, shift in shifts.items():
            for s in severities:
                condition = Condition(kind, name, severity=s, settings={"modality": modality})
                need = shift.min_side(s)
                if image_side < need:
                    not_measured.append({"id": condition.id, "reason": f"needs images of at least {need} px a side, "
                                                                     f"these are {image_side} px"})
                else:
                    conditions.append(condition)
    eps_list = check_eps_list(suite.get("eps") or [])
    for name, overrides in attack_names(suite.get("attacks"), task).items():
        if not eps_list:
            raise ValueError(f"suite.attacks lists {name} but suite.eps is empty: give the eps to attack at")
        conditions += [Condition("attack", name, eps=e, settings=attack_config(name, overrides, e)) for e in eps_list]
    return conditions, not_measured
