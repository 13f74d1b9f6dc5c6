"""Each objective's loss against its formula on hand-worked models, TRADES at beta=0 against
standard training, and the inner loops' contract: eval mode, untouched batch-norm statistics, no
parameter gradients, the training mode restored, x' in [0, 1] and in its budget, bf16 autocast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from advmed.attacks import FGSM, PGD
from advmed.objectives import FGSMRS, MART, PGDAT, TRADES, Mixed, Standard
from advmed.objectives.mixed import mix_adversarial
from tests.objectives.toy import FixedAttack, PixelLinear, SmallBNNet, ce_criterion


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def _hand(x: list[float]) -> list[float]:
    """PixelLinear's probabilities for one pixel: softmax(4 x - 2)."""
    return _softmax([4 * v - 2 for v in x])


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _image(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor(values).reshape(len(values), 3, 1, 1)


X = [[0.2, 0.5, 0.9], [0.7, 0.1, 0.4]]
X_ADV = [[0.25, 0.45, 0.85], [0.65, 0.15, 0.45]]
Y = [2, 1]


def test_standard_is_the_models_loss_on_the_clean_batch():
    out = Standard()(PixelLinear(), _image(X), torch.tensor(Y), ce_criterion)
    expected = sum(-math.log(_hand(x)[y]) for x, y in zip(X, Y)) / 2
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    assert out.terms == {}


def test_pgd_at_trains_on_the_attacked_batch_only():
    attack = FixedAttack(_image(X_ADV))
    out = PGDAT()(PixelLinear(), _image(X), torch.tensor(Y), ce_criterion, attack)
    expected = sum(-math.log(_hand(x)[y]) for x, y in zip(X_ADV, Y)) / 2
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    assert torch.equal(out.logits, PixelLinear()(_image(X_ADV)))  # train/acc on the attacked batch


def test_trades_terms_by_hand(monkeypatch):
    objective = TRADES(beta=6.0)
    monkeypatch.setattr(objective, "perturb", lambda model, x, weight=None: _image(X_ADV))
    out = objective(PixelLinear(), _image(X), torch.tensor(Y), ce_criterion)
    natural = sum(-math.log(_hand(x)[y]) for x, y in zip(X, Y)) / 2
    robust = sum(_kl(_hand(x), _hand(a)) for x, a in zip(X, X_ADV)) / 2
    assert out.terms["natural_loss"].item() == pytest.approx(natural, abs=1e-6)
    assert out.terms["robust_loss"].item() == pytest.approx(robust, abs=1e-7)
    assert out.loss.item() == pytest.approx(natural + 6.0 * robust, abs=1e-6)
    assert torch.equal(out.logits, PixelLinear()(_image(X)))  # train/acc on the clean batch


def test_mart_terms_by_hand():
    attack = FixedAttack(_image(X_ADV))
    out = MART(beta=5.0)(PixelLinear(), _image(X), torch.tensor(Y), ce_criterion, attack)
    adversarial = robust = 0.0
    for x, a, y in zip(X, X_ADV, Y):
        p, q = _hand(x), _hand(a)
        adversarial += -math.log(q[y]) - math.log(1 - max(q[k] for k in range(3) if k != y))
        robust += _kl(p, q) * (1 - p[y])
    assert out.terms["adversarial_loss"].item() == pytest.approx(adversarial / 2, abs=1e-6)
    assert out.terms["robust_loss"].item() == pytest.approx(robust / 2, abs=1e-7)
    assert out.loss.item() == pytest.approx(adversarial / 2 + 5.0 * robust / 2, abs=1e-6)


def test_fgsm_rs_takes_one_step_of_alpha_from_the_uniform_start_on_the_training_loss():
    x, y = _image(X) * 0.5 + 0.25, torch.tensor(Y)  # away from 0 and 1: no clip to the image range
    objective, model = FGSMRS(eps=0.1, alpha=0.05), PixelLinear()  # a step below eps: the start shows through
    torch.manual_seed(3)
    x_adv = objective.perturb(model, x, y, ce_criterion)
    torch.manual_seed(3)
    start = x + torch.empty_like(x).uniform_(-0.1, 0.1)
    # PixelLinear: d CE / d x_k = 4 (p_k - [k == y]): ascending lowers the true class, raises the others.
    grad_sign = torch.ones_like(x)
    grad_sign[torch.arange(2), y] = -1
    assert torch.allclose(x_adv, (start + 0.05 * grad_sign).clamp(x - 0.1, x + 0.1), atol=1e-6)


def test_fgsm_rs_and_n_fgsm_defaults_follow_the_papers():
    rs, noisy = FGSMRS(eps=0.04), FGSMRS(eps=0.04, variant="n_fgsm")
    assert (rs.alpha, rs.noise, rs.clip) == (pytest.approx(0.05), 0.04, True)  # Wong et al.: alpha = 1.25 eps
    assert (noisy.alpha, noisy.noise, noisy.clip) == (0.04, 0.08, False)  # de Jorge et al.: k = 2 eps, alpha = eps
    model, x, y = SmallBNNet(), torch.rand(6, 3, 8, 8), torch.randint(0, 3, (6,))
    assert (rs.perturb(model, x, y, ce_criterion) - x).abs().max() <= 0.04 + 1e-6
    away = x * 0.5 + 0.25  # no clip to [0, 1]: N-FGSM's perturbation may exceed eps (up to 3 eps)
    delta = (noisy.perturb(model, away, y, ce_criterion) - away).abs()
    assert delta.max() > 0.04 + 1e-3 and delta.max() <= 0.12 + 1e-6


def test_trades_with_beta_zero_is_standard_training_in_loss_and_gradient():
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 3, (6,))
    standard, trades = SmallBNNet().train(), SmallBNNet().train()
    trades.load_state_dict(standard.state_dict())
    a = Standard()(standard, x, y, ce_criterion)
    b = TRADES(beta=0.0, steps=2)(trades, x, y, ce_criterion)
    assert torch.equal(a.loss, b.loss)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(standard.named_parameters(), trades.parameters()):
        assert torch.equal(p.grad, q.grad), name
    assert b.terms["robust_loss"] > 0  # the KL was there, only weighted by 0


