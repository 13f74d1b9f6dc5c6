"""APGD (Croce & Hein, ICML 2020, Alg. 1): its step-size schedule, its losses and their few-class
stand-ins, parity with torchattacks, strength against PGD, the random start, the bad-input
messages, the trace (rows = the kept result after each iteration of all runs) and EOT.

The contract properties (range, budget, model mode, no parameter gradients, seeds, bf16,
channels_last, segmentation, targeted) run on APGD in test_properties.py through
conftest.make_attack, which builds it without random start; the random start is tested here.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import advmed.attacks as attacks
from advmed.attacks.apgd import checkpoints
from advmed.attacks.core.apgd_loop import loss_and_gradient
from advmed.attacks.core.base import Attack
from advmed.attacks.core.margin_losses import dlr_loss, margin_loss, target_classes, targeted_dlr_loss
from advmed.attacks.core.trace import segmentation_scores
from advmed.attacks.core.validation import looks_like_probabilities
from tests.attacks.conftest import NUM_CLASSES, _init_bn, budget, tinted_classifier, tiny_classifier
from tests.conftest import CONFIG_DIR

APGD = attacks.APGD


def _ce(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def _forward_inputs(model):
    """Record every forward's input (detached copies); returns (list, hook handle)."""
    seen = []
    handle = model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
    return seen, handle


# --------------------------------------------------------------------------- schedule


def _paper_checkpoints(n: int) -> list[int]:
    """The paper's w_j = ceil(p_j * N) in exact rationals (independent of the module's integer code)."""
    prev, p, out = Fraction(0), Fraction(22, 100), []
    while p <= 1:
        w = math.ceil(p * n)
        if not out or w > out[-1]:
            out.append(w)
        prev, p = p, p + max(p - prev - Fraction(3, 100), Fraction(6, 100))
    return out


def test_checkpoints_follow_the_paper():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    # The reference's int(0.22 N) / int(0.03 N) / int(0.06 N) would give 2, 3, 4, ... here.
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]
    for n in (1, 2, 3, 7, 37, 100, 250, 1000):
        assert checkpoints(n) == _paper_checkpoints(n), n


# --------------------------------------------------------------------------- losses


def test_dlr_losses_follow_the_paper_equations():
    z = torch.tensor([[4.0, 1.0, 3.0, 0.0, -1.0], [1.0, 5.0, 2.0, 0.5, 0.0]])
    y = torch.tensor([0, 0])
    # Sample 0 is right (z_y = pi1 = 4, runner-up 3, pi3 = 1); sample 1 is wrong (pi1 = 5, pi3 = 1).
    assert torch.allclose(dlr_loss(z, y), torch.tensor([-(4 - 3) / (4 - 1), -(1 - 5) / (5 - 1)]))
    t = torch.tensor([2, 3])
    expected = torch.tensor([-(4 - 3) / (4 - (1 + 0) / 2), -(1 - 0.5) / (5 - (1 + 0.5) / 2)])
    assert torch.allclose(targeted_dlr_loss(z, y, t), expected)
    assert torch.allclose(margin_loss(z, y), torch.tensor([3 - 4, 5 - 1.0]))
    # DLR is invariant to shifting and positive rescaling of the logits.
    assert torch.allclose(dlr_loss(3 * z + 7, y), dlr_loss(z, y), atol=1e-6)
    assert torch.allclose(targeted_dlr_loss(3 * z + 7, y, t), targeted_dlr_loss(z, y, t), atol=1e-6)


def test_target_classes_are_the_runner_ups_of_the_clean_logits():
    z = torch.tensor([[0.1, 0.9, 0.5, 0.7], [3.0, 2.0, 1.0, 0.0]])
    assert target_classes(z, 9).tolist() == [[3, 2, 0], [1, 2, 3]]  # capped at K - 1
    assert target_classes(z, 1).tolist() == [[3], [1]]


def test_probability_detection():
    logits = torch.randn(4, 5)
    assert looks_like_probabilities(logits.softmax(1))
    assert not looks_like_probabilities(logits)
    assert looks_like_probabilities(torch.randn(2, 3, 4, 4).softmax(1))


