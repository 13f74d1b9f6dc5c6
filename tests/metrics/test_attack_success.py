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


def test_targeted_success_counts_only_moves_to_the_target_among_other_classes():
    y = torch.tensor([0, 0, 1, 1, 2, 1])
    clean = torch.tensor([0, 0, 1, 1, 2, 0])  # last one natively wrong
    adv = torch.tensor([0, 1, 0, 2, 0, 0])    # class-0 images are not eligible; 2 of 3 others reach 0
    metric = AttackSuccessRate()
    metric.update(clean, adv, y, attack_target=torch.zeros_like(y))
    assert metric.compute().item() == pytest.approx(2 / 3)
    # Untargeted, the same predictions count every flip of every correct image.
    untargeted = AttackSuccessRate()
    untargeted.update(clean, adv, y)
    assert untargeted.compute().item() == pytest.approx(4 / 5)
