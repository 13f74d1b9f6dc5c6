"""PSNR / SSIM of super-resolution outputs and their bicubic baseline, checked on images whose
scores follow by hand; and the CSV + markdown report."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from advmed.metrics.image_quality import (
    PSNR_CAP_DB,
    SuperResolutionScores,
    capped_psnr,
    write_quality_report,
)

C1, C2 = 0.01**2, 0.03**2  # SSIM's constants for data_range 1 (Wang et al. 2004, eq. 13)


def constant(value: float, n: int = 1) -> torch.Tensor:
    return torch.full((n, 3, 16, 16), value)


def test_identical_images_give_the_capped_psnr_and_ssim_one():
    target = torch.rand(2, 3, 16, 16)
    scores = SuperResolutionScores()
    scores.update(target.clone(), target, baseline=target.clone())
    out = scores.compute()
    assert PSNR_CAP_DB == 100.0
    assert out["psnr"] == 100.0 and out["bicubic_psnr"] == 100.0  # not inf
    assert out["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_psnr_is_the_mean_of_per_image_values_computed_by_hand():
    target = constant(0.0, 2)
    prediction = torch.cat([constant(0.1), constant(0.01)])  # MSE 1e-2 and 1e-4
    per_image = capped_psnr(prediction, target)
    assert per_image.tolist() == pytest.approx([10 * math.log10(1 / 1e-2), 10 * math.log10(1 / 1e-4)])
    scores = SuperResolutionScores()
    scores.update(prediction, target, baseline=prediction)
    assert scores.compute()["psnr"] == pytest.approx(30.0)  # (20 + 40) / 2, not PSNR of the mean MSE (22.97)


def test_model_and_bicubic_columns_are_reported_separately():
    # Constant images: every SSIM window sees means a, b and no variance, so
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1) exactly.
    target, model, baseline = constant(0.5, 2), constant(0.5, 2), constant(0.6, 2)
    scores = SuperResolutionScores()
    scores.update(model, target, baseline=baseline)
    out = scores.compute()
    assert set(out) == {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"}
    assert out["psnr"] == PSNR_CAP_DB and out["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert out["bicubic_psnr"] == pytest.approx(10 * math.log10(1 / 0.1**2))
    assert out["bicubic_ssim"] == pytest.approx((2 * 0.5 * 0.6 + C1) / (0.5**2 + 0.6**2 + C1), abs=1e-5)
    scores.reset()
    assert all(math.isnan(value) for value in scores.compute().values())
    named = SuperResolutionScores(baseline_name="nearest")
    named.update(model, target, baseline=baseline)
    assert named.compute()["nearest_psnr"] == pytest.approx(20.0)


@pytest.mark.parametrize(
    ("prediction", "baseline", "message"),
    [
        (constant(0.5)[..., :8, :8], constant(0.5), r"prediction and target must have the same shape"),
        (constant(0.5), constant(0.5)[..., :8], r"bicubic and target must have the same shape"),
        (constant(1.5), constant(0.5), r"prediction must lie in \[0, 1\]; got values in \[1.5, 1.5\]"),
        (constant(0.5), constant(-0.1), r"bicubic must lie in \[0, 1\]"),
        (torch.full((1, 3, 16, 16), 128, dtype=torch.uint8), constant(0.5), "float images"),
    ],
)
def test_bad_pairs_are_refused(prediction, baseline, message):
    with pytest.raises(ValueError, match=message):
        SuperResolutionScores().update(prediction, constant(0.5), baseline=baseline)


def test_report_is_written_as_csv_and_markdown(tmp_path):
    rows = [
        {"model": "srgan", "psnr": torch.tensor(30.75), "ssim": 0.93},
        {"model": "stylegan2", "fid": 16.77, "num_real": 18000},
    ]
    csv_path, md_path = write_quality_report(tmp_path / "quality", rows)
    assert (csv_path.name, md_path.name) == ("quality.csv", "quality.md")
    with csv_path.open() as f:
        table = list(csv.reader(f))
    assert table == [
        ["model", "psnr", "ssim", "fid", "num_real"],
        ["srgan", "30.75", "0.93", "", ""],
        ["stylegan2", "", "", "16.77", "18000"],
    ]
    markdown = md_path.read_text().splitlines()
    assert markdown[0] == "| model | psnr | ssim | fid | num_real |"
    assert markdown[2] == "| srgan | 30.7500 | 0.9300 |  |  |"
    with pytest.raises(ValueError, match="no rows to write"):
        write_quality_report(tmp_path / "empty", [])