# --------------------------------------------------------------------------- random start, budget, contract


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 0.03), ("L2", 0.5)])
@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr-targeted"])
def test_random_start_keeps_range_budget_mode_and_no_grads(norm, eps, loss, classifier, cls_batch):
    x, y = cls_batch
    classifier.train()
    attack = APGD(eps=eps, norm=norm, steps=5, loss=loss, n_target_classes=2)
    x_adv = attack(classifier, x, y)
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (budget(x_adv, x, attack.norm) <= eps * (1 + 1e-5) + 1e-7).all()
    assert classifier.training and all(m.training for m in classifier.modules())
    assert all(p.grad is None for p in classifier.parameters())
    assert attack.substitutions == {}  # 4 classes: every DLR loss is defined


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 0.03), ("L2", 0.5)])
def test_segmentation_ce_with_random_start(norm, eps, segmenter, seg_batch):
    x, y = seg_batch
    attack = APGD(eps=eps, norm=norm, steps=4)
    x_adv = attack(segmenter, x, y)
    assert (budget(x_adv, x, attack.norm) <= eps * (1 + 1e-5) + 1e-7).all()
    assert (_ce(segmenter, x_adv, y).flatten(1).mean(1) > _ce(segmenter, x, y).flatten(1).mean(1)).all()


def test_seeded_random_start_is_private_and_global_without_seed(classifier, cls_batch):
    x, y = cls_batch
    seeded = APGD(eps=0.03, steps=3, seed=5)
    torch.manual_seed(1)
    first = seeded(classifier, x, y)
    torch.manual_seed(2)
    assert torch.equal(seeded(classifier, x, y), first)
    unseeded = APGD(eps=0.03, steps=3, seed=None)
    torch.manual_seed(0)
    a = unseeded(classifier, x, y)
    torch.manual_seed(0)
    assert torch.equal(unseeded(classifier, x, y), a)
    assert not torch.equal(unseeded(classifier, x, y), a)


def test_result_is_fooled_or_the_best_point(classifier, cls_batch):
    """A sample reported fooled comes back misclassified; the others at a loss >= the clean one."""
    x, y = cls_batch
    x_adv = APGD(eps=0.05, steps=10)(classifier, x, y)
    with torch.no_grad():
        wrong = classifier(x_adv).argmax(1) != y
    assert wrong.any()
    assert (wrong | (_ce(classifier, x_adv, y) >= _ce(classifier, x, y))).all()
    assert (budget(x_adv, x, "linf") <= 0.05 + 1e-7).all()


def test_restarts_and_targets_run_only_on_points_still_robust(classifier, cls_batch):
    x, _ = cls_batch
    with torch.no_grad():
        y = classifier(x).argmax(1)  # every sample right on the clean input
    seen, handle = _forward_inputs(classifier)
    # eps = 0: nothing can be fooled, so every run attacks all 8 samples.
    APGD(eps=0.0, steps=2, n_restarts=2, loss="dlr-targeted")(classifier, x, y)
    handle.remove()
    # clean forward + (K - 1 = 3 targets) x (2 restarts) x (start + 2 steps)
    assert [s.shape[0] for s in seen] == [8] + [8] * (3 * 2 * 3)

    seen, handle = _forward_inputs(classifier)
    APGD(eps=0.3, steps=3, n_restarts=3)(classifier, x, y)
    handle.remove()
    sizes = [s.shape[0] for s in seen]
    assert sizes[:5] == [8, 8, 8, 8, 8]  # clean, then the first run on all
    assert all(later < 8 for later in sizes[5:])  # later restarts: only the points still robust


def test_clean_misclassified_samples_are_left_alone(classifier, cls_batch):
    x, y = cls_batch
    with torch.no_grad():
        wrong = classifier(x).argmax(1) != y
    assert wrong.any() and not wrong.all()
    x_adv = APGD(eps=0.03, steps=3)(classifier, x, y)
    assert torch.equal(x_adv[wrong], x[wrong])


# --------------------------------------------------------------------------- few classes


