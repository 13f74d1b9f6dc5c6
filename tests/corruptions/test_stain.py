"""H&E stain shifts (advmed.corruptions.stain*): HED jitter against scikit-image, Macenko and Reinhard
against torchstain's NumPy backend, severities, determinism, the augmentation, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import hed2rgb, rgb2hed
from torch import nn
from torchstain.numpy.normalizers.macenko import NumpyMacenkoNormalizer
from torchstain.numpy.normalizers.reinhard import NumpyReinhardNormalizer

from advmed.corruptions.colour_deconvolution import RGB_FROM_HED, rgb_to_hed
from advmed.corruptions.stain import STAIN_SHIFT_NAMES, RandomStainShift, stain_shifts
from advmed.corruptions.stain_jitter import (
    HED_JITTER_SIGMAS,
    SKIMAGE_HED_UNIT,
    HEDJitter,
    compose_stains,
    draw_jitter,
    jitter_stains,
    stain_densities,
)
from advmed.corruptions.stain_normalisation import (
    MACENKO_MAX_CONCENTRATIONS,
    MACENKO_STAIN_MATRIX,
    NORMALISATION_WEIGHTS,
    MacenkoNormalisation,
    ReinhardNormalisation,
    default_reference_tile,
    fit_macenko,
    fit_reinhard,
    macenko_normalise,
    reinhard_normalise,
)
from advmed.data.histology.synthetic_histology import generate_histology

# The documented severity tables (STAIN_NOTES.md): a change to the code must change the docs too.
DOCUMENTED_SIGMAS = (0.02, 0.05, 0.1, 0.15, 0.2)
DOCUMENTED_WEIGHTS = (0.2, 0.4, 0.6, 0.8, 1.0)
# Agreement with torchstain's NumPy backend, in 0..255 units: it truncates to uint8, so ours (float,
# float32 arithmetic) lies in [numpy, numpy + 1] up to this rounding slack.
TORCHSTAIN_SLACK = 0.01


@pytest.fixture(scope="module")
def tiles_uint8() -> torch.Tensor:
    """The project's synthetic H&E tiles, two of each of the nine classes, uint8 (18, 3, 48, 48)."""
    return generate_histology(0, "test", torch.arange(18), 48)


@pytest.fixture(scope="module")
def tiles(tiles_uint8) -> torch.Tensor:
    return tiles_uint8.float() / 255


@pytest.fixture(scope="module")
def reference_uint8() -> torch.Tensor:
    """Another 'lab': a synthetic tumour tile from another seed (HWC uint8 for torchstain)."""
    return generate_histology(3, "train", torch.tensor([8]), 96)[0]


def stained(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    """RGB images composed from H, E, D densities in [0.3, 1.2] OD: inside the HED cone, and far
    enough from 0 that jitter up to sigma 0.2 neither clips at white nor leaves it."""
    generator = torch.Generator().manual_seed(seed)
    densities = 0.3 + 0.9 * torch.rand(n, 3, size, size, generator=generator, dtype=torch.float64)
    return compose_stains(densities)


def as_hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- HED jitter
def test_stain_densities_are_skimage_rgb2hed_in_od_units(tiles):
    densities = stain_densities(tiles.double())
    expected = np.stack([rgb2hed(as_hwc(image.double())) for image in tiles])
    ours = (densities.clamp_min(0) / SKIMAGE_HED_UNIT).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-9)
    # ... and the project's own deconvolution (the SNAP attack's) says the same.
    torch.testing.assert_close(densities.clamp_min(0) / SKIMAGE_HED_UNIT, rgb_to_hed(tiles.double()), atol=1e-9, rtol=0)


def test_compose_stains_is_skimage_hed2rgb(tiles):
    hed = np.stack([rgb2hed(as_hwc(image.double())) for image in tiles[:4]])
    expected = np.stack([hed2rgb(image) for image in hed])
    ours = compose_stains(torch.from_numpy(hed).permute(0, 3, 1, 2) * SKIMAGE_HED_UNIT).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-9)


