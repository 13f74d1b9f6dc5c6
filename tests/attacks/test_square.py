"""Square (Andriushchenko et al., ECCV 2020): its p schedule and L2 bump, the budget and range on
odd image sizes, what it does that gradient attacks cannot (a model without gradients), targets,
seeds, per-sample early stopping and query counts, a statistical comparison with torchattacks,
and the bad-input messages.

The contract properties (model mode, no parameter gradients, seeds, bf16, channels_last, targeted)
run on Square in test_properties.py through conftest.make_attack (20 queries); the segmentation
ones skip it (CLASSIFICATION_ONLY): the refusal is tested here.
"""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import advmed.attacks as attacks
from advmed.attacks.core.base import Attack
from advmed.attacks.square import _rectangles, p_schedule, square_bump
from tests.attacks.conftest import NUM_CLASSES, budget, tinted_classifier
from tests.conftest import CONFIG_DIR

Square = attacks.Square


class Bright(nn.Module):
    """Predicts the channel with the most pixels >= 0.5. ``floor`` makes its input gradient zero
    everywhere: gradient attacks cannot move, a query-based one can (gradient masking)."""

    def forward(self, x):
        frac = torch.floor(2 * x).clamp(max=1).mean((2, 3))
        return 20 * (frac - frac.mean(1, keepdim=True))


def _bright_batch(n=16, h=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(n, 3, h, h, generator=g)
    with torch.no_grad():
        return x, Bright()(x).argmax(1)  # labels: the model's own predictions (100% clean accuracy)


def _fooled(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


# --------------------------------------------------------------------------- schedule and shapes


def test_p_schedule_hand_values():
    # 10000 queries: p_init halved after the indices 10, 50, 200, ..., 8000 (paper Sec. 4).
    halved = [(0, 0.8), (10, 0.8), (11, 0.4), (50, 0.4), (51, 0.2), (201, 0.1), (8000, 0.8 / 256), (8001, 0.8 / 512)]
    for i, p in halved:
        assert p_schedule(i, 10000) == pytest.approx(p), i
    # 5000 queries (AutoAttack): the index is rescaled to 10000, i.e. doubled.
    for i, p in [(5, 0.8), (6, 0.4), (25, 0.4), (26, 0.2), (4000, 0.8 / 256), (4001, 0.8 / 512)]:
        assert p_schedule(i, 5000) == pytest.approx(p), i
    # 100 queries: index 1 is 100 of 10000 (p_init / 4), index 3 is 300 (p_init / 8).
    expected = [0.5, 0.125, 0.125, 0.0625, 0.5 / 512]
    assert [p_schedule(i, 100, 0.5) for i in (0, 1, 2, 3, 99)] == pytest.approx(expected)


def test_p_schedule_equals_the_references():
    torchattacks = pytest.importorskip("torchattacks")
    for n, p_init in [(20, 0.8), (100, 0.3), (5000, 0.8)]:
        ref = torchattacks.Square(nn.Identity(), n_queries=n, p_init=p_init)
        assert [p_schedule(i, n, p_init) for i in range(n)] == [ref.p_selection(i) for i in range(n)]


def test_square_sides():
    linf, l2 = Square(eps=0.1), Square(eps=1.0, norm="L2")
    assert [linf._side(p, 8, 8) for p in (0.8, 0.05, 0.001)] == [7, 2, 1]  # round(sqrt(p * 64)), >= 1
    assert [l2._side(p, 8, 8) for p in (0.8, 0.2, 0.05)] == [7, 5, 3]  # >= 3 and odd
    assert linf._side(0.8, 6, 10) == 6 and l2._side(0.8, 2, 3) == 2  # capped at min(H, W)


def test_l2_bump_matches_the_reference():
    torchattacks = pytest.importorskip("torchattacks")
    ref = torchattacks.Square(nn.Identity())
    ref.device = torch.device("cpu")
    for rows, cols in [(1, 3), (2, 3), (3, 5), (4, 7), (6, 13)]:
        assert torch.allclose(_rectangles(rows, cols).float(), ref.eta_rectangles(rows, cols), atol=1e-6)
    for s in (1, 3, 5, 8):
        eta = square_bump(s).float()
        theirs = ref.eta(s)  # randomly transposed
        assert torch.allclose(eta, theirs, atol=1e-6) or torch.allclose(eta.T, theirs, atol=1e-6)
        assert eta.norm() == pytest.approx(1.0) and (eta[s // 2 :] < 0).all() and (eta[: s // 2] > 0).all()


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 0.05), ("L2", 0.5)])
# Non-square and tiny images: torchattacks' L2 start fails at 12 px and below 5 px.
@pytest.mark.parametrize("size", [(8, 8), (6, 10), (12, 12), (2, 3)], ids=str)
def test_budget_range_and_queries(norm, eps, size, classifier):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, *size, generator=g, dtype=torch.float64)
    y = torch.randint(0, NUM_CLASSES, (8,), generator=g)
    model = classifier.double().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x_copy = x.clone()
    result = Square(eps=eps, norm=norm, n_queries=30).run(model, x, y)
    x_adv = result.x_adv
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and not torch.equal(x_adv, x)
    assert (budget(x_adv, x, norm.lower()) <= eps * (1 + 1e-6)).all()
    assert torch.equal(x, x_copy) and model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    queries = result.stats["queries"]
    assert queries.shape == (8,) and queries.dtype == torch.float32
    assert torch.isfinite(queries).all() and (queries >= 0).all() and (queries <= 30).all()


