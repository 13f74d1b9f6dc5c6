"""The attack line of report.md names what a reader needs to judge the figure (DESIGN.md, contract 11):
norm, iterations, queries, restarts, losses and the ensemble's version, read from the real attack configs."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from advmed.studies.robustness_report import describe_attack
from tests.conftest import CONFIG_DIR


def attack_config(name: str, **overrides) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "attack" / f"{name}.yaml"), resolve=True)
    return {**cfg, **overrides}


@pytest.mark.parametrize(("name", "overrides", "expected"), [
    ("autoattack", {}, "AutoAttack(eps=0.03, norm=Linf, version=standard, steps=100, n_queries=5000)"),
    ("autoattack", {"version": "rand", "norm": "L2", "eps": 0.5},
     "AutoAttack(eps=0.5, norm=L2, version=rand, steps=100, n_queries=5000)"),
    ("sea", {"eps": 0.02},
     "SEA(eps=0.02, steps=300, random_start=True, losses=['mask-ce-bal', 'mask-ce', 'js'], early_stop=True)"),
    ("square", {"n_restarts": 2}, "Square(eps=0.03, norm=Linf, n_queries=5000, n_restarts=2)"),
    ("fab", {"multi_targeted": True}, "FAB(eps=0.03, norm=Linf, steps=100, multi_targeted=True)"),
    ("apgd", {"loss": "dlr", "eot_iter": 20},
     "APGD(eps=0.03, norm=Linf, steps=100, eot_iter=20, random_start=True, loss=dlr)"),
    ("cw", {"kappa": 5.0}, "CW(eps=0.5, steps=100, binary_search_steps=9, kappa=5.0)"),
])
def test_the_attack_line_names_norm_budget_iterations_and_losses(name, overrides, expected):
    assert describe_attack(attack_config(name, **overrides)) == expected


def test_settings_that_mean_nothing_special_and_no_attack_stay_short():
    assert describe_attack(None) == "none"
    # one restart, one EOT draw and kappa 0 are the plain case: not shown (two restarts are, above)
    assert "n_restarts" not in describe_attack(attack_config("apgd")) and "kappa" not in describe_attack(attack_config("cw"))
    assert describe_attack(attack_config("pgd", eps=0.02)).startswith("PGD(eps=0.02, ")