@pytest.mark.parametrize(
    ("classes", "loss", "targeted", "substituted"),
    [
        (2, "dlr", False, {"dlr": "margin"}),
        (2, "dlr-targeted", False, {"dlr-targeted": "ce-targeted"}),
        (3, "dlr", False, {}),
        (3, "dlr-targeted", False, {"dlr-targeted": "ce-targeted"}),
        (3, "dlr", True, {"dlr-targeted": "ce-targeted"}),
        (4, "dlr-targeted", False, {}),
    ],
)
def test_few_classes_substitute_the_loss_and_say_so(classes, loss, targeted, substituted, caplog):
    torch.manual_seed(1)
    model = _init_bn(tiny_classifier(classes)).eval()
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(8, 3, 12, 12, generator=g), torch.randint(0, classes, (8,), generator=g)
    attack = APGD(eps=0.03, steps=4, loss=loss, targeted=targeted)
    kwargs = {"target": (y + 1) % classes} if targeted else {}
    with caplog.at_level(logging.WARNING, logger="advmed.attacks.apgd"):
        x_adv = attack(model, x, y, **kwargs)
        attack(model, x, y, **kwargs)  # a second batch: no second warning
    assert attack.substitutions == substituted
    # The report carries what was substituted (advmed.evaluate writes report_notes under the table).
    assert attack.report_notes({}) == [f"loss {a!r} is undefined for this model's classes; {u!r} was used"
                                       for a, u in substituted.items()]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if substituted:
        ((asked, used),) = substituted.items()
        assert len(warnings) == 1
        assert f"'{asked}' needs >= " in warnings[0] and f"has {classes}" in warnings[0]
        assert f"using '{used}' instead" in warnings[0]
    else:
        assert warnings == []
    assert (budget(x_adv, x, "linf") <= 0.03 + 1e-7).all() and not torch.equal(x_adv, x)


# --------------------------------------------------------------------------- bad input