def test_fools_a_model_without_gradients():
    """AutoAttack runs Square to expose gradient masking: here the input gradient is exactly zero,
    so FGSM, PGD and APGD (from x: a random start is noise, not the attack) return x unchanged;
    Square fools every sample."""
    model = Bright()
    x, y = _bright_batch()
    for gradient_attack in (
        attacks.FGSM(eps=0.07),
        attacks.PGD(eps=0.07, random_start=False),
        attacks.APGD(eps=0.07, steps=20, random_start=False),
    ):
        assert torch.equal(gradient_attack(model, x, y), x), gradient_attack
    result = Square(eps=0.07, n_queries=200).run(model, x, y)
    assert _fooled(model, result.x_adv, y).all()
    assert (budget(result.x_adv, x, "linf") <= 0.07 + 1e-7).all()
    assert 1 < result.stats["queries"].max() < 200  # a search, and all fooled before the budget ran out
    l2 = Square(eps=1.4, norm="L2", n_queries=200)(model, x, y)
    assert _fooled(model, l2, y).all() and (budget(l2, x, "l2") <= 1.4 * (1 + 1e-6)).all()


@pytest.mark.parametrize("loss", [None, "margin"])
def test_targeted_reaches_the_targets(loss):
    model = Bright()
    x, y = _bright_batch()
    target = (y + 1) % 3
    attack = Square(eps=0.1, n_queries=100, targeted=True, loss=loss)
    assert attack.loss == (loss or "ce")  # the reference's targeted loss: cross-entropy toward the target
    with torch.no_grad():
        hit = model(attack(model, x, y, target=target)).argmax(1) == target
    assert hit.float().mean() >= 0.9


def test_seed_is_private_and_none_uses_the_global_rng(classifier, cls_batch):
    x, y = cls_batch
    attack = Square(eps=0.03, n_queries=20, seed=3)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = attack.run(classifier, x, y)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is neither used nor advanced
    torch.manual_seed(2)
    again = attack.run(classifier, x, y)
    assert torch.equal(again.x_adv, first.x_adv)
    assert torch.equal(again.stats["queries"], first.stats["queries"])
    assert not torch.equal(Square(eps=0.03, n_queries=20, seed=4)(classifier, x, y), first.x_adv)
    unseeded = Square(eps=0.03, n_queries=20, seed=None)
    torch.manual_seed(0)
    a = unseeded(classifier, x, y)
    torch.manual_seed(0)
    assert torch.equal(unseeded(classifier, x, y), a)
    assert not torch.equal(unseeded(classifier, x, y), a)


# --------------------------------------------------------------------------- early stop and query counts


def _batch_sizes(model, fn):
    sizes = []
    handle = model.register_forward_pre_hook(lambda m, inp: sizes.append(inp[0].shape[0]))
    try:
        out = fn()
    finally:
        handle.remove()
    return sizes, out


def test_fooled_samples_are_not_queried_again():
    model = Bright()
    x, y = _bright_batch()
    y[:3] = (y[:3] + 1) % 3  # three samples misclassified on the clean input
    sizes, result = _batch_sizes(model, lambda: Square(eps=0.07, n_queries=200).run(model, x, y))
    queries = result.stats["queries"]
    assert sizes[0] == 16 and sizes[1] == 13  # the clean batch, then the start of the 13 still right
    assert all(a >= b for a, b in zip(sizes[1:], sizes[2:]))  # the queried batch only shrinks
    assert sum(sizes[1:]) == queries.sum()  # every forward row is one query of a sample not yet fooled
    assert (queries[:3] == 0).all() and torch.equal(result.x_adv[:3], x[:3])
    assert len(sizes) < 1 + 200 and _fooled(model, result.x_adv, y).all()  # stops once all are fooled


def test_never_fooled_samples_use_the_whole_budget_of_every_restart(classifier, cls_batch):
    x, _ = cls_batch
    with torch.no_grad():
        y = classifier(x).argmax(1)
    # eps = 0 fools nothing: every sample is queried n_queries times per restart, the start included.
    attack = Square(eps=0.0, n_queries=7, n_restarts=2)
    sizes, result = _batch_sizes(classifier, lambda: attack.run(classifier, x, y))
    assert sizes == [8] * (1 + 2 * 7)
    assert torch.equal(result.stats["queries"], torch.full((8,), 14.0)) and torch.equal(result.x_adv, x)


def test_masked_out_samples_are_left_alone():
    model = Bright()
    x, y = _bright_batch()
    mask = torch.arange(16) % 2 == 0
    result = Square(eps=0.07, n_queries=200).run(model, x, y, mask=mask)
    assert torch.equal(result.x_adv[~mask], x[~mask]) and (result.stats["queries"][~mask] == 0).all()
    assert _fooled(model, result.x_adv[mask], y[mask]).all()