@pytest.mark.parametrize("segmentation", [False, True])
def test_inner_loops_keep_the_contract(segmentation):
    """TRADES's ascent, FGSM-RS's step and the attacks of PGD-AT and MART: batch-norm statistics and
    parameter gradients untouched, the mode of every submodule restored, x' in [0, 1] and the ball."""
    model = SmallBNNet(segmentation=segmentation).train()
    model.body[1].eval()  # a frozen batch norm stays frozen after the call
    x = torch.rand(4, 3, 8, 8)
    y = torch.randint(0, 3, (4, 8, 8) if segmentation else (4,))
    stats = [b.clone() for b in model.buffers()]
    eps = 0.05
    images = {
        "trades": TRADES(eps=eps, steps=3).perturb(model, x),
        "fgsm_rs": FGSMRS(eps=eps).perturb(model, x, y, ce_criterion),
        "pgd_at": PGDAT().training_attack(PGD(eps=eps, steps=3))(model, x, y),
    }
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    assert all(p.grad is None for p in model.parameters())
    assert model.training and model.body[0].training and not model.body[1].training
    for name, x_adv in images.items():
        assert x_adv.dtype == torch.float32 and not x_adv.requires_grad, name
        assert 0 <= x_adv.min() and x_adv.max() <= 1, name
        assert (x_adv - x).abs().max() <= eps + 1e-6, name
        assert (x_adv - x).abs().max() > eps / 2, name  # it moved


@pytest.mark.parametrize("objective", [
    TRADES(steps=2), MART(steps=2), PGDAT(steps=2), FGSMRS(), FGSMRS(variant="n_fgsm"), Mixed(0.5), Standard(),
], ids=lambda o: f"{o.name}-{getattr(o, 'variant', '')}")
def test_every_objective_gives_a_differentiable_loss_under_bf16_autocast(objective):
    model = SmallBNNet().train()
    attack = objective.training_attack(FGSM(eps=0.03)) if isinstance(objective, Mixed) else (
        objective.training_attack(None))
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 3, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what trainer precision=bf16-mixed wraps a step in
        out = objective(model, x, y, ce_criterion, attack)
    assert torch.isfinite(out.loss) and out.loss.requires_grad and model.training
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(torch.isfinite(v) for v in out.terms.values())


