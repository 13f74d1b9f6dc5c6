"""The procedural abdominal CT phantom: determinism, batches, HU per organ, organ absence, patients."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from advmed.data.ct import phantom as ct_phantom
from advmed.data.ct.hu_window import unwindow_hu, window_hu
from advmed.data.ct.phantom import CLASS_NAMES, HU, KIDNEYS, LIVER, PANCREAS, SPLEEN, generate_ct_slices
from advmed.data.ct.phantom_geometry import WHOLE_IMAGE, Patch
from advmed.data.ct.synthetic_ct import SyntheticCTDataModule
from tests.conftest import CONFIG_DIR

ORGANS = {LIVER: "liver", SPLEEN: "spleen", KIDNEYS: "kidneys", PANCREAS: "pancreas"}


def _module(**kwargs) -> SyntheticCTDataModule:
    sizes = {"image_size": 48, "train_size": 20, "val_size": 10, "test_size": 10, "slices_per_volume": 5}
    return SyntheticCTDataModule(**{**sizes, "batch_size": 8, **kwargs})


@pytest.fixture(scope="module")
def phantom():
    """200 test slices (40 patients of 5) at 64 px: HU, labels, z levels."""
    return generate_ct_slices(0, "test", torch.arange(200), 64, slices_per_volume=5)


def _eroded(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood is all in ``mask`` (off the partial-volume edge)."""
    return -F.max_pool2d(-mask[:, None].float(), 3, 1, 1)[:, 0] > 0.5


def test_same_seed_split_index_gives_the_same_slice_however_it_is_asked_for():
    small, large = _module(train_size=7, val_size=3), _module(train_size=30, val_size=12)
    small.setup("fit")
    large.setup("fit")
    assert torch.equal(small.train_set.images, large.train_set.images[:7])
    assert torch.equal(small.train_set.masks, large.train_set.masks[:7])
    assert torch.equal(small.val_set.images, large.val_set.images[:3])
    # alone, out of order and across chunks: the same HU and labels
    picked = torch.tensor([29, 3, 17])
    hu, labels, z = generate_ct_slices(0, "train", picked, 48, slices_per_volume=5)
    all_hu, all_labels, all_z = generate_ct_slices(0, "train", torch.arange(30), 48, slices_per_volume=5)
    assert torch.equal(hu, all_hu[picked]) and torch.equal(labels, all_labels[picked])
    assert torch.equal(z, all_z[picked])
    assert torch.equal(large.train_set.images[picked], (window_hu(hu, 40, 400) * 65535).round().to(torch.int32))


def test_seed_and_split_change_slices():
    hu, labels, _ = generate_ct_slices(0, "train", torch.arange(4), 32)
    for seed, split in ((1, "train"), (0, "val"), (0, "test")):
        other_hu, other_labels, _ = generate_ct_slices(seed, split, torch.arange(4), 32)
        assert not torch.equal(hu, other_hu) and not torch.equal(labels, other_labels)


def test_empty_request_and_negative_indices():
    hu, labels, z = generate_ct_slices(0, "val", torch.arange(0), 40)
    assert (hu.shape, labels.shape, z.shape) == ((0, 1, 40, 40), (0, 40, 40), (0,))
    with pytest.raises(ValueError, match="indices must be non-negative"):
        generate_ct_slices(0, "train", torch.tensor([2, -1]), 32)


def test_batches_through_a_dataloader():
    dm = _module()
    assert (dm.num_classes, dm.class_names, dm.in_channels, dm.image_size) == (5, list(CLASS_NAMES), 1, 48)
    dm.setup("fit")
    assert dm.train_set.images.dtype == torch.int32 and dm.train_set.masks.dtype == torch.uint8
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 48, 48) and x.dtype == torch.float32
    assert y.shape == (8, 48, 48) and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.1
    assert x.min() == 0.0 and x.max() == 1.0  # air and bone lie outside the abdomen window
    assert 0 <= y.min() and y.max() < 5
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (8, 1, 48, 48)
    rgb = _module(in_channels=3)
    rgb.setup("test")
    x, _ = rgb.test_set[0]
    assert x.shape == (3, 48, 48) and torch.equal(x[0], x[2])


