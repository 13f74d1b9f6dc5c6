"""AutoAttack: the pointwise worst case over its attacks, the per-attack figures, the few-class
substitutions, the gradient-masking warning, and its refusals."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import advmed.attacks as attacks
from advmed.attacks.ensembles.autoattack import VERSIONS, AutoAttack, stat_name
from tests.attacks.conftest import Normalize, budget, tiny_classifier

FAST = {"steps": 5, "n_queries": 60}


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _blobs(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c: a grey image brightened in the c-th of k horizontal bands, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = 0.4 + 0.1 * torch.randn(n, 3, 12, 12, generator=g)
    band = 12 // k
    for c in range(k):
        x[y == c, :, c * band : (c + 1) * band] += 0.25
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny conv net trained to high clean accuracy on 4 band classes (one thread, ~1 s)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        Normalize(), nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4),
    )
    x, y = _blobs(128, 4, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(120):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.requires_grad_(False).eval()
    return (model, *_blobs(32, 4, seed=1))


def test_pointwise_worst_case_and_per_attack_figures(trained):
    model, x, y = trained
    attack = AutoAttack(eps=0.03, **FAST)
    result = attack.run(model, x, y)
    flags = [result.stats[stat_name(name)] for name in VERSIONS["standard"]]
    assert list(result.stats) == ["acc_after_apgd_ce", "acc_after_apgd_t", "acc_after_fab_t", "acc_after_square"]
    # Robust after an attack implies robust after every earlier one.
    for earlier, later in zip(flags, flags[1:]):
        assert (later <= earlier).all()
    with torch.no_grad():
        correct = model(result.x_adv).argmax(1) == y
        clean_correct = model(x).argmax(1) == y
    assert torch.equal(flags[-1].bool(), correct)
    assert 0 < flags[-1].mean() < clean_correct.float().mean()  # the attack breaks some, not all
    # Images never broken (or wrong from the start) are returned untouched; broken ones within eps.
    untouched = flags[-1].bool() | ~clean_correct
    assert torch.equal(result.x_adv[untouched], x[untouched])
    assert (budget(result.x_adv, x, "linf") <= 0.03 + 1e-6).all()


def test_each_attack_sees_only_the_images_still_robust(trained, monkeypatch):
    model, x, y = trained
    attack = AutoAttack(eps=0.03, **FAST)
    seen = {}
    for stage in attack._stages:
        real = stage.attack.run

        def spy(m, xs, ys, *a, _real=real, _name=stage.name, **k):
            seen[_name] = xs.clone()
            return _real(m, xs, ys, *a, **k)

        monkeypatch.setattr(stage.attack, "run", spy)
    result = attack.run(model, x, y)
    with torch.no_grad():
        clean_correct = int((model(x).argmax(1) == y).sum())
    counts = [clean_correct] + [int(result.stats[stat_name(n)].sum()) for n in VERSIONS["standard"]]
    for (name, xs), robust_before in zip(seen.items(), counts):
        assert xs.shape[0] == robust_before, name
        # From the original images, never from an earlier attack's output.
        assert all((x == row).flatten(1).all(1).any() for row in xs), name


def test_stronger_than_each_of_its_parts_and_than_pgd_and_fgsm(trained):
    """The acceptance order of the issue, on a trained model: AutoAttack <= APGD-CE <= PGD-10 <= FGSM."""
    model, x, y = trained
    eps = 0.05
    auto = _accuracy(model, AutoAttack(eps=eps, steps=20, n_queries=100)(model, x, y), y)
    apgd = _accuracy(model, attacks.APGD(eps=eps, steps=20)(model, x, y), y)
    pgd = _accuracy(model, attacks.PGD(eps=eps, steps=10, seed=0)(model, x, y), y)
    fgsm = _accuracy(model, attacks.FGSM(eps=eps)(model, x, y), y)
    # Here APGD-T breaks images APGD-CE left (0.34 vs 0.44 of 32 images when written).
    assert auto < apgd <= pgd <= fgsm < _accuracy(model, x, y)


@pytest.mark.parametrize("name, loss", [("apgd-ce", "ce"), ("apgd-t", "dlr-targeted")])
def test_its_apgd_stops_on_fooled_images_without_changing_the_figure(trained, name, loss):
    """Inside AutoAttack an image leaves APGD once fooled (only that counts there): the stage's robust
    flags equal those of the original's APGD, which iterates every image to the end."""
    model, x, y = trained
    attack = AutoAttack(eps=0.03, attacks=[name], steps=20)
    assert attack._stages[0].attack.early_stop
    flags = attack.run(model, x, y).stats[stat_name(name)].bool()
    full = attacks.APGD(eps=0.03, steps=20, loss=loss, n_target_classes=9, early_stop=False)(model, x, y)
    with torch.no_grad():
        assert torch.equal(flags, model(full).argmax(1) == y)
    assert 0 < flags.sum() < len(y)