def test_mixed_is_the_adv_fraction_code_it_replaces():
    """The step before the objective group: ``torch.cat([attack(model, x[:n], y[:n]), x[n:]])`` then CE."""
    model, copy, attack = SmallBNNet().train(), SmallBNNet().train(), FGSM(eps=0.1)
    copy.load_state_dict(model.state_dict())  # each step updates the batch-norm statistics the next attack sees
    x, y = torch.rand(7, 3, 8, 8), torch.randint(0, 3, (7,))
    n = math.floor(0.5 * 7 + 0.5)
    before = F.cross_entropy(model(torch.cat([attack(model, x[:n], y[:n]), x[n:]])), y)
    assert torch.equal(Mixed(0.5)(copy, x, y, lambda z, t, w: F.cross_entropy(z, t), attack).loss, before)
    assert mix_adversarial(model, attack, x, y, 0.0) is x


@pytest.mark.parametrize("make", [
    lambda: TRADES(steps=2, ignore_index=255),
    lambda: MART(steps=2, ignore_index=255),
    lambda: PGDAT(steps=2, ignore_index=255),
    lambda: FGSMRS(ignore_index=255),
    lambda: Mixed(1.0, ignore_index=255),
    lambda: Standard(ignore_index=255),
], ids=["trades", "mart", "pgd_at", "fgsm_rs", "mixed", "standard"])
def test_per_pixel_objectives_leave_the_ignored_pixels_out(make):
    """Pixels do not interact in PixelLinear: whatever an ignored pixel holds changes no term."""
    y = torch.randint(0, 3, (2, 4, 4))
    y[:, :2] = 255
    x = torch.rand(2, 3, 4, 4)
    other = x.clone()
    other[:, :, :2] = torch.rand(2, 3, 2, 4)  # the ignored pixels hold something else
    outputs = []
    for images in (x, other):
        objective = make()
        attack = objective.training_attack(None if isinstance(objective, TRADES | FGSMRS) else PGD(eps=0.05, steps=2, seed=0))
        torch.manual_seed(0)
        outputs.append(objective(PixelLinear(segmentation=True), images, y, ce_criterion, attack))
    assert torch.isfinite(outputs[0].loss)
    assert outputs[0].loss.item() == pytest.approx(outputs[1].loss.item(), abs=1e-6)
    for name, value in outputs[0].terms.items():
        assert value.item() == pytest.approx(outputs[1].terms[name].item(), abs=1e-6), name


def test_the_training_attack_gets_the_ignore_mask():
    attack = FixedAttack(torch.rand(1, 3, 2, 2))
    y = torch.tensor([[[1, 255], [2, 0]]])
    PGDAT(ignore_index=255)(PixelLinear(segmentation=True), torch.rand(1, 3, 2, 2), y, ce_criterion, attack)
    assert attack.calls[0]["mask"].tolist() == [[[True, False], [True, True]]]
    assert attack.calls[0]["y"].tolist() == [[[1, 0], [2, 0]]]  # a valid class where the mask is off


@pytest.mark.parametrize("objective", [TRADES(steps=2), MART(steps=2), PGDAT(steps=2), FGSMRS(), Mixed(0.5)],
                         ids=lambda o: o.name)
def test_a_nan_pixel_gives_a_nonfinite_loss_not_an_attack_error(objective):
    """The training attack refuses a NaN image with a ValueError; the objectives pass it on, so that
    ``nonfinite_loss`` (stop naming the step, or skip the batch) decides."""
    x = torch.rand(4, 3, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    attack = objective.training_attack(FGSM(eps=0.03) if isinstance(objective, Mixed) else None)
    out = objective(SmallBNNet().train(), x, torch.randint(0, 3, (4,)), ce_criterion, attack)
    assert not torch.isfinite(out.loss)