def test_eps_range_depends_on_the_norm():
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\].*got 8 \(did you mean 8/255\?\)"):
        APGD(eps=8)
    with pytest.raises(ValueError, match=r"eps must be >= 0 .*got -1"):
        APGD(eps=-1, norm="L2")
    assert APGD(eps=5.0, norm="L2").eps == 5.0 and APGD(eps=5.0, norm="L2").norm == "l2"
    assert APGD(eps="8/255").eps == pytest.approx(8 / 255)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "L1"}, r"norm must be 'Linf' or 'L2', got 'L1'"),
        ({"loss": "l1"}, r"loss must be one of \('ce', 'dice'\), got 'l1' \(APGD also takes"),
        ({"steps": 0}, r"steps must be an integer >= 1, got 0"),
        ({"n_restarts": 0}, r"n_restarts must be an integer >= 1, got 0"),
        ({"n_target_classes": 0}, r"n_target_classes must be an integer >= 1, got 0"),
        ({"rho": 0}, r"rho must be in \(0, 1\], got 0"),
        ({"fooled_fraction": 1.5}, r"fooled_fraction must be in \(0, 1\], got 1.5"),
        ({"seed": "x"}, r"seed must be an integer or null, got 'x'"),
        ({"loss": "dlr-targeted", "targeted": True, "target_class": 1}, r"APGD-T\) picks its own targets"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        APGD(eps=0.03, **kwargs)


def test_probability_outputs_warn_once(classifier, cls_batch, caplog):
    x, y = cls_batch
    model = nn.Sequential(classifier, nn.Softmax(dim=1))
    attack = APGD(eps=0.03, steps=2)
    with caplog.at_level(logging.WARNING, logger="advmed.attacks.apgd"):
        attack(model, x, y)
        attack(model, x, y)
    assert [r.getMessage() for r in caplog.records if "look like probabilities" in r.getMessage()] == [
        "APGD: the model's outputs look like probabilities (every row in [0, 1], summing to 1); "
        "APGD's losses and its step-size rule need logits: drop the final softmax"
    ]


def test_one_class_and_dlr_on_segmentation_are_clear_errors(cls_batch, segmenter, seg_batch):
    x, y = cls_batch
    with pytest.raises(ValueError, match=r"logits of K >= 2 classes, got K=1"):
        APGD(eps=0.03, steps=2)(tiny_classifier(1).eval(), x, torch.zeros_like(y))
    xs, ys = seg_batch
    with pytest.raises(ValueError, match=r"loss='dlr' is defined on classification logits \(N, K\)"):
        APGD(eps=0.03, steps=2, loss="dlr")(segmenter, xs, ys)


# --------------------------------------------------------------------------- config


def test_config_lists_every_constructor_arg_and_builds():
    import inspect

    cfg = OmegaConf.load(CONFIG_DIR / "attack" / "apgd.yaml")
    args = {n for c in (APGD, Attack) for n in inspect.signature(c.__init__).parameters}
    assert set(cfg) - {"_target_"} == args - {"self", "common"}
    attack = attacks.build_attack(cfg)
    assert type(attack) is APGD and attack.steps == 100 and attack.norm == "linf" and attack.rho == 0.75
    l2 = attacks.build_attack(OmegaConf.merge(cfg, {"norm": "L2", "eps": 0.5, "loss": "dlr-targeted"}))
    assert l2.norm == "l2" and l2.eps == 0.5 and l2.loss == "dlr-targeted"


# --------------------------------------------------------------------------- a trained model: parity, strength


@pytest.fixture(scope="module")
def tinted():
    """The shared tinted-noise classifier (tests/attacks/conftest.py) and 16 held-out images."""
    return tinted_classifier(16)


@pytest.mark.parametrize(
    ("loss", "norm", "eps"), [("ce", "Linf", 0.05), ("dlr", "Linf", 0.05), ("ce", "L2", 0.6), ("dlr", "L2", 0.6)]
)
def test_parity_with_torchattacks(loss, norm, eps, tinted):
    """What is compared with ``torchattacks.APGD`` (3.5, a copy of the reference code) and why.

    Both run 100 steps (the only step counts where the reference's integer checkpoints equal the
    paper's ceil(p_j N)), seed 0, one restart, on the same model and batch. torchattacks seeds
    the global RNG and draws the start for the samples it attacks; ours draws the same numbers
    from a private generator seeded alike, so both start from the same point. Every forward's
    input is recorded (the clean batch, then the start and one iterate per step):

    * up to the first checkpoint (the start and x_1..x_22) the iterates agree: L-inf to 1e-6
      (in practice bit for bit), L2 to 1e-5 (the two compute the norms and the projection's
      factor in another order: float32 rounding); so random start, sign / normalised step,
      momentum, projections and the CE / DLR gradients are the same;
    * afterwards the two may part where the paper and the reference disagree (condition 1 is
      strict and its first interval starts at f(x_0), not 0; condition 2 can hold at the first
      checkpoint; see the APGD docstring), so the runs are compared by outcome: per sample, the
      same success (misclassified at some iterate) and the same best loss within 1e-3 relative;
      and the returned images misclassify the same samples.
    """
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = tinted
    steps = 100
    theirs_seen, handle = _forward_inputs(model)
    theirs = torchattacks.APGD(model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=0, loss=loss, rho=0.75)
    adv_theirs = theirs(x, y)
    handle.remove()
    ours_seen, handle = _forward_inputs(model)
    adv_ours = APGD(eps=eps, norm=norm, steps=steps, loss=loss, seed=0)(model, x, y)
    handle.remove()

    assert len(ours_seen) == len(theirs_seen) == 1 + 1 + steps
    first_check = checkpoints(steps)[0]
    tol = 1e-6 if norm == "Linf" else 1e-5
    for ours_x, theirs_x in zip(ours_seen[: 2 + first_check], theirs_seen[: 2 + first_check]):
        assert (ours_x - theirs_x).abs().max() <= tol

    with torch.no_grad():
        attacked = model(x).argmax(1) == y  # both attack only the samples right on the clean input
        fn = (lambda z: F.cross_entropy(z, y[attacked], reduction="none")) if loss == "ce" else (
            lambda z: dlr_loss(z, y[attacked]))

        def outcome(seen):
            logits = [model(s) for s in seen[1:]]
            best = torch.stack([fn(z) for z in logits]).amax(0)
            fooled = torch.stack([z.argmax(1) != y[attacked] for z in logits]).any(0)
            return best, fooled

        best_ours, fooled_ours = outcome(ours_seen)
        best_theirs, fooled_theirs = outcome(theirs_seen)
        assert torch.equal(fooled_ours, fooled_theirs) and fooled_ours.any() and not fooled_ours.all()
        assert torch.allclose(best_ours, best_theirs, rtol=1e-3, atol=1e-4)
        assert torch.equal(model(adv_ours).argmax(1) != y, model(adv_theirs).argmax(1) != y)


def test_apgd_ce_is_at_least_as_strong_as_pgd(tinted):
    model, x, y = tinted
    for eps in (0.03, 0.05):
        pgd = attacks.PGD(eps=eps, steps=10, seed=0)(model, x, y)
        apgd = APGD(eps=eps, steps=10, seed=0)(model, x, y)
        with torch.no_grad():
            acc_pgd = (model(pgd).argmax(1) == y).float().mean()
            acc_apgd = (model(apgd).argmax(1) == y).float().mean()
        assert 0 < acc_pgd < 1 and acc_apgd <= acc_pgd, (eps, acc_pgd, acc_apgd)


# --------------------------------------------------------------------------- trace


def _count_forwards(model):
    calls = []
    return calls, model.register_forward_pre_hook(lambda m, inp: calls.append(inp[0].shape[0]))


def test_trace_rows_are_the_kept_result_after_each_iteration(tinted):
    model, x, y = tinted
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % NUM_CLASSES  # three samples wrong on the clean input
    steps = 12
    calls, handle = _count_forwards(model)
    x_adv, trace = APGD(eps=0.05, steps=steps, trace=True)(model, x, y)
    handle.remove()
    plain_calls, handle = _count_forwards(model)
    plain = APGD(eps=0.05, steps=steps)(model, x, y)
    handle.remove()
    # Tracing neither changes the attack nor costs a forward: clean + start + one per step.
    assert torch.equal(x_adv, plain) and len(calls) == len(plain_calls) == 1 + 1 + steps
    assert isinstance(trace, attacks.AttackTrace) and trace.steps == steps
    assert trace.pred.shape == (steps, 16) and trace.confidence.shape == (steps, 16) and trace.dice is None
    with torch.no_grad():
        clean, final = model(x).softmax(1), model(x_adv).softmax(1)
    assert torch.equal(trace.clean_pred, clean.argmax(1))
    assert torch.equal(trace.pred[-1], final.argmax(1))
    assert torch.allclose(trace.confidence[-1], final.amax(1), atol=1e-5)
    # The kept result of a fooled sample stays fooled: the success curve never falls.
    fooled = (trace.pred != y).float()
    assert (fooled[1:] >= fooled[:-1]).all() and fooled[-1, 3:].any()
    # Samples wrong on the clean input are left alone: their rows are the clean prediction.
    assert torch.equal(x_adv[:3], x[:3]) and (trace.pred[:, :3] == trace.clean_pred[:3]).all()


def test_trace_counts_every_iteration_of_every_run(classifier, cls_batch):
    x, y = cls_batch
    with torch.no_grad():
        y = classifier(x).argmax(1)  # all right on the clean input
    steps, restarts = 3, 2
    x_adv, trace = APGD(eps=0.3, steps=steps, n_restarts=restarts, loss="dlr-targeted", trace=True)(classifier, x, y)
    # 3 targets (K - 1) x 2 restarts x 3 steps, runs skipped once every sample is fooled padded.
    assert trace.steps == 3 * restarts * steps and trace.pred.shape == (18, 8)
    with torch.no_grad():
        assert torch.equal(trace.pred[-1], classifier(x_adv).argmax(1))


def test_trace_row_j_is_the_highest_loss_point_after_step_j(segmenter, seg_batch):
    """Segmentation, no image fully fooled (fooled_fraction 1): the kept result after iteration j
    is the highest-loss point among the clean input, the start and the first j iterates; row j
    holds its scores, replayed here from every forward's output."""
    x, y = seg_batch
    outputs = []
    handle = segmenter.register_forward_hook(lambda m, inp, out: outputs.append(out.detach()))
    x_adv, trace = APGD(eps=0.05, steps=8, trace=True)(segmenter, x, y)
    handle.remove()
    assert len(outputs) == 1 + 1 + 8  # clean, start, one per step
    losses = torch.stack([F.cross_entropy(z, y, reduction="none").flatten(1).mean(1) for z in outputs])
    best = torch.zeros(4, dtype=torch.long)  # the clean input
    for j in range(1, 10):
        best = torch.where(losses[j] > losses[best, torch.arange(4)], j, best)
        if j >= 2:  # row j - 2 follows iteration j - 1
            kept = torch.stack([outputs[b][i] for i, b in enumerate(best.tolist())])
            dice, acc = segmentation_scores(kept.argmax(1), y, 3)
            assert torch.equal(trace.dice[j - 2], dice) and torch.equal(trace.pixel_acc[j - 2], acc), j
    assert len(set(trace.pixel_acc[:, 0].tolist())) > 1  # the rows do change


def test_trace_for_segmentation_scores_the_returned_images(segmenter, seg_batch):
    x, y = seg_batch
    x_adv, trace = APGD(eps=0.05, steps=5, n_restarts=2, trace=True)(segmenter, x, y)
    assert trace.pred is None and trace.dice.shape == (10, 4) and trace.pixel_acc.shape == (10, 4)
    with torch.no_grad():
        dice, acc = segmentation_scores(segmenter(x_adv).argmax(1), y, 3)
        clean_dice, clean_acc = segmentation_scores(segmenter(x).argmax(1), y, 3)
    assert torch.allclose(trace.dice[-1], dice) and torch.allclose(trace.pixel_acc[-1], acc)
    assert torch.allclose(trace.clean_dice, clean_dice) and torch.allclose(trace.clean_pixel_acc, clean_acc)


# --------------------------------------------------------------------------- EOT


class NoisyModel(nn.Module):
    """A randomised defence: Gaussian noise on the input inside forward, from the global RNG."""

    def __init__(self, model, sigma=0.1):
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x):
        return self.model(x + self.sigma * torch.randn_like(x))


