"""Parity with the reference implementations: torchattacks 3.5 and ART (adversarial-robustness-toolbox).

Same model (a small CNN with its normalisation inside, eval mode), inputs, step size and no
random start: the adversarial images must agree to 1e-5. The batch size is a power of two,
so the peers' batch-mean loss is an exact rescaling of our per-sample sum and the gradient
signs agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import advmed.attacks as attacks
from tests.attacks.conftest import NUM_CLASSES, tiny_classifier

torchattacks = pytest.importorskip("torchattacks")
art_estimators = pytest.importorskip("art.estimators.classification")
art_evasion = pytest.importorskip("art.attacks.evasion")

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 5
L2_EPS, L2_ALPHA = 0.5, 0.1
TOL = 1e-5


@pytest.fixture
def setup():
    torch.manual_seed(10)
    model = tiny_classifier().eval()
    g = torch.Generator().manual_seed(11)
    x = torch.rand(8, 3, 16, 16, generator=g)
    y = torch.randint(0, NUM_CLASSES, (8,), generator=g)
    target = (y + 1) % NUM_CLASSES
    return model, x, y, target


def _pairs():
    """(ours, theirs factory) for each attack torchattacks has."""
    return {
        "FGSM": (lambda **kw: attacks.FGSM(eps=EPS, **kw), lambda m: torchattacks.FGSM(m, eps=EPS)),
        "BIM": (
            lambda **kw: attacks.BIM(eps=EPS, alpha=ALPHA, steps=STEPS, **kw),
            lambda m: torchattacks.BIM(m, eps=EPS, alpha=ALPHA, steps=STEPS),
        ),
        "PGD": (
            lambda **kw: attacks.PGD(eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False, **kw),
            lambda m: torchattacks.PGD(m, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False),
        ),
        "PGDL2": (
            lambda **kw: attacks.PGDL2(eps=L2_EPS, alpha=L2_ALPHA, steps=STEPS, random_start=False, **kw),
            lambda m: torchattacks.PGDL2(m, eps=L2_EPS, alpha=L2_ALPHA, steps=STEPS, random_start=False),
        ),
    }


@pytest.mark.parametrize("name", ["FGSM", "BIM", "PGD", "PGDL2"])
def test_matches_torchattacks(name, setup):
    model, x, y, _ = setup
    ours, theirs = _pairs()[name]
    expected = theirs(model)(x, y)
    assert (ours()(model, x, y) - expected).abs().max() <= TOL


@pytest.mark.parametrize("name", ["FGSM", "BIM", "PGD", "PGDL2"])
def test_matches_torchattacks_targeted(name, setup):
    model, x, y, target = setup
    ours, theirs = _pairs()[name]
    peer = theirs(model)
    peer.set_mode_targeted_by_label(quiet=True)
    expected = peer(x, target)
    assert (ours(targeted=True)(model, x, y, target=target) - expected).abs().max() <= TOL


def _art_classifier(model):
    return art_estimators.PyTorchClassifier(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(3, 16, 16),
        nb_classes=NUM_CLASSES,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_fgsm_matches_art(targeted, setup):
    model, x, y, target = setup
    labels = target if targeted else y
    art_attack = art_evasion.FastGradientMethod(
        _art_classifier(model), norm=np.inf, eps=EPS, targeted=targeted, num_random_init=0, batch_size=8
    )
    expected = torch.from_numpy(art_attack.generate(x.numpy(), labels.numpy()))
    kwargs = {"target": target} if targeted else {}
    ours = attacks.FGSM(eps=EPS, targeted=targeted)(model, x, y, **kwargs)
    assert (ours - expected).abs().max() <= TOL


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_pgd_matches_art(targeted, setup):
    model, x, y, target = setup
    labels = target if targeted else y
    art_attack = art_evasion.ProjectedGradientDescent(
        _art_classifier(model),
        norm=np.inf,
        eps=EPS,
        eps_step=ALPHA,
        max_iter=STEPS,
        targeted=targeted,
        num_random_init=0,
        batch_size=8,
        verbose=False,
    )
    expected = torch.from_numpy(art_attack.generate(x.numpy(), labels.numpy()))
    kwargs = {"target": target} if targeted else {}
    ours = attacks.PGD(eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False, targeted=targeted)(
        model, x, y, **kwargs
    )
    assert (ours - expected).abs().max() <= TOL