def test_zero_jitter_is_the_identity_even_off_the_hed_cone(tiles):
    n = len(tiles)
    out = jitter_stains(tiles, torch.ones(n, 3), torch.zeros(n, 3))
    torch.testing.assert_close(out, tiles, atol=2e-5, rtol=0)
    # skimage's clamped round trip is not: synthetic grey and mucin pixels have negative densities.
    round_trip = np.stack([hed2rgb(rgb2hed(as_hwc(image.double()))) for image in tiles])
    assert np.abs(round_trip - tiles.permute(0, 2, 3, 1).numpy()).max() > 0.05


def test_jitter_equals_skimage_per_stain_affine_map():
    images = stained(4)
    generator = torch.Generator().manual_seed(5)
    alpha, beta = draw_jitter(torch.full((4,), 0.2, dtype=torch.float64), generator)
    ours = jitter_stains(images, alpha, beta)
    for i, image in enumerate(images):
        hed = rgb2hed(as_hwc(image)) * alpha[i].numpy() + beta[i].numpy() / SKIMAGE_HED_UNIT
        np.testing.assert_allclose(as_hwc(ours[i]), hed2rgb(hed), atol=1e-9)


def recovered_jitter(images: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and stain, the (alpha, beta) of the affine map from input to output densities."""
    source, target = stain_densities(images).flatten(2), stain_densities(out.double()).flatten(2)
    source_c = source - source.mean(-1, keepdim=True)
    alpha = (source_c * (target - target.mean(-1, keepdim=True))).sum(-1) / (source_c**2).sum(-1)
    beta = target.mean(-1) - alpha * source.mean(-1)
    return alpha, beta


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_hed_jitter_draws_the_documented_sigma(severity):
    sigma = DOCUMENTED_SIGMAS[severity - 1]
    assert HED_JITTER_SIGMAS[severity - 1] == sigma
    images = stained(1).expand(400, -1, -1, -1)
    out = HEDJitter()(images.float(), severity, seed=100 + severity)
    alpha, beta = recovered_jitter(images, out)  # (400, 3) each, from the output alone
    uniform_std = sigma / math.sqrt(3)
    for spread in (alpha - 1, beta):
        assert spread.abs().max() <= sigma * 1.01 + 1e-4
        assert spread.abs().max() >= sigma * 0.95  # the whole range is used
        assert abs(spread.std().item() / uniform_std - 1) < 0.08
        assert abs(spread.mean().item()) < 4 * uniform_std / math.sqrt(spread.numel())
    # Each image and each stain gets its own draw.
    assert alpha.std(0).min() > 0.5 * uniform_std and alpha.std(1).mean() > 0.5 * uniform_std


# --------------------------------------------------------------------------- all shifts
@pytest.fixture(scope="module")
def shifts():
    return stain_shifts()


def test_stain_shifts_by_name(shifts):
    assert tuple(shifts) == STAIN_SHIFT_NAMES == ("hed_jitter", "macenko", "reinhard")
    for name, shift in shifts.items():
        assert shift.name == name and shift.modalities == frozenset({"histology"})
    assert list(stain_shifts(["reinhard"])) == ["reinhard"] and list(stain_shifts("macenko")) == ["macenko"]
    with pytest.raises(ValueError, match=r"unknown stain shift\(s\) \['vahadane'\].*hed_jitter"):
        stain_shifts(["vahadane"])


@pytest.mark.parametrize("name", STAIN_SHIFT_NAMES)
def test_severity_grows_the_mean_colour_change(shifts, tiles, name):
    changes = [(shifts[name](tiles, severity, seed=7) - tiles).abs().mean().item() for severity in range(1, 6)]
    assert all(a < b for a, b in zip(changes, changes[1:], strict=False)), changes
    assert changes[0] > 1e-3, changes
    if name != "hed_jitter":  # a blend: the change is the weight times the full change
        np.testing.assert_allclose(np.array(changes) / changes[-1], DOCUMENTED_WEIGHTS, rtol=1e-3)
        assert NORMALISATION_WEIGHTS == DOCUMENTED_WEIGHTS


@pytest.mark.parametrize("name", STAIN_SHIFT_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_contract_and_global_rng_untouched(shifts, tiles, name, dtype):
    images = tiles.to(dtype)
    before = torch.get_rng_state()
    out = shifts[name](images, 5, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert out.shape == images.shape and out.dtype == dtype and out.device == images.device
    assert out.isfinite().all() and out.min() >= 0 and out.max() <= 1


def test_building_the_shifts_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    stain_shifts()
    default_reference_tile()
    assert torch.equal(torch.get_rng_state(), before)


def test_hed_jitter_is_deterministic_per_seed_and_differs_across_seeds(shifts, tiles):
    jitter = shifts["hed_jitter"]
    assert torch.equal(jitter(tiles, 3, seed=11), jitter(tiles, 3, seed=11))
    assert (jitter(tiles, 3, seed=11) - jitter(tiles, 3, seed=12)).abs().mean() > 1e-3
    # Per image: the same image twice in a batch gets two different jitters.
    twice = jitter(tiles[:1].expand(2, -1, -1, -1), 3, seed=11)
    assert (twice[0] - twice[1]).abs().mean() > 1e-3


@pytest.mark.parametrize("name", ["macenko", "reinhard"])
def test_normalisation_draws_nothing(shifts, tiles, name):
    assert torch.equal(shifts[name](tiles, 4, seed=1), shifts[name](tiles, 4, seed=2))


@pytest.mark.parametrize("name", STAIN_SHIFT_NAMES)
def test_cuda_matches_cpu(shifts, tiles, name):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    out = shifts[name](tiles.cuda(), 5, seed=3)
    assert out.device.type == "cuda"
    # eigh's eigenvector signs differ between LAPACK and cuSOLVER: the estimate must not.
    torch.testing.assert_close(out.cpu(), shifts[name](tiles, 5, seed=3), atol=2e-4, rtol=0)


# --------------------------------------------------------------------------- against torchstain
def assert_within_torchstain(ours: torch.Tensor, theirs: np.ndarray) -> None:
    deviation = as_hwc(ours.double()) * 255 - theirs.astype(np.float64)
    assert deviation.min() >= -TORCHSTAIN_SLACK and deviation.max() <= 1 + TORCHSTAIN_SLACK, (
        deviation.min(), deviation.max())


@pytest.mark.parametrize("target", ["published", "fitted"])
def test_macenko_equals_torchstain_numpy(tiles_uint8, tiles, reference_uint8, target):
    numpy_normaliser = NumpyMacenkoNormalizer()
    if target == "published":
        stain_matrix, max_concentrations = MACENKO_STAIN_MATRIX, MACENKO_MAX_CONCENTRATIONS
    else:
        numpy_normaliser.fit(as_hwc(reference_uint8))
        stain_matrix, max_concentrations = fit_macenko(reference_uint8.double() / 255)
        np.testing.assert_allclose(stain_matrix.numpy(), numpy_normaliser.HERef, atol=1e-9)
        np.testing.assert_allclose(max_concentrations.numpy(), numpy_normaliser.maxCRef, atol=1e-9)
    ours, valid = macenko_normalise(tiles, stain_matrix, max_concentrations)
    assert valid.sum() >= len(tiles) - 2  # a faint tile or two may have under 1 % tissue
    for image, normalised, ok in zip(tiles_uint8, ours, valid, strict=True):
        if ok:
            theirs, _, _ = numpy_normaliser.normalize(as_hwc(image), stains=False)
            assert_within_torchstain(normalised, theirs)


def test_reinhard_equals_torchstain_numpy(tiles_uint8, tiles, reference_uint8):
    numpy_normaliser = NumpyReinhardNormalizer()
    numpy_normaliser.fit(as_hwc(reference_uint8))
    means, stds = fit_reinhard(reference_uint8.double() / 255)
    np.testing.assert_allclose(means.numpy(), numpy_normaliser.target_means, atol=1e-4)
    np.testing.assert_allclose(stds.numpy(), numpy_normaliser.target_stds, atol=1e-4)
    ours, valid = reinhard_normalise(tiles, means, stds)
    for image, normalised in zip(tiles_uint8[valid], ours[valid], strict=True):
        assert_within_torchstain(normalised, numpy_normaliser.normalize(as_hwc(image)))


def test_normalising_a_tile_to_itself_preserves_it():
    tile = default_reference_tile()
    macenko = MacenkoNormalisation(tile)(tile[None].float(), 5)[0]
    reinhard = ReinhardNormalisation(tile)(tile[None].float(), 5)[0]
    # Macenko recomposes from two stains with Io = 240 and torchstain's +1: about 1/255 off.
    assert (macenko - tile).abs().mean() < 0.01 and (macenko - tile).abs().max() < 0.03
    assert (reinhard - tile).abs().max() < 1e-4


def test_default_reference_carries_the_published_macenko_target():
    tile = default_reference_tile()
    assert torch.equal(tile, default_reference_tile()) and tile.shape == (3, 256, 256)
    stain_matrix, max_concentrations = fit_macenko(tile)
    cosines = torch.nn.functional.cosine_similarity(stain_matrix, MACENKO_STAIN_MATRIX, dim=0)
    assert cosines.min() > 0.995, cosines
    assert ((max_concentrations / MACENKO_MAX_CONCENTRATIONS - 1).abs() < 0.15).all(), max_concentrations


def test_reference_from_file_equals_reference_from_tensor(tmp_path, reference_uint8, tiles):
    path = tmp_path / "reference.png"
    Image.fromarray(as_hwc(reference_uint8)).save(path)
    from_file = stain_shifts(["macenko", "reinhard"], reference=path)
    from_tensor = stain_shifts(["macenko", "reinhard"], reference=reference_uint8)
    for name in from_file:
        assert torch.equal(from_file[name](tiles, 5), from_tensor[name](tiles, 5))
    # ... and it is a different target from the built-in one.
    assert (from_file["reinhard"](tiles, 5) - stain_shifts(["reinhard"])["reinhard"](tiles, 5)).abs().mean() > 1e-3


# --------------------------------------------------------------------------- degenerate images
@pytest.mark.parametrize("name", ["macenko", "reinhard"])
def test_blank_images_in_a_batch_pass_unchanged(shifts, tiles, name):
    blank = torch.ones(1, 3, 48, 48)  # torchstain: LinAlgError "Eigenvalues did not converge" / NaN
    batch = torch.cat((blank, tiles[:2]))
    out = shifts[name](batch, 5)
    assert out.isfinite().all()
    assert torch.equal(out[0], blank[0])
    assert (out[1:] - tiles[:2]).abs().mean() > 1e-3


@pytest.mark.parametrize("name", ["macenko", "reinhard"])
def test_blank_reference_tile_is_a_clear_error(tmp_path, name):
    path = tmp_path / "blank.png"
    Image.fromarray(np.full((32, 32, 3), 250, np.uint8)).save(path)
    with pytest.raises(ValueError, match=rf"{path}.*only 0 of its 1024 pixels are tissue.*reference=None"):
        stain_shifts([name], reference=path)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", STAIN_SHIFT_NAMES)
def test_non_rgb_images_are_a_clear_error(shifts, name):
    ct = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"stain shifts are defined for H&E \(3-channel RGB\) data, got 1 channel "):
        shifts[name](ct, 1)


@pytest.mark.parametrize("severity", [0, 6, 2.5, True])
def test_severity_outside_one_to_five_is_rejected(shifts, tiles, severity):
    with pytest.raises(ValueError, match=r"must be an integer from 1 to 5"):
        shifts["macenko"](tiles, severity)


def test_missing_reference_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.png does not exist.*RGB image.*reference=None"):
        stain_shifts(reference=tmp_path / "nowhere.png")


def test_greyscale_reference_file(tmp_path, reference_uint8):
    path = tmp_path / "grey.png"
    Image.fromarray(as_hwc(reference_uint8)).convert("L").save(path)
    with pytest.raises(ValueError, match=r"grey\.png is a greyscale image \(mode L\), not RGB.*8-bit RGB"):
        MacenkoNormalisation(path)


def test_rgba_reference_file_only_when_opaque(tmp_path, reference_uint8, tiles):
    rgb = as_hwc(reference_uint8)
    opaque, transparent = tmp_path / "opaque.png", tmp_path / "transparent.png"
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    Image.fromarray(np.concatenate((rgb, alpha), -1), "RGBA").save(opaque)
    alpha[:4, :4] = 0
    Image.fromarray(np.concatenate((rgb, alpha), -1), "RGBA").save(transparent)
    assert torch.equal(ReinhardNormalisation(opaque)(tiles, 5), ReinhardNormalisation(reference_uint8)(tiles, 5))
    with pytest.raises(ValueError, match=r"RGBA with 16 transparent pixels.*flatten it onto white or save it as RGB"):
        ReinhardNormalisation(transparent)


def test_unreadable_reference_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.png cannot be read as an image"):
        MacenkoNormalisation(path)


def test_reference_tensor_must_be_one_rgb_tile():
    with pytest.raises(ValueError, match=r"one RGB tile \(3, H, W\), got \(1, 32, 32\)"):
        MacenkoNormalisation(torch.rand(1, 32, 32))
    with pytest.raises(ValueError, match=r"uint8 or float in \[0, 1\].*divide 8-bit values by 255"):
        ReinhardNormalisation(torch.rand(3, 32, 32) * 255)


# --------------------------------------------------------------------------- augmentation
def test_random_stain_shift_probability_and_identity(tiles):
    images = tiles[:1].expand(400, -1, -1, -1).contiguous()
    assert torch.equal(RandomStainShift(p=0.0, sigma=(0.1, 0.2))(images), images)
    out = RandomStainShift(p=0.5, sigma=(0.05, 0.2))(images)
    changed = (out - images).flatten(1).abs().amax(1) > 0
    assert abs(changed.float().mean().item() - 0.5) < 0.1  # 4 standard errors of a binomial(400, 0.5)
    assert torch.equal(out[~changed], images[~changed])  # untouched images pass bit for bit
    every = RandomStainShift(p=1.0, sigma=(0.05, 0.2))(images)
    assert ((every - images).flatten(1).abs().amax(1) > 1e-3).all()
    assert every.dtype == images.dtype and every.min() >= 0 and every.max() <= 1


def test_random_stain_shift_draws_strength_per_image_from_the_global_rng():
    images = stained(300).float()
    torch.manual_seed(1)
    first = RandomStainShift(p=1.0, sigma=(0.0, 0.2))(images)
    torch.manual_seed(1)
    assert torch.equal(first, RandomStainShift(p=1.0, sigma=(0.0, 0.2))(images))  # seed_everything governs it
    alpha, beta = recovered_jitter(images.double(), first)
    reach = torch.maximum((alpha - 1).abs().amax(1), beta.abs().amax(1))  # a lower bound of each image's sigma
    assert reach.max() <= 0.2 * 1.01 and reach.max() > 0.18
    assert reach.min() < 0.02  # strengths near 0 too: the strength varies per image


def test_random_stain_shift_in_a_kornia_pipeline(tiles):
    import kornia.augmentation as K

    pipeline = nn.Sequential(K.RandomHorizontalFlip(p=0.5), RandomStainShift(p=0.5, sigma=(0.0, 0.05)))
    out = pipeline(tiles)
    assert out.shape == tiles.shape and out.min() >= 0 and out.max() <= 1
    assert "RandomStainShift(p=0.5, sigma=(0.0, 0.05))" in repr(pipeline)


def test_random_stain_shift_rejects_bad_settings_and_grey_batches():
    with pytest.raises(ValueError, match=r"p=1.5 must be a probability"):
        RandomStainShift(p=1.5)
    with pytest.raises(ValueError, match=r"sigma=\(0.3, 0.1\) must be a range"):
        RandomStainShift(sigma=(0.3, 0.1))
    with pytest.raises(ValueError, match=r"sigma=0.1 must be a range \(low, high\)"):
        RandomStainShift(sigma=0.1)
    with pytest.raises(ValueError, match=r"got 1 channel .*RandomStainShift"):
        RandomStainShift()(torch.rand(2, 1, 8, 8))


def test_rgb_from_hed_rows_are_the_ruifrok_vectors():
    # The jitter's stain vectors are the project's (skimage's) Ruifrok & Johnston matrix.
    np.testing.assert_allclose(RGB_FROM_HED.numpy(), [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
