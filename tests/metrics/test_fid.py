"""FID per class and overall, checked against eq. 2 computed by hand; Inception weights only from local files.

The tests inject a flattening feature extractor, so the features are the pixels themselves and
the expected FID follows from the images with numpy / scipy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from advmed.metrics.fid import (
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    PYTORCH_FID_WEIGHTS_FILE,
    ClassConditionalFID,
    InceptionV3Features,
    resolve_inception_weights,
    to_uint8_rgb,
)

SHAPE = (2, 2, 2)  # 8 "features" per image
SHIFT = torch.tensor([0.2, -0.1, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0]).reshape(SHAPE)  # ||SHIFT||^2 = 0.06


class Pixels(nn.Module):
    """Features = the image's pixels; counts the images it sees."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += images.shape[0]
        return images.flatten(1)


def images(n: int = 64) -> torch.Tensor:
    return torch.rand(n, *SHAPE) * 0.5 + 0.25  # in [0.25, 0.75], room for SHIFT


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(values.clip(min=0))) @ vectors.T


def fid_by_hand(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Eq. 2 through the symmetric form Tr((C C_w)^1/2) = Tr((C^1/2 C_w C^1/2)^1/2) (torchmetrics
    instead sums the square roots of the eigenvalues of C C_w)."""
    a, b = real.flatten(1).double().numpy(), fake.flatten(1).double().numpy()
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _psd_sqrt(ca)
    trace_root = np.trace(_psd_sqrt(root_a @ cb @ root_a))
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb) - 2 * trace_root)


def test_identical_sets_give_zero_and_a_shift_gives_its_squared_norm():
    fid = ClassConditionalFID(["all"], feature_extractor=Pixels())
    real = images()
    labels = torch.zeros(64, dtype=torch.long)
    fid.update(real, labels, real=True)
    fid.update(real, labels, real=False)
    assert abs(fid.compute()["fid"]) < 1e-3
    fid.reset()
    fid.update(real, labels, real=True)
    fid.update(real + SHIFT, labels, real=False)  # same covariance: the trace term of eq. 2 vanishes
    assert fid.compute()["fid"] == pytest.approx(0.06, abs=1e-6)


def test_trace_term_matches_the_closed_form_for_scaled_features():
    # Generated = real / 2: m' = m / 2, C' = C / 4, (C C')^(1/2) = C / 2, so
    # FID = ||m / 2||^2 + Tr(C + C/4 - C) = (||m||^2 + Tr C) / 4.
    real = images()
    fid = ClassConditionalFID(["all"], feature_extractor=Pixels())
    labels = torch.zeros(64, dtype=torch.long)
    fid.update(real, labels, real=True)
    fid.update(real / 2, labels, real=False)
    x = real.flatten(1).double().numpy()
    expected = ((x.mean(0) ** 2).sum() + np.trace(np.cov(x, rowvar=False))) / 4
    assert fid.compute()["fid"] == pytest.approx(expected, rel=1e-6)


def test_per_class_fid_separates_the_shifted_class_and_overall_pools_all_images():
    extractor = Pixels()
    fid = ClassConditionalFID(["a", "b"], feature_extractor=extractor)
    real_a, real_b = images(), images()
    fake_a, fake_b = real_a, real_b + SHIFT  # class b is off, class a is perfect
    labels = torch.tensor([0] * 64 + [1] * 64)
    order = torch.randperm(128)  # classes interleaved within the batches
    real, fake = torch.cat([real_a, real_b])[order], torch.cat([fake_a, fake_b])[order]
    for chunk in torch.split(torch.arange(128), 40):  # several batches of mixed classes
        fid.update(real[chunk], labels[order][chunk], real=True)
        fid.update(fake[chunk], labels[order][chunk], real=False)
    out = fid.compute()
    assert abs(out["fid_a"]) < 1e-3
    assert out["fid_b"] == pytest.approx(0.06, abs=1e-6)
    pooled = fid_by_hand(torch.cat([real_a, real_b]), torch.cat([fake_a, fake_b]))
    assert out["fid"] == pytest.approx(pooled, rel=1e-5)
    assert out["fid"] != pytest.approx((out["fid_a"] + out["fid_b"]) / 2, rel=1e-2)  # pooled, not averaged
    assert (out["num_real"], out["num_generated"]) == (128, 128)
    assert (out["num_real_a"], out["num_generated_b"]) == (64, 64)
    assert out["feature_extractor"] == "Pixels"
    assert extractor.seen == 256  # each image's features extracted once for its class and the pool


def test_a_class_with_too_few_images_is_nan_and_reset_forgets_or_keeps_the_real_set():
    fid = ClassConditionalFID(["a", "b"], feature_extractor=Pixels(), reset_real_features=False)
    real = images(10)
    fid.update(real, torch.tensor([0] * 9 + [1]), real=True)
    fid.update(real, torch.tensor([0] * 9 + [1]), real=False)
    out = fid.compute()
    assert math.isnan(out["fid_b"]) and (out["num_real_b"], out["num_generated_b"]) == (1, 1)
    assert not math.isnan(out["fid_a"])
    fid.reset()
    out = fid.compute()
    assert (out["num_real_a"], out["num_generated_a"]) == (9, 0)  # real statistics kept
    assert math.isnan(out["fid"])
    plain = ClassConditionalFID(["a"], feature_extractor=Pixels())
    plain.update(real, torch.zeros(10, dtype=torch.long), real=True)
    plain.reset()
    assert plain.compute()["num_real"] == 0


def test_name_and_feature_count_can_be_given():
    fid = ClassConditionalFID(["a"], feature_extractor=nn.Flatten(), num_features=8, feature_extractor_name="flat-8")
    real = images(4)
    fid.update(real, torch.zeros(4, dtype=torch.long), real=True)
    fid.update(real, torch.zeros(4, dtype=torch.long), real=False)
    out = fid.compute()
    assert out["feature_extractor"] == "flat-8" and abs(out["fid"]) < 1e-3
    fid.train()  # e.g. a LightningModule entering its training loop
    assert fid.training and not fid.feature_extractor.training


@pytest.mark.parametrize(
    ("images_", "labels", "message"),
    [
        (torch.rand(4, *SHAPE) + 0.5, torch.zeros(4, dtype=torch.long), "must lie in"),
        ((torch.rand(4, *SHAPE) * 255).to(torch.uint8), torch.zeros(4, dtype=torch.long), "float tensor"),
        (torch.rand(4, *SHAPE), torch.tensor([0, 1, 2, 0]), "label 2 is not a class index"),
        (torch.rand(4, *SHAPE), torch.zeros(3, dtype=torch.long), "shape \\(4,\\)"),
        (torch.rand(4, *SHAPE), torch.zeros(4), "integer class indices"),
    ],
)
def test_bad_batches_are_refused(images_, labels, message):
    fid = ClassConditionalFID(["a", "b"], feature_extractor=Pixels())
    with pytest.raises(ValueError, match=message):
        fid.update(images_, labels, real=True)


def test_bad_construction_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        ClassConditionalFID(["a", "a"], feature_extractor=Pixels())
    with pytest.raises(ValueError, match="num_features=None"):
        ClassConditionalFID(["a"], feature_extractor=nn.Flatten())
    with pytest.raises(ValueError, match="weights_path"):
        ClassConditionalFID(["a"], feature_extractor=Pixels(), weights_path=tmp_path / "w.pth")
    fid = ClassConditionalFID(["a"], feature_extractor=nn.Flatten(), num_features=5)
    with pytest.raises(ValueError, match=r"returned shape \(2, 8\); expected \(2, 5\)"):
        fid.update(torch.rand(2, *SHAPE), torch.zeros(2, dtype=torch.long), real=True)


def test_missing_weights_name_the_file_the_folder_and_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError) as error:
        ClassConditionalFID(["a"])  # the default extractor looks for the weights, never downloads
    message = str(error.value)
    for part in (INCEPTION_WEIGHTS_FILE, PYTORCH_FID_WEIGHTS_FILE, str(folder), INCEPTION_WEIGHTS_URL):
        assert part in message
    assert not folder.exists()  # nothing was fetched
    with pytest.raises(FileNotFoundError, match="elsewhere.pth"):
        resolve_inception_weights(tmp_path / "elsewhere.pth")


def test_weights_are_found_in_the_hub_cache_preferring_torch_fidelity_s_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / PYTORCH_FID_WEIGHTS_FILE).write_bytes(b"")
    assert resolve_inception_weights() == folder / PYTORCH_FID_WEIGHTS_FILE
    (folder / INCEPTION_WEIGHTS_FILE).write_bytes(b"")
    assert resolve_inception_weights() == folder / INCEPTION_WEIGHTS_FILE
    assert resolve_inception_weights(folder / PYTORCH_FID_WEIGHTS_FILE) == folder / PYTORCH_FID_WEIGHTS_FILE


@pytest.fixture(scope="module")
def random_inception_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds randomly initialised Inception weights in pytorch-fid's
    layout (torchvision's Inception3, 1008 classes, no aux head)."""
    from torchvision.models.inception import Inception3

    torch.manual_seed(0)
    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    state = Inception3(num_classes=1008, aux_logits=False, init_weights=False).state_dict()
    torch.save(state, folder / PYTORCH_FID_WEIGHTS_FILE)
    return home, state


def test_inception_features_load_the_cached_file_and_feed_it_uint8_rgb(random_inception_home, monkeypatch):
    home, state = random_inception_home
    monkeypatch.setenv("TORCH_HOME", str(home))
    extractor = InceptionV3Features()
    loaded = extractor.network.state_dict()
    assert torch.equal(loaded["fc.weight"], state["fc.weight"])
    assert torch.equal(loaded["Mixed_7c.branch_pool.conv.weight"], state["Mixed_7c.branch_pool.conv.weight"])
    assert PYTORCH_FID_WEIGHTS_FILE in extractor.description and "TF1 bilinear" in extractor.description
    seen = []  # a spy instead of the 299 px forward pass (seconds on CPU; see the slow test below)
    monkeypatch.setattr(extractor.network, "forward", lambda x: seen.append(x) or torch.zeros(len(x), 2048))
    grey = torch.rand(2, 1, 16, 16)
    assert extractor(grey).shape == (2, 2048)
    assert torch.equal(seen[0], to_uint8_rgb(grey)) and seen[0].shape == (2, 3, 16, 16)
    fid = ClassConditionalFID(["a"], feature_extractor=extractor)
    assert fid.num_features == 2048 and fid.feature_extractor_name == extractor.description


@pytest.mark.slow
def test_inception_forward_gives_finite_2048_features(random_inception_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(random_inception_home[0]))
    with torch.no_grad():
        features = InceptionV3Features()(torch.rand(1, 3, 16, 16))
    assert features.shape == (1, 2048) and features.dtype == torch.float32 and torch.isfinite(features).all()


def test_inception_input_is_rounded_uint8_rgb():
    grey = torch.tensor([0.0, 0.6 / 255, 1.4 / 255, 1.0]).reshape(1, 1, 2, 2)
    out = to_uint8_rgb(grey)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 2, 2)
    assert out[0, 2].flatten().tolist() == [0, 1, 1, 255]  # rounded, not truncated to [0, 0, 1, 255]
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*got \(1, 2, 2, 2\)"):
        to_uint8_rgb(torch.rand(1, 2, 2, 2))


@pytest.mark.gpu
def test_images_on_another_device_than_the_statistics():
    extractor = nn.Sequential(nn.Flatten(), nn.Linear(8, 8)).cuda()
    fid = ClassConditionalFID(["a"], feature_extractor=extractor, num_features=8)  # statistics on the CPU
    fid.feature_extractor.cuda()
    real = images()
    fid.update(real.cuda(), torch.zeros(64, dtype=torch.long), real=True)
    fid.update(real, torch.zeros(64, dtype=torch.long).cuda(), real=False)
    assert abs(fid.compute()["fid"]) < 1e-3