@pytest.mark.parametrize("k, expected", [
    (2, {"apgd-t": {"dlr-targeted": "ce-targeted"}, "apgd-dlr": {"dlr": "margin"}}),
    (3, {"apgd-t": {"dlr-targeted": "ce-targeted"}}),
    (4, {}),
])
def test_few_classes_substitute_the_losses_and_say_so(k, expected):
    torch.manual_seed(k)
    model = tiny_classifier(k).eval()
    x, y = _blobs(8, k, seed=k)
    attack = AutoAttack(eps=0.03, attacks=["apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square"], **FAST)
    result = attack.run(model, x, y)
    assert set(result.stats) == {stat_name(n) for n in attack.attacks}  # nothing skipped
    notes = attack.report_notes({})
    assert f"{min(9, k - 1)} target class(es) per image" in notes[0]
    # Reported from K, also for an attack that found no robust image left to attack.
    assert attack.substitutions == expected
    for name, subs in expected.items():
        for asked, used in subs.items():
            assert any(name in n and repr(asked) in n and repr(used) in n for n in notes)


class _Quantised(nn.Module):
    """Gradient masking by construction: the input is rounded to 8 levels before a classifier, so
    the input gradient is zero almost everywhere and gradient attacks stall; Square only needs
    the outputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 7) / 7)


def test_square_beating_the_white_box_attacks_is_reported(trained, caplog):
    model, x, y = trained
    masked = _Quantised(model).eval()
    attack = AutoAttack(eps=0.1, attacks=["apgd-ce", "square"], steps=5, n_queries=300)
    result = attack.run(masked, x, y)
    before = result.stats["acc_after_apgd_ce"].mean().item()
    after = result.stats["acc_after_square"].mean().item()
    assert after < before - 0.002  # Square found what APGD could not
    with caplog.at_level(logging.WARNING):
        notes = attack.report_notes({"test/acc_after_apgd_ce": before, "test/acc_after_square": after})
    assert any("gradient masking" in n for n in notes) and "gradient masking" in caplog.text
    # No warning when Square adds nothing.
    assert not any("gradient masking" in n for n in attack.report_notes(
        {"test/acc_after_apgd_ce": after, "test/acc_after_square": after}))


def test_versions_build_the_reference_settings():
    plus = AutoAttack(eps=0.03, version="plus")
    assert plus.attacks == ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
    by_name = {s.name: s.attack for s in plus._stages}
    assert by_name["apgd-ce"].n_restarts == 5 and by_name["fab"].n_restarts == 5
    assert by_name["apgd-t"].n_restarts == 1 and by_name["fab-t"].n_restarts == 1
    assert by_name["square"].n_queries == 5000 and by_name["square"].p_init == 0.8
    rand = AutoAttack(eps=0.03, version="rand")
    assert rand.attacks == ("apgd-ce", "apgd-dlr")
    assert all(s.attack.eot_iter == 20 for s in rand._stages)
    standard = AutoAttack(eps=0.5, norm="L2")
    assert all(s.attack.norm == "l2" and s.attack.eps == 0.5 and s.attack.steps == 100
               for s in standard._stages if s.name != "square")


@pytest.mark.parametrize("kwargs, match", [
    ({"version": "custom"}, "version must be one of"),
    ({"attacks": ["apgd-ce", "cw"]}, r"\['cw'\] unknown"),
    ({"attacks": []}, "attacks must be distinct"),
    ({"targeted": True}, "untargeted ensemble"),
    ({"loss": "dlr"}, "untargeted ensemble"),
    ({"norm": "L1"}, "norm must be"),
    ({"eps": 8}, "did you mean 8/255"),
    ({"n_queries": 0}, "n_queries must be an integer >= 1"),
    ({"steps": 0}, "steps must be an integer >= 1"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AutoAttack(**{"eps": 0.03, **kwargs})


def test_segmentation_logits_are_refused(segmenter, seg_batch):
    with pytest.raises(ValueError, match="attack=sea"):
        AutoAttack(eps=0.03, **FAST)(segmenter, *seg_batch)


def test_probabilities_are_warned_about(trained, caplog):
    model, x, y = trained
    with caplog.at_level(logging.WARNING):
        AutoAttack(eps=0.03, attacks=["apgd-ce"], steps=2)(nn.Sequential(model, nn.Softmax(1)), x[:4], y[:4])
    assert "look like probabilities" in caplog.text


def test_seeded_runs_repeat(trained):
    model, x, y = trained
    a = AutoAttack(eps=0.03, **FAST)(model, x[:8], y[:8])
    b = AutoAttack(eps=0.03, **FAST)(model, x[:8], y[:8])
    assert torch.equal(a, b)
