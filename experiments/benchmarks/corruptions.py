"""Speed of advmed's MedMNIST-C corruptions (advmed.corruptions) against medmnistc applied image by
image, side by side in one process, for every corruption of the chosen modalities.

Ours: the advmed ``Shift`` (``backend=auto``: the batched torch version where it is exact, else
medmnistc's class inside advmed's seeded loop) called once on the whole float [0, 1] batch on
``--device``, conversion to MedMNIST-C's uint8 pixels and back included. Theirs: medmnistc's own
classes with MedMNIST-C's parameters, ``apply`` on one PIL image at a time as its DatasetManager
does (a grey modality through RGB and back to ``L``), starting from the same images already as a
uint8 (N, H, W, C) array. medmnistc's motion blur is run with ``np.fromstring`` patched to
``np.frombuffer`` (it fails under numpy 2 otherwise; advmed's copy fixes it). Both see the same
images; a random textured batch (smooth gradients plus fine noise).

Rounds alternate (timing.race) after a warm-up; throughput is from the best round, the ratio the
median over rounds of their time / our time (> 1: ours is faster). ``same`` says whether the two
gave the same pixels: always for the deterministic corruptions; the random ones (noise, motion
blur, stain deposits, bubbles) draw from advmed's per-image seeds, not from medmnistc's single
stream, so their pixels are not compared (``-``).

    python experiments/benchmarks/corruptions.py --images 64 --size 64 --device cpu --threads 1
    python experiments/benchmarks/corruptions.py --images 256 --size 224 --device cuda --modalities histology,ct,xray
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from timing import race

from advmed.corruptions import corruptions_for
from advmed.corruptions.medmnist_c import to_uint8
from advmed.corruptions.medmnist_c_params import MEDMNIST_C_TABLES, MODALITY_DATASETS, RGB_DATASETS
from advmed.corruptions.medmnist_c_reference import RANDOM_KINDS, min_side
from advmed.corruptions.medmnist_c_torch import TORCH_CORRUPTIONS

CHANNELS = {"histology": 3, "ct": 1, "xray": 1}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="images per batch")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (MedMNIST-C's own: 224)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modalities", default="histology,ct", help="comma-separated: histology, ct, xray")
    parser.add_argument("--names", default=None, help="comma-separated corruption names (default: all)")
    parser.add_argument("--backend", choices=("auto", "torch", "medmnistc"), default="auto",
                        help="advmed's backend (torch: only the corruptions that have a torch version)")
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per corruption")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args(argv)


def textured_batch(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Float [0, 1] images on MedMNIST-C's 256 levels: smooth gradients plus fine noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    freq = rng.uniform(0.5, 3, (n, channels, 1, 1))
    smooth = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx + 0.6 * yy) + rng.uniform(0, 6, (n, channels, 1, 1)))
    pixels = np.clip(np.round(255 * (0.8 * smooth + 0.2 * rng.random((n, channels, size, size)))), 0, 255)
    return torch.from_numpy(pixels / 255).float()


@contextlib.contextmanager
def medmnistc_motion_blur_runs() -> Iterator[None]:
    """medmnistc's MotionBlur under numpy 2: np.fromstring(bytes) read as np.frombuffer meanwhile."""
    had = hasattr(np, "fromstring")
    original = getattr(np, "fromstring", None)
    np.fromstring = lambda data, dtype=float, **_: np.frombuffer(data, dtype)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if had:
            np.fromstring = original  # type: ignore[attr-defined]
        else:
            del np.fromstring


def medmnistc_per_image(corruptor: Any, pixels: np.ndarray, severity: int, rgb: bool) -> np.ndarray:
    """medmnistc's DatasetManager loop: every uint8 image as an RGB PIL image through ``apply``, back
    to ``L`` for a grey dataset."""
    out = []
    for image in pixels:
        pil = Image.fromarray(image if rgb else image[:, :, 0]).convert("RGB")
        result = corruptor.apply(pil, severity - 1)
        if not rgb:
            result = Image.fromarray(result).convert("L")
        out.append(np.asarray(result))
    return np.stack(out)


def race_one(shift: Any, theirs: Any, images: torch.Tensor, pixels: np.ndarray, rgb: bool,
             args: argparse.Namespace, device: torch.device) -> tuple[Any, np.ndarray, np.ndarray]:
    """Time ours and medmnistc's on the same images; the timings and both results as uint8 (N, H, W, C)."""
    results: dict[str, Any] = {}

    def ours() -> None:
        results["ours"] = shift(images, args.severity, seed=0)

    def medmnistc() -> None:
        results["theirs"] = medmnistc_per_image(theirs, pixels, args.severity, rgb)

    with medmnistc_motion_blur_runs():
        timings = race({"ours": ours, "medmnistc": medmnistc}, device, args.warmup, args.repeats)
    ours_pixels = to_uint8(results["ours"]).permute(0, 2, 3, 1).cpu().numpy()
    return timings, ours_pixels, results["theirs"].reshape(ours_pixels.shape)


def bench_modality(modality: str, names: list[str] | None, args: argparse.Namespace,
                   device: torch.device) -> list[dict[str, Any]]:
    from medmnistc.corruptions.registry import CORRUPTIONS_DS  # loads ImageMagick through Wand

    dataset = MODALITY_DATASETS[modality]
    rgb = dataset in RGB_DATASETS
    images = textured_batch(args.images, CHANNELS[modality], args.size).to(device)
    pixels = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    rows = []
    if args.backend == "torch":
        names = [n for n in (names or MEDMNIST_C_TABLES[modality]) if MEDMNIST_C_TABLES[modality][n].kind in TORCH_CORRUPTIONS]
    for name, shift in corruptions_for(modality, names, backend=args.backend).items():
        need = min_side(shift.spec, args.severity)
        if args.size < need:  # medmnistc's own code fails there too (stain inks, bubbles)
            print(f"| {modality:9} | {name:16} | skipped: needs images of at least {need} px at severity {args.severity}")
            continue
        theirs = CORRUPTIONS_DS[dataset][name]
        theirs.rng = np.random.default_rng(0)  # what DatasetManager gives ImpulseNoise
        timings, ours_pixels, theirs_pixels = race_one(shift, theirs, images, pixels, rgb, args, device)
        random = MEDMNIST_C_TABLES[modality][name].kind in RANDOM_KINDS
        row = {
            "modality": modality, "name": name, "backend": shift.implementation(device),
            "ours": args.images / timings.best("ours"), "medmnistc": args.images / timings.best("medmnistc"),
            "ratio": timings.ratio("medmnistc", "ours"),
            "same": None if random else bool(np.array_equal(ours_pixels, theirs_pixels)),
        }
        rows.append(row)
        same = "-" if row["same"] is None else ("yes" if row["same"] else "NO")
        print(f"| {modality:9} | {name:16} | {row['backend']:9} | {row['ours']:10.1f} | {row['medmnistc']:15.1f} | "
              f"{row['ratio']:6.2f} | {same:4} |", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    print(f"{args.images} images of {args.size} px, severity {args.severity}, device {device} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}, numpy {np.__version__}")
    print("| modality  | corruption       | ours runs | ours img/s | medmnistc img/s | ratio  | same |")
    print("|-----------|------------------|-----------|------------|-----------------|--------|------|")
    rows: list[dict[str, Any]] = []
    for modality in modalities:
        chosen = None if names is None else [n for n in names if n in MEDMNIST_C_TABLES.get(modality, {})]
        if chosen == []:
            continue
        rows += bench_modality(modality, chosen, args, device)
    return {"rows": rows}


if __name__ == "__main__":
    main(sys.argv[1:])
