import math

import pytest
import torch

from advmed.metrics import AttackSuccessRate


def test_natively_misclassified_images_are_excluded():
    y = torch.tensor([0, 1, 2, 3])
    clean = torch.tensor([0, 1, 2, 0])  # last one already wrong
    adv = torch.tensor([1, 1, 0, 2])    # flips 2 of the 3 correct ones; the wrong one stays wrong
    metric = AttackSuccessRate()
    metric.update(clean, adv, y)
    assert metric.compute().item() == pytest.approx(2 / 3)


def test_accumulates_over_batches_and_is_nan_when_nothing_is_correct():
    metric = AttackSuccessRate()
    metric.update(torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([0, 0]))
    metric.update(torch.tensor([1]), torch.tensor([1]), torch.tensor([1]))
    assert metric.compute().item() == pytest.approx(1 / 3)
    empty = AttackSuccessRate()
    empty.update(torch.tensor([1]), torch.tensor([0]), torch.tensor([0]))
    assert math.isnan(empty.compute().item())