def test_organs_have_their_hounsfield_units(phantom):
    """Off the partial-volume edge, each organ's mean HU is its nominal one; kidneys (contrast-
    enhanced cortex) are brighter than the liver, bone brighter than any organ."""
    hu, labels, _ = phantom
    hu = hu[:, 0]
    means = {}
    for organ, name in ORGANS.items():
        inside = _eroded(labels == organ)
        means[name] = hu[inside].mean().item()
        if name != "kidneys":
            assert abs(means[name] - HU[name]) < 25, f"{name}: {means[name]:.0f} HU"
    assert HU["kidney_medulla"] < means["kidneys"] < HU["kidney_cortex"]
    assert means["kidneys"] > means["liver"] + 25
    assert means["spleen"] < means["liver"]
    # per slice, where both are large enough to tell
    for i in range(len(labels)):
        kidney, liver = labels[i] == KIDNEYS, labels[i] == LIVER
        if kidney.sum() > 30 and liver.sum() > 30:
            assert hu[i][kidney].mean() > hu[i][liver].mean()
    # bone (> 300 HU: vertebra, ribs) is in every slice and never labelled
    bone = hu > 300
    assert bone.flatten(1).any(1).all()
    assert not (bone & (labels > 0)).any()
    assert (hu[labels > 0] < 250).all()


def test_windowing_round_trips_inside_the_window():
    dm = _module(window_level=0, window_width=4000, test_size=4)  # a window that clips nothing
    dm.setup("test")
    hu, _, _ = generate_ct_slices(0, "test", torch.arange(4), 48, slices_per_volume=5)
    x = torch.stack([dm.test_set[i][0] for i in range(4)])
    assert (unwindow_hu(x, 0, 4000) - hu).abs().max() < 0.1
    narrow = window_hu(hu, 40, 400)
    assert narrow.min() == 0 and narrow.max() == 1
    assert torch.allclose(narrow[(hu > -160) & (hu < 240)], ((hu + 160) / 400)[(hu > -160) & (hu < 240)])


def test_anatomy_sits_in_radiological_convention(phantom):
    """Liver on the image left (patient right), spleen on the image right and posterior, kidneys
    either side of the midline, posterior; pancreas in front of the kidneys."""
    _, labels, _ = phantom
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")

    def centroid(organ):
        mask = (labels == organ).float()
        return (mask * rows).sum() / mask.sum(), (mask * cols).sum() / mask.sum()

    (liver_r, liver_c), (spleen_r, spleen_c) = centroid(LIVER), centroid(SPLEEN)
    (kidney_r, _), (pancreas_r, _) = centroid(KIDNEYS), centroid(PANCREAS)
    assert liver_c < 28 and spleen_c > 38 and spleen_r > liver_r
    assert kidney_r > 32 and pancreas_r < kidney_r
    left = (labels[..., :32] == KIDNEYS).flatten(1).any(1)
    right = (labels[..., 32:] == KIDNEYS).flatten(1).any(1)
    assert (left & right).float().mean() > 0.4  # two kidneys, one each side


def test_organs_go_absent_in_some_slices_and_vary_in_size(phantom):
    _, labels, z = phantom
    for organ, name in ORGANS.items():
        area = (labels == organ).flatten(1).sum(1).float()
        present = area > 0
        assert 0.05 < 1 - present.float().mean() < 0.6, f"{name} absent from {1 - present.float().mean():.2f}"
        assert area[present].std() / area[present].mean() > 0.3, f"{name} area barely varies"
    # absence follows the level: no spleen low down, no kidneys up at the liver dome
    assert not (labels[z.flatten() > 0.75] == SPLEEN).any()
    assert not (labels[z.flatten() < 0.2] == KIDNEYS).any()
    assert (labels[(z > 0.4) & (z < 0.5)] == PANCREAS).flatten(1).any(1).all()


