"""`attack=natural_shift`: a corruption or stain shift behind the attack interface."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from advmed.attacks import build_attack
from advmed.attacks.natural_shift import NaturalShift
from advmed.corruptions import corruptions_for
from tests.conftest import CONFIG_DIR


class Counting(nn.Module):
    """A classifier stand-in that counts its calls: a natural shift must not use the model."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.flatten(1)[:, :3]


def test_config_builds_the_named_corruption_and_lists_every_argument():
    cfg = OmegaConf.load(CONFIG_DIR / "attack" / "natural_shift.yaml")
    attack = build_attack(cfg)
    assert isinstance(attack, NaturalShift) and attack.shift.name == "defocus_blur" and attack.severity == 3
    import inspect
    assert set(cfg) - {"_target_"} == set(inspect.signature(NaturalShift.__init__).parameters) - {"self"}


def test_each_batch_is_the_shift_with_its_own_seed_and_the_model_is_not_called():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 48, 48)
    model = Counting()
    attack = NaturalShift("gaussian_noise", severity=4, modality="ct", seed=7)
    state = torch.get_rng_state()
    first, second = attack(model, x, None), attack(model, x, None)
    noise = corruptions_for("ct", ["gaussian_noise"])["gaussian_noise"]
    assert torch.equal(first, noise(x, 4, 7)) and torch.equal(second, noise(x, 4, 8))
    assert not torch.equal(first, second)  # batch b: seed + b
    assert model.calls == 0 and torch.equal(torch.get_rng_state(), state)
    assert torch.equal(NaturalShift("gaussian_noise", severity=4, modality="ct", seed=7)(model, x, None), first)


@pytest.mark.parametrize("kwargs, message", [
    ({"shift": "macenko", "modality": "ct"}, "stain shift 'macenko' is defined for H&E histology"),
    ({"shift": "stain_deposit", "modality": "ct"}, "not defined for modality 'ct'"),
    ({"shift": "defocus_blur", "severity": 6}, "must be an integer from 1 to 5"),
    ({"shift": "defocus_blur", "seed": 0.5}, "must be an integer"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NaturalShift(**kwargs)