def test_eot_gradient_is_the_mean_of_single_draws(classifier, cls_batch):
    x, y = cls_batch
    model = NoisyModel(classifier)

    def loss(z):
        return F.cross_entropy(z, y, reduction="none")

    torch.manual_seed(7)
    logits, _, averaged = loss_and_gradient(model, x, loss, eot_iter=4)
    torch.manual_seed(7)  # the same draws, one pass at a time
    singles = [loss_and_gradient(model, x, loss)[2] for _ in range(4)]
    assert torch.allclose(averaged, torch.stack(singles).mean(0), atol=1e-7)
    torch.manual_seed(7)
    for _ in range(3):
        torch.randn_like(x)
    with torch.no_grad():  # logits and loss: those of the last pass (as the reference)
        assert torch.allclose(logits, classifier(x + 0.1 * torch.randn_like(x)), atol=1e-6)

    def spread(eot_iter):
        torch.manual_seed(0)
        grads = torch.stack([loss_and_gradient(model, x, loss, eot_iter=eot_iter)[2] for _ in range(24)])
        return grads.var(0).sum()

    assert spread(8) < spread(1) / 4  # the variance of a mean of 8 draws: about 1/8


def test_eot_costs_passes_and_changes_nothing_on_a_deterministic_model(classifier, cls_batch):
    x, y = cls_batch
    calls, handle = _count_forwards(classifier)
    twice = APGD(eps=0.05, steps=4, eot_iter=2)(classifier, x, y)
    handle.remove()
    assert len(calls) == 1 + 2 * (1 + 4)  # clean, then two passes for the start and each step
    assert torch.equal(twice, APGD(eps=0.05, steps=4)(classifier, x, y))  # (g + g) / 2 == g exactly
    with pytest.raises(ValueError, match=r"eot_iter must be an integer >= 1, got 0"):
        APGD(eps=0.03, eot_iter=0)