# --------------------------------------------------------------------------- comparison with torchattacks


@pytest.fixture(scope="module")
def tinted():
    """The shared tinted-noise classifier (tests/attacks/conftest.py) and 32 held-out images."""
    return tinted_classifier(32)


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 0.1), ("L2", 2.0)])
def test_success_rate_matches_torchattacks(norm, eps, tinted):
    """Same model, batch of 32, 200 queries, p_init 0.8, margin loss, two seeds each.

    Bitwise parity is impossible: torchattacks (a copy of the reference) draws one square and
    one sign per channel for the whole batch at each query from the global RNG, and spends one
    query more (the start is not counted in its budget); Square here draws per sample from a
    private generator (the paper's per-image search), so the two visit other points from the
    first query on. The outcome is compared instead: both fool most of the batch, and ours
    fools at least as many, up to 2 of 32 samples.
    """
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = tinted
    assert not _fooled(model, x, y).any()
    ours, theirs = [], []
    for seed in (0, 1):
        mine = Square(eps=eps, norm=norm, n_queries=200, p_init=0.8, loss="margin", seed=seed)
        ref = torchattacks.Square(model, norm=norm, eps=eps, n_queries=200, p_init=0.8, loss="margin", seed=seed)
        ours.append(_fooled(model, mine(model, x, y), y).float().mean())
        theirs.append(_fooled(model, ref(x, y), y).float().mean())
    ours, theirs = sum(ours) / 2, sum(theirs) / 2
    assert ours >= 0.75 and theirs >= 0.75
    assert ours >= theirs - 2 / 32, (ours, theirs)


# --------------------------------------------------------------------------- bad input, config


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_queries": 0}, r"n_queries must be an integer >= 1, got 0"),
        ({"n_queries": 2.5}, r"n_queries must be an integer >= 1, got 2.5"),
        ({"n_restarts": 0}, r"n_restarts must be an integer >= 1, got 0"),
        ({"p_init": 0}, r"p_init must be in \(0, 1\] \(a fraction of the pixels\), got 0"),
        ({"p_init": 1.5}, r"p_init must be in \(0, 1\] \(a fraction of the pixels\), got 1.5"),
        ({"norm": "L1"}, r"norm must be 'Linf' or 'L2', got 'L1'"),
        ({"loss": "dlr"}, r"loss must be one of \('margin', 'ce'\) or null .*got 'dlr'"),
        ({"seed": "x"}, r"seed must be an integer or null, got 'x'"),
        ({"eps": 8}, r"eps must be in \[0, 1\].*got 8 \(did you mean 8/255\?\)"),
        ({"eps": -1, "norm": "L2"}, r"eps must be >= 0 .*got -1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Square(**{"eps": 0.03, **kwargs})


def test_eps_range_depends_on_the_norm():
    assert Square(eps=5.0, norm="l2").eps == 5.0 and Square(eps=5.0, norm="l2").norm == "l2"
    assert Square(eps="8/255", norm="LINF").eps == pytest.approx(8 / 255)


def test_segmentation_logits_are_refused(segmenter, seg_batch):
    x, y = seg_batch
    match = (
        r"Square is defined on classification logits \(N, K\), got \(4, 3, 10, 10\); "
        r"for segmentation use SegPGD, CosPGD or APGD"
    )
    with pytest.raises(ValueError, match=match):
        Square(eps=0.03, n_queries=5)(segmenter, x, y)


def test_probability_outputs_warn_once(classifier, cls_batch, caplog):
    x, y = cls_batch
    model = nn.Sequential(classifier, nn.Softmax(dim=1))
    attack = Square(eps=0.03, n_queries=5)
    with caplog.at_level(logging.WARNING, logger="advmed.attacks.square"):
        attack(model, x, y)
        attack(model, x, y)
    assert [r.getMessage() for r in caplog.records if "look like probabilities" in r.getMessage()] == [
        "Square: the model's outputs look like probabilities (every row in [0, 1], summing to 1); "
        "its margin and cross-entropy losses are meant for logits: drop the final softmax"
    ]


def test_config_lists_every_constructor_arg_and_builds():
    import inspect

    cfg = OmegaConf.load(CONFIG_DIR / "attack" / "square.yaml")
    args = {n for c in (Square, Attack) for n in inspect.signature(c.__init__).parameters}
    assert set(cfg) - {"_target_"} == args - {"self", "common"}
    attack = attacks.build_attack(cfg)
    assert type(attack) is Square and attack.n_queries == 5000 and attack.p_init == 0.8
    assert attack.norm == "linf" and attack.loss == "margin" and attack.n_restarts == 1 and attack.seed == 0
    overrides = {"norm": "L2", "eps": 0.5, "targeted": True, "target_class": 0}
    targeted = attacks.build_attack(OmegaConf.merge(cfg, overrides))
    assert targeted.norm == "l2" and targeted.eps == 0.5 and targeted.loss == "ce"
