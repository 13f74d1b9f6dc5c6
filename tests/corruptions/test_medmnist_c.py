"""MedMNIST-C's corruptions as advmed shifts (advmed/corruptions/medmnist_c*.py): the parameter
tables against medmnistc's registry, the torch backend against medmnistc pixel for pixel at every
severity, the fixed motion blur against medmnistc's own, seeding and the global RNGs, what every
shift keeps (shape, dtype, range), strength growing with severity, and the errors."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from advmed.corruptions import SEVERITIES, Shift, corruptions_for, optional_deps
from advmed.corruptions import medmnist_c_reference as reference
from advmed.corruptions.medmnist_c import CORRUPTION_CLASSES, MedMNISTCCorruption, to_uint8
from advmed.corruptions.medmnist_c_params import MEDMNIST_C_TABLES, MODALITY_DATASETS
from advmed.corruptions.medmnist_c_torch import TORCH_CORRUPTIONS, _disk_kernel
from advmed.corruptions.motion_blur import MotionBlur

CHANNELS = {"histology": 3, "ct": 1, "xray": 1}
ALL = [(m, n) for m, table in MEDMNIST_C_TABLES.items() for n in table]
WITH_TORCH = [(m, n) for m, n in ALL if MEDMNIST_C_TABLES[m][n].kind in TORCH_CORRUPTIONS]
RANDOM = [(m, n) for m, n in ALL if MEDMNIST_C_TABLES[m][n].kind in reference.RANDOM_KINDS]
INSTALL_IMAGEMAGICK = ("apt-get install libmagickwand-6.q16-6", "conda install -c conda-forge imagemagick",
                       "module load imagemagick", "MAGICK_HOME")


def random_pixels(n: int, channels: int, height: int, width: int | None = None, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width or height, channels), dtype=np.uint8)


def smooth_pixels(n: int, channels: int, size: int, seed: int = 0) -> np.ndarray:
    """Slow sinusoidal gradients (flat-ish regions, where truncation and rounding differences would show)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = [[0.5 + 0.5 * np.sin(2 * np.pi * (xx * rng.uniform(0.3, 1.5) + yy * rng.uniform(0, 0.8)) + rng.uniform(0, 6))
               for _ in range(channels)] for _ in range(n)]
    return np.round(np.asarray(images).transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def as_images(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float [0, 1] (N, C, H, W), exactly MedMNIST-C's pixels after round(255 x)."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255


def textured(channels: int, size: int = 64) -> torch.Tensor:
    """A fixed textured image: smooth gradients plus fine random detail."""
    pixels = 0.6 * smooth_pixels(1, channels, size, seed=3) + 0.4 * random_pixels(1, channels, size, seed=4)
    return as_images(pixels.astype(np.uint8))


@pytest.fixture(scope="module")
def registry():
    """medmnistc's CORRUPTIONS_DS (its import loads ImageMagick through Wand)."""
    pytest.importorskip("medmnistc")
    try:
        from medmnistc.corruptions.registry import CORRUPTIONS_DS
    except ImportError as e:
        pytest.skip(f"medmnistc's registry cannot be imported here: {e}")
    return CORRUPTIONS_DS


# -- the tables -----------------------------------------------------------------------------------------


def test_tables_are_medmnistc_registry(registry):
    for modality, table in MEDMNIST_C_TABLES.items():
        theirs = registry[MODALITY_DATASETS[modality]]
        assert list(table) == list(theirs), modality  # the same corruptions, in MedMNIST-C's order
        for name, spec in table.items():
            assert spec.kind == type(theirs[name]).__name__, (modality, name)
            assert list(spec.params) == list(theirs[name].severity_params)[:5], (modality, name)


def test_corruptions_for_gives_every_corruption_in_order_as_shifts():
    for modality, table in MEDMNIST_C_TABLES.items():
        shifts = corruptions_for(modality)
        assert list(shifts) == list(table)
        for name, shift in shifts.items():
            assert isinstance(shift, Shift) and shift.name == name and shift.modalities == {modality}
    assert len(corruptions_for("histology")) == 11 and len(corruptions_for("ct")) == 13
    assert list(corruptions_for("xray", ["gamma_corr_up", "pixelate", "gamma_corr_up"])) == ["gamma_corr_up", "pixelate"]
    assert list(corruptions_for("ct", "shot_noise")) == ["shot_noise"]
    assert corruptions_for("ct", []) == {}


def test_a_shift_pickles_by_reference():
    shift = corruptions_for("ct", ["gaussian_blur"], backend="medmnistc")["gaussian_blur"]
    copy = pickle.loads(pickle.dumps(shift))
    assert type(copy) is type(shift) is CORRUPTION_CLASSES["ct"]["gaussian_blur"]
    assert type(copy).__name__ == "CtGaussianBlur" and copy.backend == "medmnistc"


# -- torch backend == medmnistc ---------------------------------------------------------------------------


@pytest.mark.parametrize(("modality", "name"), WITH_TORCH, ids=[f"{m}-{n}" for m, n in WITH_TORCH])
def test_torch_backend_gives_medmnistc_pixels_at_every_severity(registry, modality, name):
    channels = CHANNELS[modality]
    images = as_images(np.concatenate([random_pixels(3, channels, 40, seed=1), smooth_pixels(2, channels, 40, seed=2)]))
    ours = corruptions_for(modality, [name], backend="torch")[name]
    theirs = corruptions_for(modality, [name], backend="medmnistc")[name]
    assert ours.implementation() == "torch" and theirs.implementation() == "medmnistc"
    for severity in SEVERITIES:
        want, got = theirs(images, severity, seed=0), ours(images, severity, seed=0)
        assert not torch.equal(want, images), (name, severity)  # it corrupts
        diff = (to_uint8(got).int() - to_uint8(want).int()).abs()
        assert diff.max() == 0, f"{modality} {name} severity {severity}: {int((diff > 0).sum())} pixels differ"


@pytest.mark.parametrize("name", ["pixelate", "defocus_blur", "contrast_down", "saturate"])
def test_torch_backend_gives_medmnistc_pixels_on_non_square_images(registry, name):
    images = as_images(random_pixels(2, 3, 36, 50, seed=5))
    ours = corruptions_for("histology", [name], backend="torch")[name]
    theirs = corruptions_for("histology", [name], backend="medmnistc")[name]
    for severity in (1, 5):
        assert torch.equal(ours(images, severity), theirs(images, severity)), (name, severity)


def test_ct_gaussian_blur_non_square(registry):
    images = as_images(random_pixels(2, 1, 30, 47, seed=6))
    ours, theirs = (corruptions_for("ct", ["gaussian_blur"], backend=b)["gaussian_blur"] for b in ("torch", "medmnistc"))
    assert torch.equal(ours(images, 5), theirs(images, 5))


def test_defocus_kernel_is_medmnistc_disk_and_sums_away_from_one(registry):
    from medmnistc.corruptions.filter import disk

    for radius, alias in MEDMNIST_C_TABLES["histology"]["defocus_blur"].params:
        kernel = np.asarray(_disk_kernel(float(radius), float(alias)))
        assert np.array_equal(kernel, disk(radius=radius, alias_blur=alias).astype(np.float64))
        # medmnist_c_torch.defocus_blur: a flat region stays >= 3.3e-9 from a rounding boundary
        assert abs(kernel.sum() - 1) >= 3.3e-9


def test_grey_images_follow_medmnistc_grey_datasets(registry):
    """A grey image goes through the corruption as RGB and comes back as PIL's luma (dataset_manager.py)."""
    from medmnistc.corruptions.compression import JPEGCompression

    pixels = smooth_pixels(2, 1, 48, seed=7)
    out = corruptions_for("xray", ["jpeg_compression"])["jpeg_compression"](as_images(pixels), 4)
    jpeg = JPEGCompression(severity_params=list(MEDMNIST_C_TABLES["xray"]["jpeg_compression"].params))
    for image, got in zip(pixels, out):
        want = Image.fromarray(jpeg.apply(Image.fromarray(image[:, :, 0]).convert("RGB"), 3)).convert("L")
        assert out.shape[1] == 1 and torch.equal(to_uint8(got[0]), torch.from_numpy(np.array(want)))


# -- motion blur ------------------------------------------------------------------------------------------


@pytest.fixture
def medmnistc_motion_blur(registry, monkeypatch):
    """medmnistc's own MotionBlur, made to run under numpy 2: np.fromstring(bytes) -> np.frombuffer."""
    from medmnistc.corruptions.filter import MotionBlur as TheirMotionBlur

    monkeypatch.setattr(np, "fromstring", lambda data, dtype=float, **_: np.frombuffer(data, dtype), raising=False)
    return TheirMotionBlur(severity_params=list(MEDMNIST_C_TABLES["histology"]["motion_blur"].params))


def test_motion_blur_is_medmnistc_on_rgb_224px(medmnistc_motion_blur):
    ours = MotionBlur(MEDMNIST_C_TABLES["histology"]["motion_blur"].params)
    pixels = np.concatenate([random_pixels(1, 3, 224, seed=8), smooth_pixels(1, 3, 224, seed=9)])
    for severity in (1, 3, 5):  # the same seed, so the same angle drawn from numpy's global RNG
        want = reference.corrupt_per_image(medmnistc_motion_blur, pixels, severity, seed=11)
        got = reference.corrupt_per_image(ours, pixels, severity, seed=11)
        assert np.array_equal(got, want) and not np.array_equal(got, pixels), severity


def test_motion_blur_of_grey_images_at_any_size(medmnistc_motion_blur, monkeypatch):
    ours = MotionBlur(MEDMNIST_C_TABLES["histology"]["motion_blur"].params)
    grey = np.repeat(smooth_pixels(1, 1, 224, seed=10), 3, axis=3)  # ImageMagick writes it as a grey PNG
    assert np.array_equal(reference.corrupt_per_image(ours, grey, 4, seed=2),
                          reference.corrupt_per_image(medmnistc_motion_blur, grey, 4, seed=2))
    # medmnistc's grey branch is only taken at 224 px; decoding as colour makes its code right at any size
    import cv2
    import medmnistc.corruptions.filter as their_filter

    class ColourDecode:
        IMREAD_UNCHANGED = cv2.IMREAD_UNCHANGED

        @staticmethod
        def imdecode(buf, flags):
            return cv2.imdecode(buf, cv2.IMREAD_COLOR)

    small = np.repeat(smooth_pixels(2, 1, 40, seed=12), 3, axis=3)
    got = reference.corrupt_per_image(ours, small, 4, seed=2)
    monkeypatch.setattr(their_filter, "cv2", ColourDecode)
    assert np.array_equal(got, reference.corrupt_per_image(medmnistc_motion_blur, small, 4, seed=2))
    # and through the Shift, a 1-channel image stays 1-channel
    shift = corruptions_for("histology", ["motion_blur"])["motion_blur"]
    out = shift(as_images(small[..., :1]), 4, seed=2)
    assert out.shape == (2, 1, 40, 40) and not torch.equal(out, as_images(small[..., :1]))


# -- seeding and the global RNGs ---------------------------------------------------------------------------


@pytest.mark.parametrize(("modality", "name"), RANDOM, ids=[f"{m}-{n}" for m, n in RANDOM])
def test_random_corruptions_are_seeded_per_image(modality, name):
    shift = corruptions_for(modality, [name])[name]
    images = textured(CHANNELS[modality], 56).repeat(3, 1, 1, 1)
    first = shift(images, 3, seed=5)
    assert torch.equal(first, shift(images, 3, seed=5))
    assert not torch.equal(first, shift(images, 3, seed=6))
    assert not torch.equal(first[0], first[1])  # each image its own draws, even when the images are equal
    assert torch.equal(shift(images[:2], 3, seed=5), first[:2])  # image i depends on (seed, i) only


def test_global_rngs_are_left_as_they_were():
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    states = np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state()
    for modality, name in [("ct", "gaussian_noise"), ("ct", "impulse_noise"), ("histology", "stain_deposit"),
                           ("histology", "bubble"), ("histology", "motion_blur"), ("xray", "contrast_up")]:
        corruptions_for(modality, [name])[name](textured(CHANNELS[modality], 56), 2, seed=1)
    assert np.array_equal(np.random.get_state()[1], states[0])
    assert random.getstate() == states[1] and torch.equal(torch.get_rng_state(), states[2])


def test_global_rngs_are_restored_after_an_error():
    class Failing:
        def apply(self, img, severity):
            np.random.normal(size=3)
            random.random()
            raise RuntimeError("boom")

    np.random.seed(7)
    random.seed(7)
    states = np.random.get_state()[1].copy(), random.getstate()
    with pytest.raises(RuntimeError, match="boom"):
        reference.corrupt_per_image(Failing(), random_pixels(2, 3, 8), 1, seed=0)
    assert np.array_equal(np.random.get_state()[1], states[0]) and random.getstate() == states[1]


def test_deterministic_corruptions_ignore_the_seed():
    shift = corruptions_for("histology", ["jpeg_compression"])["jpeg_compression"]
    images = textured(3, 48)
    assert torch.equal(shift(images, 2, seed=0), shift(images, 2, seed=99))


# -- what every shift keeps --------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", list(MEDMNIST_C_TABLES))
def test_every_corruption_keeps_shape_dtype_and_range(modality):
    channels = CHANNELS[modality]
    images = torch.rand(2, channels, 56, 56, dtype=torch.float64)
    for name, shift in corruptions_for(modality).items():
        for severity in (1, 5):
            out = shift(images, severity, seed=0)
            assert out.shape == images.shape and out.dtype == torch.float64 and out.device == images.device, name
            assert 0 <= out.min() and out.max() <= 1, name
            assert torch.equal(out, torch.round(out * 255) / 255), name  # uint8 levels
    half = corruptions_for(modality, ["pixelate"])["pixelate"](images.half(), 2)
    assert half.dtype == torch.float16 and half.shape == images.shape


# Blur and noise grow with severity on a fixed textured image (the same seed: the same draws, scaled).
GROWING = [("ct", "gaussian_blur"), ("xray", "gaussian_blur"), ("histology", "defocus_blur"),
           ("histology", "motion_blur"), ("histology", "pixelate"), ("ct", "gaussian_noise"),
           ("xray", "speckle_noise"), ("ct", "impulse_noise"), ("xray", "shot_noise"),
           ("histology", "brightness_up"), ("ct", "contrast_down")]


@pytest.mark.parametrize(("modality", "name"), GROWING, ids=[f"{m}-{n}" for m, n in GROWING])
def test_strength_grows_with_severity(modality, name):
    shift = corruptions_for(modality, [name])[name]
    clean = textured(CHANNELS[modality])
    change = [float((shift(clean, s, seed=0) - clean).abs().mean()) for s in SEVERITIES]
    assert all(a < b for a, b in zip(change, change[1:])), change


# -- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("severity", [0, 6, 2.5, True])
def test_severity_outside_1_to_5_is_refused(severity):
    with pytest.raises(ValueError, match=r"severity=.*'gaussian_blur'.*integer from 1 to 5"):
        corruptions_for("ct", ["gaussian_blur"])["gaussian_blur"](torch.rand(1, 1, 32, 32), severity)


def test_a_corruption_of_another_modality_is_refused():
    with pytest.raises(ValueError, match=r"\['stain_deposit'\] not defined for modality 'ct'.*"
                                         r"'stain_deposit' is defined for \['histology'\].*Valid names for 'ct': "
                                         r"\['pixelate', 'jpeg_compression', 'gaussian_noise'"):
        corruptions_for("ct", ["pixelate", "stain_deposit"])
    with pytest.raises(ValueError, match=r"\['fog'\] not defined for modality 'xray' .*pneumoniamnist.*gamma_corr_down"):
        corruptions_for("xray", "fog")


def test_an_unknown_modality_is_refused():
    with pytest.raises(ValueError, match=r"unknown modality 'mri'.*\['ct', 'histology', 'xray'\]"):
        corruptions_for("mri")


@pytest.mark.parametrize(("images", "match"), [
    (torch.rand(1, 32, 32), r"float images \(N, C, H, W\)"),
    (torch.randint(0, 256, (1, 1, 32, 32), dtype=torch.uint8), r"float images.*torch.uint8"),
    (torch.rand(1, 1, 32, 32) * 255, r"in \[0, 1\].*\[.*, 25\d"),
    (torch.rand(1, 1, 32, 32) - 0.5, r"in \[0, 1\].*undo any normalisation"),
    (torch.full((1, 1, 32, 32), float("nan")), r"in \[0, 1\]"),
    (torch.rand(1, 2, 32, 32), r"RGB \(3-channel\) or grey \(1-channel\).*2 channels"),
])
def test_bad_images_are_refused(images, match):
    with pytest.raises(ValueError, match=match):
        corruptions_for("ct", ["brightness_up"])["brightness_up"](images, 1)


def test_images_too_small_for_the_geometry_are_refused():
    with pytest.raises(ValueError, match=r"'stain_deposit' \(histology\) at severity 5 needs images of at least 52 px"
                                         r".*got 32x32"):
        corruptions_for("histology", ["stain_deposit"])["stain_deposit"](torch.rand(1, 3, 32, 32), 5)
    with pytest.raises(ValueError, match=r"'bubble' \(histology\) at severity 5 needs .* at least 34 px"):
        corruptions_for("histology", ["bubble"])["bubble"](torch.rand(1, 3, 33, 64), 5)


def test_min_side_is_where_medmnistc_stops_working(registry):
    """The stain ink sizes min_side assumes are those of medmnistc's assets: it fits at min_side, not below."""
    spec = MEDMNIST_C_TABLES["histology"]["stain_deposit"]
    corruptor = reference.reference_corruptor(spec)
    for severity in (1, 4, 5):
        side = reference.min_side(spec, severity)
        reference.corrupt_per_image(corruptor, random_pixels(1, 3, side), severity, seed=0)
        with pytest.raises(ValueError, match="empty range"):
            reference.corrupt_per_image(corruptor, random_pixels(1, 3, side - 1), severity, seed=0)


def test_backends_are_checked():
    with pytest.raises(ValueError, match=r"backend='gpu'.*\('auto', 'medmnistc', 'torch'\)"):
        corruptions_for("ct", backend="gpu")
    with pytest.raises(ValueError, match=r"'jpeg_compression' \(ct\) has no torch version.*Those with one: "
                                         r"\['pixelate', 'gaussian_blur'"):
        corruptions_for("ct", ["jpeg_compression"], backend="torch")
    assert {s.implementation("cuda") for s in corruptions_for("ct", backend="medmnistc").values()} == {"medmnistc"}


# -- missing medmnistc / ImageMagick ----------------------------------------------------------------------


def test_missing_medmnistc_says_how_to_install_it(monkeypatch):
    for module in [m for m in sys.modules if m == "medmnistc" or m.startswith("medmnistc.")] + ["medmnistc"]:
        monkeypatch.setitem(sys.modules, module, None)  # `import medmnistc...` now fails as if not installed
    shift = corruptions_for("ct", ["jpeg_compression"])["jpeg_compression"]
    with pytest.raises(ImportError, match=r"need the medmnistc package.*pip install --no-deps medmnistc==0\.1\.0"):
        shift(torch.rand(1, 1, 32, 32), 1)
    # the torch corruptions need no medmnistc
    assert corruptions_for("ct", ["gamma_corr_up"])["gamma_corr_up"](torch.rand(1, 1, 32, 32), 1).shape == (1, 1, 32, 32)


def test_missing_imagemagick_says_how_to_install_it(monkeypatch):
    real = optional_deps._import_module

    def no_magickwand(name):
        if name.startswith("wand"):  # what Wand raises when it finds no MagickWand library
            raise ImportError("MagickWand shared library not found.\nYou probably had not installed ImageMagick library.")
        return real(name)

    monkeypatch.setattr(optional_deps, "_import_module", no_magickwand)
    shift = corruptions_for("histology", ["motion_blur"])["motion_blur"]
    with pytest.raises(ImportError, match="motion blur calls ImageMagick through Wand") as error:
        shift(torch.rand(1, 3, 32, 32), 1)
    assert all(hint in str(error.value) for hint in INSTALL_IMAGEMAGICK)


def test_medmnistc_blur_module_without_imagemagick_says_how_to_install_it(monkeypatch):
    def wand_fails(name):
        raise ImportError("MagickWand shared library not found.")

    monkeypatch.setattr(optional_deps, "_import_module", wand_fails)
    with pytest.raises(ImportError, match=r"medmnistc.corruptions.filter loads ImageMagick") as error:
        optional_deps.import_medmnistc("filter")
    assert all(hint in str(error.value) for hint in INSTALL_IMAGEMAGICK)


def test_import_needs_neither_medmnistc_nor_imagemagick():
    """In a fresh interpreter where medmnistc, Wand and OpenCV cannot be imported."""
    script = textwrap.dedent("""
        import sys
        for blocked in ("medmnistc", "wand", "cv2"):
            sys.modules[blocked] = None
        import torch
        from advmed.corruptions import corruptions_for
        shifts = corruptions_for("histology")
        print(shifts["brightness_up"](torch.rand(1, 3, 16, 16), 3).shape)
        for name in ("jpeg_compression", "motion_blur"):
            try:
                shifts[name](torch.rand(1, 3, 16, 16), 1)
            except ImportError as e:
                print(name, "->", e)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torch.Size([1, 3, 16, 16])" in result.stdout
    assert "jpeg_compression -> MedMNIST-C's reference corruptions need the medmnistc package" in result.stdout
    assert "motion_blur -> MedMNIST-C's motion blur calls ImageMagick through Wand" in result.stdout


# -- the benchmark ---------------------------------------------------------------------------------------


def test_benchmark_runs_and_agrees_with_medmnistc(registry, capsys, monkeypatch):
    """experiments/benchmarks/corruptions.py at a tiny size: a row per corruption, the same pixels."""
    import importlib.util
    import math

    from tests.conftest import REPO_ROOT

    bench_dir = REPO_ROOT / "experiments" / "benchmarks"
    monkeypatch.syspath_prepend(str(bench_dir))  # the script imports its neighbour timing.py, as when run there
    spec = importlib.util.spec_from_file_location("bench_corruptions", bench_dir / "corruptions.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    figures = script.main(["--images", "2", "--size", "48", "--modalities", "ct,histology",
                           "--names", "brightness_up,jpeg_compression,stain_deposit",
                           "--repeats", "1", "--warmup", "0", "--device", "cpu"])
    rows = {(r["modality"], r["name"]): r for r in figures["rows"]}
    assert set(rows) == {("ct", "brightness_up"), ("ct", "jpeg_compression"), ("histology", "brightness_up"),
                         ("histology", "jpeg_compression"), ("histology", "stain_deposit")}
    assert all(math.isfinite(r["ratio"]) and r["ratio"] > 0 for r in rows.values())
    assert rows["ct", "brightness_up"]["same"] is True and rows["ct", "brightness_up"]["backend"] == "torch"
    assert rows["histology", "jpeg_compression"]["same"] is True and rows["histology", "stain_deposit"]["same"] is None
    assert "| ct        | brightness_up    | torch" in capsys.readouterr().out


# -- GPU ---------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("modality", "name"), WITH_TORCH, ids=[f"{m}-{n}" for m, n in WITH_TORCH])
def test_torch_backend_on_cuda_gives_medmnistc_pixels(registry, modality, name):
    """On CUDA, backend='torch' runs every torch corruption on the GPU (the blurs included, which
    backend='auto' keeps on the CPU): the pixels medmnistc gives, or the report of how many differ."""
    channels = CHANNELS[modality]
    images = as_images(np.concatenate([random_pixels(8, channels, 64, seed=1), smooth_pixels(4, channels, 64, seed=2)]))
    ours = corruptions_for(modality, [name], backend="torch")[name]
    theirs = corruptions_for(modality, [name], backend="medmnistc")[name]
    for severity in SEVERITIES:
        got = ours(images.cuda(), severity)
        assert got.is_cuda
        diff = (to_uint8(got.cpu()).int() - to_uint8(theirs(images, severity)).int()).abs()
        assert diff.max() == 0, f"{name} severity {severity}: {int((diff > 0).sum())} of {diff.numel()} pixels differ"


# What backend='auto' runs, by medmnistc class, for images on a CPU and on a GPU (everything else: medmnistc).
AUTO = {"cpu": {"Brightness": "torch", "Contrast": "torch", "GammaCorrection": "torch", "Saturate": "torch",
                "GaussianBlur": "torch"},
        "cuda": {"Brightness": "torch", "Contrast": "torch", "GammaCorrection": "torch", "Saturate": "torch",
                 "Pixelate": "torch", "GaussianBlur": "torch-cpu"}}


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_auto_backend_picks_an_exact_version_for_the_device(device):
    for modality, name in ALL:
        shift = corruptions_for(modality, [name])[name]
        assert isinstance(shift, MedMNISTCCorruption)
        assert shift.implementation(device) == AUTO[device].get(shift.spec.kind, "medmnistc"), (modality, name)
