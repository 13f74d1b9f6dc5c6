"""``trace=True``: per-step predictions from the forwards the attack computes anyway, and
per-sample early stopping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import advmed.attacks as attacks
from advmed.attacks.core.trace import segmentation_scores

EPS, ALPHA, K = 0.03, 0.01, 5
ITERATIVE = [attacks.BIM, attacks.PGD, attacks.PGDL2]


def _make(cls, steps, **kwargs):
    """Same seed and explicit alpha for every length, as the trace equality needs."""
    if cls is not attacks.BIM:
        kwargs.setdefault("seed", 0)
    if cls is attacks.PGDL2:
        return cls(eps=0.5, alpha=0.15, steps=steps, **kwargs)
    return cls(eps=EPS, alpha=ALPHA, steps=steps, **kwargs)


class CountingModel(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.model(x)


@pytest.mark.parametrize("cls", ITERATIVE, ids=lambda c: c.__name__)
def test_trace_fields_for_classification(cls, classifier, cls_batch):
    x, y = cls_batch
    x_adv, trace = _make(cls, K, trace=True)(classifier, x, y)
    assert isinstance(trace, attacks.AttackTrace) and trace.steps == K
    assert trace.pred.shape == (K, 8) and trace.pred.dtype == torch.int64
    assert trace.confidence.shape == (K, 8) and trace.confidence.dtype == torch.float32
    assert trace.dice is None and trace.pixel_acc is None
    with torch.no_grad():
        clean, final = classifier(x).softmax(1), classifier(x_adv).softmax(1)
    assert torch.equal(trace.clean_pred, clean.argmax(1))
    assert torch.allclose(trace.clean_confidence, clean.amax(1), atol=1e-6)
    assert torch.equal(trace.pred[-1], final.argmax(1))
    assert torch.allclose(trace.confidence[-1], final.amax(1), atol=1e-6)


@pytest.mark.parametrize("cls", ITERATIVE, ids=lambda c: c.__name__)
def test_trace_step_i_equals_a_separate_i_step_run(cls, classifier, cls_batch):
    x, y = cls_batch
    _, trace = _make(cls, K, trace=True)(classifier, x, y)
    for i in range(1, K + 1):
        with torch.no_grad():
            probs = classifier(_make(cls, i)(classifier, x, y)).softmax(1)
        assert torch.equal(trace.pred[i - 1], probs.argmax(1)), i
        assert torch.allclose(trace.confidence[i - 1], probs.amax(1), atol=1e-5), i


def test_trace_for_segmentation(segmenter, seg_batch):
    x, y = seg_batch
    _, trace = attacks.PGD(eps=EPS, alpha=ALPHA, steps=K, seed=0, trace=True)(segmenter, x, y)
    assert trace.pred is None and trace.confidence is None
    assert trace.dice.shape == (K, 4) and trace.pixel_acc.shape == (K, 4)
    for i in (1, K):
        with torch.no_grad():
            pred = segmenter(attacks.PGD(eps=EPS, alpha=ALPHA, steps=i, seed=0)(segmenter, x, y)).argmax(1)
        dice, acc = segmentation_scores(pred, y, 3)
        assert torch.allclose(trace.dice[i - 1], dice) and torch.allclose(trace.pixel_acc[i - 1], acc)
    with torch.no_grad():
        clean_dice, clean_acc = segmentation_scores(segmenter(x).argmax(1), y, 3)
    assert torch.allclose(trace.clean_dice, clean_dice) and torch.allclose(trace.clean_pixel_acc, clean_acc)
    assert trace.pixel_acc[-1].mean() < trace.clean_pixel_acc.mean()


def test_segmentation_scores_by_hand():
    y = torch.tensor([[[0, 1], [2, 2]], [[0, 0], [0, 0]], [[0, 0], [0, 0]]])
    pred = torch.tensor([[[0, 1], [2, 0]], [[0, 0], [0, 0]], [[1, 0], [0, 0]]])
    dice, acc = segmentation_scores(pred, y, 3)
    # image 0: class 1 dice 1, class 2 dice 2*1/3; image 1: no foreground -> 1; image 2: class 1 only predicted -> 0
    assert torch.allclose(dice, torch.tensor([(1 + 2 / 3) / 2, 1.0, 0.0]))
    assert torch.allclose(acc, torch.tensor([0.75, 1.0, 0.75]))


@pytest.mark.parametrize("random_start", [False, True])
def test_trace_costs_about_one_extra_forward(random_start, classifier, cls_batch):
    x, y = cls_batch
    model = CountingModel(classifier)
    attacks.PGD(eps=EPS, steps=K, random_start=random_start, trace=True)(model, x, y)
    # K gradient forwards + the last iterate (+ the clean input after a random start).
    assert model.calls == K + 1 + random_start


def test_trace_moves_to_cpu(classifier, cls_batch):
    x, y = cls_batch
    _, trace = attacks.BIM(eps=EPS, steps=2, trace=True)(classifier, x, y)
    assert trace.to("cpu").pred.device.type == "cpu" and trace.to("cpu").dice is None


def test_early_stop_freezes_fooled_samples(classifier, cls_batch):
    x, y = cls_batch
    bim = attacks.BIM(eps=EPS, alpha=ALPHA, steps=K, early_stop=True, trace=True)
    x_adv, trace = bim(classifier, x, y)
    fooled = trace.pred != y  # (K, N)
    first = torch.where(fooled.any(0), fooled.float().argmax(0) + 1, K)
    assert (trace.clean_pred != y).any() and (first < K).any()
    # A sample stops at the first iterate that fools it: equal to a separate run of that length.
    for n in range(x.shape[0]):
        if trace.clean_pred[n] != y[n]:
            assert torch.equal(x_adv[n], x[n])
            continue
        stopped = attacks.BIM(eps=EPS, alpha=ALPHA, steps=int(first[n]))(
            classifier, x[n : n + 1], y[n : n + 1]
        )
        assert torch.allclose(x_adv[n], stopped[0], atol=1e-6)
        assert (trace.pred[first[n] - 1 :, n] == trace.pred[first[n] - 1, n]).all()


def test_early_stop_saves_forwards_when_all_are_fooled(classifier, cls_batch):
    x, y = cls_batch
    with torch.no_grad():
        wrong = (classifier(x).argmax(1) + 1) % 4  # every sample is already "fooled"
    model = CountingModel(classifier)
    x_adv, trace = attacks.PGD(eps=EPS, steps=K, random_start=False, early_stop=True, trace=True)(
        model, x, wrong
    )
    assert model.calls == 1 and torch.equal(x_adv, x) and x_adv.data_ptr() != x.data_ptr()
    assert torch.equal(trace.pred, trace.clean_pred.expand(K, -1))


def test_targeted_early_stop_stops_on_the_target(classifier, cls_batch):
    x, y = cls_batch
    with torch.no_grad():
        target = classifier(x).argmax(1)  # already predicted: nothing to do
    x_adv = attacks.BIM(eps=EPS, steps=K, targeted=True, early_stop=True)(classifier, x, y, target=target)
    assert torch.equal(x_adv, x)


def test_segmentation_early_stop_uses_the_fooled_fraction(segmenter, seg_batch):
    x, y = seg_batch
    with torch.no_grad():
        pred = segmenter(x).argmax(1)
    # Labels agree with the prediction on exactly 40% of each image's pixels.
    labels = (pred + 1) % 3
    labels.view(4, -1)[:, :40] = pred.view(4, -1)[:, :40]
    frozen = attacks.BIM(eps=EPS, steps=2, early_stop=True, fooled_fraction=0.6)(segmenter, x, labels)
    moving = attacks.BIM(eps=EPS, steps=2, early_stop=True, fooled_fraction=0.7)(segmenter, x, labels)
    assert torch.equal(frozen, x) and not torch.equal(moving, x)