def test_slices_of_a_patient_share_a_group_and_step_through_z():
    dm = _module(train_size=23, slices_per_volume=5)
    dm.setup("fit")
    train = dm.train_set
    assert torch.equal(train.groups, torch.arange(23) // 5)
    assert train.names[:2] == ["p0000_z000", "p0000_z001"] and train.names[22] == "p0004_z002"
    assert len(set(train.names)) == 23
    _, _, z = generate_ct_slices(0, "train", torch.arange(23), 48, slices_per_volume=5)
    for patient in range(4):
        steps = z[patient * 5 : patient * 5 + 5].diff()
        assert (steps > 0).all() and torch.allclose(steps, steps[0].expand(4), atol=1e-5)
    assert len(set(z[::5].tolist())) == 5  # patients start at their own levels


def test_train_fraction_keeps_whole_patients():
    full = _module(train_size=40, slices_per_volume=5)
    half = _module(train_size=40, slices_per_volume=5, train_fraction=0.5)
    full.setup("fit")
    half.setup("fit")
    kept = torch.unique(half.train_set.groups)
    assert len(kept) == 4 and len(half.train_set) == 20
    for group in kept.tolist():
        assert (half.train_set.groups == group).sum() == 5
    x, y = half.train_set[0]
    name = half.train_set.names[0]
    i = full.train_set.names.index(name)
    assert torch.equal(x, full.train_set[i][0]) and torch.equal(y, full.train_set[i][1])


def test_boxes_hold_every_organ(monkeypatch):
    """Organs are computed in boxes of pixels; with the whole image instead, nothing changes."""
    hu, labels, _ = generate_ct_slices(3, "train", torch.arange(48), 48, slices_per_volume=4)

    def whole_image(self, *rectangle):
        return Patch(self.x, self.y, WHOLE_IMAGE)

    monkeypatch.setattr(ct_phantom._Phantom, "patch", whole_image)
    whole_hu, whole_labels, _ = generate_ct_slices(3, "train", torch.arange(48), 48, slices_per_volume=4)
    assert torch.equal(labels, whole_labels)
    assert (hu - whole_hu).abs().max() < 0.2


def test_geometry_scales_with_the_image_size():
    small = generate_ct_slices(0, "val", torch.arange(24), 32)[1]
    big = generate_ct_slices(0, "val", torch.arange(24), 96)[1]
    for organ in ORGANS:
        a, b = (small == organ).float().mean(), (big == organ).float().mean()
        assert abs(a - b) < 0.01, f"{ORGANS[organ]} covers {a:.3f} at 32 px and {b:.3f} at 96 px"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_width": 0}, "the width must be > 0"),
        ({"window_width": -400}, "the width must be > 0"),
        ({"class_names": ["background", "spleen", "kidneys", "liver", "pancreas"]}, "always has the 5"),
        ({"num_classes": 4}, "always has the 5 classes"),
        ({"in_channels": 2}, "always has the 5 classes"),
        ({"image_size": 24}, "image_size must be at least 32"),
        ({"train_size": 0}, "train_size must be at least 1"),
        ({"val_size": 0}, "val_size must be at least 1"),
        ({"test_size": -1}, "test_size must be at least 1"),
        ({"slices_per_volume": 0}, "slices_per_volume must be at least 1"),
        ({"train_fraction": 0.0}, r"train_fraction must be in \(0, 1\]"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _module(**kwargs)


def test_config_states_every_argument_and_instantiates():
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "synthetic_ct.yaml")
    assert set(cfg) - {"_target_"} == set(inspect.signature(SyntheticCTDataModule).parameters)
    assert list(cfg.class_names) == list(CLASS_NAMES) and cfg.num_classes == len(CLASS_NAMES)
    assert (cfg.image_size, cfg.batch_size, cfg.in_channels) == (128, 16, 1)
    dm = instantiate(OmegaConf.merge(cfg, {"image_size": 32, "train_size": 2, "val_size": 1, "test_size": 3}))
    assert (dm.num_classes, dm.class_names, dm.in_channels, dm.window_level, dm.window_width) == (
        5, list(CLASS_NAMES), 1, 40.0, 400.0,
    )
    dm.setup("test")
    x, y = dm.test_set[2]
    assert x.shape == (1, 32, 32) and y.shape == (32, 32)


def test_the_cached_split_pickles_for_spawned_workers():
    import pickle

    dm = SyntheticCTDataModule(image_size=32, train_size=4, val_size=2, test_size=2)
    dm.setup("test")
    copy = pickle.loads(pickle.dumps(dm.test_set))
    assert all(torch.equal(a, b) for a, b in zip(copy[1], dm.test_set[1]))
