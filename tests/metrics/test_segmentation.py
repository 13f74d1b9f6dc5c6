"""Segmentation scores: an organ absent from a slice counts neither as 0 nor as 1."""

from __future__ import annotations

import math

import pytest
import torch

from advmed.metrics.segmentation import SegmentationScores


def test_scores_count_an_absent_organ_neither_as_zero_nor_as_one():
    scores = SegmentationScores(["background", "a", "b", "c"])
    # Image 1: organ a perfect (2 px); organ b absent from label and prediction.
    # Image 2: organ a absent from both; organ b predicted on 1 px where the label has 2 px.
    target = torch.tensor([[[1, 1], [0, 0]], [[2, 2], [0, 0]]])
    pred = torch.tensor([[[1, 1], [0, 0]], [[2, 0], [0, 0]]])
    scores.update(pred, target)
    out = scores.compute()
    assert out["dice_a"].item() == pytest.approx(1.0)  # not dragged down by image 2
    assert out["dice_b"].item() == pytest.approx(2 * 1 / (2 * 1 + 0 + 1))  # not lifted by image 1
    assert out["iou_b"].item() == pytest.approx(0.5)
    assert math.isnan(out["dice_c"].item()) and math.isnan(out["iou_c"].item())  # absent everywhere
    assert out["dice"].item() == pytest.approx((1.0 + 2 / 3) / 2)  # mean over the organs that exist
    assert out["pixel_acc"].item() == pytest.approx(7 / 8)  # one of the 8 pixels wrong, background counted
    scores.reset()
    scores.update(target, target)
    assert scores.compute()["dice"].item() == pytest.approx(1.0)


def test_pixel_accuracy_pools_the_pixels_of_every_batch():
    scores = SegmentationScores(["background", "a"])
    scores.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2, dtype=torch.long))  # 0 of 4 right
    scores.update(torch.ones(3, 2, 2, dtype=torch.long), torch.ones(3, 2, 2, dtype=torch.long))   # 12 of 12
    assert scores.compute()["pixel_acc"].item() == pytest.approx(12 / 16)  # not the mean of the batches' 0 and 1