# --------------------------------------------------------------------------- early stop


@pytest.mark.parametrize("loss", ["ce", "dlr-targeted"])
def test_early_stop_fools_the_same_samples_with_fewer_passes(loss):
    model, x, y = tinted_classifier(64)
    rows_seen = []
    handle = model.register_forward_pre_hook(lambda m, inp: rows_seen.append(inp[0].shape[0]))
    try:
        results = {}
        for early_stop in (False, True):
            rows_seen.clear()
            x_adv = APGD(eps=0.04, steps=20, loss=loss, n_target_classes=3, early_stop=early_stop)(model, x, y)
            with torch.no_grad():
                results[early_stop] = (x_adv, model(x_adv).argmax(1) != y, sum(rows_seen))
    finally:
        handle.remove()
    (full, fooled_full, rows_full), (short, fooled_short, rows_short) = results[False], results[True]
    assert 0 < int(fooled_full.sum()) < len(y)  # a setting where some samples resist: the test can tell
    # Each sample's run is independent of the others', so retiring the fooled ones changes nobody's fate ...
    assert torch.equal(fooled_short, fooled_full)
    # ... nor the robust samples' results (same iterates; only the batch they were computed in is smaller) ...
    assert torch.allclose(short[~fooled_full], full[~fooled_full], atol=1e-6)
    # ... it only saves the passes a fooled sample would have made after it was fooled.
    assert rows_short < rows_full
    assert (short - x).abs().amax() <= 0.04 + 1e-6


def test_without_early_stop_every_sample_iterates_to_the_end():
    model, x, y = tinted_classifier(64)
    rows_seen = []
    handle = model.register_forward_pre_hook(lambda m, inp: rows_seen.append(inp[0].shape[0]))
    try:
        APGD(eps=0.04, steps=20)(model, x, y)
    finally:
        handle.remove()
    correct = int((model(x).argmax(1) == y).sum())
    # the clean prediction (all), then the start and 20 iterations on every correctly classified sample
    assert rows_seen == [len(y)] + [correct] * 21
