"""Data pipeline throughput: an image folder (every TIFF decoded when its item is read), the decoded
cache (advmed.data.decoded_cache, a memory-mapped .npy) and an HDF5 file (chunked per image, the
PCam way), side by side in one process, each against what the model consumes: a ResNet34 training
step's images/s at the same size, measured in the same process.

    python experiments/benchmarks/data_pipeline.py                        # 900 NCT-like 224 px PackBits TIFFs
    python experiments/benchmarks/data_pipeline.py --tile-size 96 --image-size 224 --compression none  # HCD-like
    python experiments/benchmarks/data_pipeline.py --device cuda --workers 16 --tiles 20000
    python experiments/benchmarks/data_pipeline.py --smoke                # seconds: the three loaders agree

The tiles are written in NCT-CRC-HE-100K's layout (``<root>/<CLASS>/<CLASS>-<id>.tif``) and format:
RGB PackBits TIFFs with 12 rows per strip like the real ones (written through Pillow's libtiff,
as tifffile needs imagecodecs to compress), or uncompressed like the Kaggle HCD tiles (tifffile,
as in the tests). Their pixels are random: PackBits leaves them uncompressed, as it nearly does
real H&E tiles (a real 224 px tile is 152 kB for 150 kB of pixels).

The three datasets are the DataModules' own: ``ImageFolderDataset`` over the files, the same with
the decoded cache's images, ``PCamH5Dataset`` over the HDF5 file; the same batch size, workers and
shuffled order (one seed). Each loader's persistent workers start before timing, while its first
batches are compared with the others' (``[same batches]``). A round is one epoch of each loader,
rounds alternate; throughput is from the best round, the cache/folder ratio the median over rounds.
The files lie in the page cache (the benchmark has just written them), so the figures are decoding
costs, not disk reads: on a network file system the folder also pays an open per tile.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import tifffile
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from timing import Normalized, Race, race
from torch.utils.data import DataLoader, Dataset

from advmed.data.classification_datasets import ImageFolderDataset
from advmed.data.decoded_cache import open_decoded_cache
from advmed.data.histology.nct_crc_he import CLASS_NAMES
from advmed.data.lymph_node.pcam import PCamH5Dataset
from advmed.data.readers import scan_class_folders

LOADERS = ("folder", "cache", "hdf5")
SMOKE = ["--tiles", "18", "--tile-size", "32", "--batch", "4", "--workers", "0", "--repeats", "1",
         "--model-batch", "2", "--model-steps", "1", "--check-batches", "5"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=900, help="TIFF tiles written (NCT layout, 9 classes)")
    parser.add_argument("--tile-size", type=int, default=224, help="side of the stored tiles (NCT 224, HCD 96)")
    parser.add_argument("--image-size", type=int, default=None, help="side the loaders resize to (default: tile size)")
    parser.add_argument("--compression", choices=("packbits", "none"), default="packbits")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, and the cache's build processes")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per loader")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU seconds (steadier on a shared machine; needs --workers 0)")
    parser.add_argument("--check-batches", type=int, default=2, help="first batches compared across the loaders")
    parser.add_argument("--arch", default="resnet34", help="torchvision model whose training step is timed")
    parser.add_argument("--model-batch", type=int, default=None, help="default: 64 on CUDA, 4 on a CPU")
    parser.add_argument("--model-steps", type=int, default=None, help="timed steps; default: 20 on CUDA, 1 on a CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--dir", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help=f"tiny settings for a seconds-long check: {' '.join(SMOKE)}")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.smoke:  # the smoke settings, then the flags given (which win)
        args = parser.parse_args([*SMOKE, *argv])
    if args.clock == "cpu" and args.workers:
        parser.error("--clock cpu counts this process's CPU time only: use it with --workers 0")
    args.image_size = args.image_size or args.tile_size
    cuda = args.device.startswith("cuda")
    args.model_batch = args.model_batch or (64 if cuda else 4)  # a CPU step at 224 px takes seconds
    args.model_steps = args.model_steps or (20 if cuda else 1)
    return args


def write_tiles(root: Path, count: int, size: int, compression: str, seed: int = 0) -> list[tuple[Path, int]]:
    """``count`` random RGB tiles in the NCT layout, classes in turn; the DataModule's scan of them."""
    rng = np.random.default_rng(seed)
    for name in CLASS_NAMES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = CLASS_NAMES[i % len(CLASS_NAMES)]
        tile = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        path = root / name / f"{name}-{i:08X}.tif"
        if compression == "packbits":
            Image.fromarray(tile).save(path, compression="packbits", tiffinfo={278: 12})  # 278: RowsPerStrip
        else:
            tifffile.imwrite(path, tile, photometric="rgb")
    return scan_class_folders(root, CLASS_NAMES)


def write_hdf5(path: Path, images: Sequence[np.ndarray]) -> None:
    """Dataset ``x`` (N, H, W, 3) uint8, one chunk per image, uncompressed: PCam's layout."""
    shape = (len(images), *images[0].shape)
    with h5py.File(path, "w") as file:
        x = file.create_dataset("x", shape=shape, dtype=np.uint8, chunks=(1, *shape[1:]))
        for i in range(len(images)):
            x[i] = images[i]


def loader(dataset: Dataset, args: argparse.Namespace) -> DataLoader:
    return DataLoader(dataset, batch_size=args.batch, shuffle=True, generator=torch.Generator().manual_seed(0),
                      num_workers=args.workers, persistent_workers=args.workers > 0)


def epoch(data: DataLoader) -> int:
    return sum(len(y) for _, y in data)


def epoch_rounds(loaders: dict[str, DataLoader], repeats: int, clock: str) -> Race:
    """Seconds of one epoch of each loader per round, alternately (order flipped every round)."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {name: [] for name in loaders}
    names = list(loaders)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = now()
            epoch(loaders[name])
            times[name].append(now() - start)
    return Race(times)


def same_batches(loaders: dict[str, DataLoader], batches: int) -> bool:
    """Whether the loaders' first ``batches`` batches are equal, images and labels, bit for bit."""
    iterators = {name: iter(data) for name, data in loaders.items()}
    same = True
    for _ in range(batches):
        drawn = [next(it, None) for it in iterators.values()]
        if any(b is None for b in drawn):
            break
        (x0, y0), rest = drawn[0], drawn[1:]
        same &= all(torch.equal(x0, x) and torch.equal(y0, y) for x, y in rest)
    return same


def model_images_per_second(args: argparse.Namespace) -> float:
    """Images/s of a training step (forward, loss, backward, SGD) of ``--arch`` on random batches;
    bf16 autocast and channels_last on CUDA."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    net = Normalized(getattr(torchvision.models, args.arch)(num_classes=len(CLASS_NAMES))).to(device)
    if cuda:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(args.model_batch, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, len(CLASS_NAMES), (args.model_batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up (cuDNN algorithm choice, allocator)
    timed = race({"model": lambda: [step() for _ in range(args.model_steps)]}, device, warmup=0, repeats=1)
    return args.model_batch * args.model_steps / timed.best("model")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    start = time.perf_counter()
    items = write_tiles(work / "tiles", args.tiles, args.tile_size, args.compression)
    write_s = time.perf_counter() - start
    paths = [path for path, _ in items]
    tiff_mb = sum(path.stat().st_size for path in paths) / 1e6
    builds = {}
    for workers in sorted({0, args.workers}):  # serial, then with the loaders' workers
        start = time.perf_counter()
        cache = open_decoded_cache(work / "tiles", paths, work / f"cache{workers}", workers=workers)
        builds[workers] = time.perf_counter() - start
    images = cache.images_for(paths)
    start = time.perf_counter()
    write_hdf5(work / "tiles.h5", images)
    hdf5_s = time.perf_counter() - start

    folder = ImageFolderDataset(items, args.image_size)
    datasets = {
        "folder": folder,
        "cache": ImageFolderDataset(items, args.image_size, images=images),
        "hdf5": PCamH5Dataset(work / "tiles.h5", folder.targets, args.image_size),
    }
    loaders = {name: loader(dataset, args) for name, dataset in datasets.items()}
    same = same_batches(loaders, args.check_batches)  # also starts the persistent workers
    timed = epoch_rounds(loaders, args.repeats, args.clock)
    del loaders
    gc.collect()  # stops the loaders' workers before the model takes the cores
    rates = {name: len(items) / timed.best(name) for name in LOADERS}
    model = model_images_per_second(args)

    size = f"{args.tile_size} px" + (f" -> {args.image_size} px" if args.image_size != args.tile_size else "")
    build = ", ".join(f"{s:.1f} s with {w} workers ({len(items) / s:.0f} tiles/s)" if w else
                      f"{s:.1f} s serial ({len(items) / s:.0f} tiles/s)" for w, s in builds.items())
    print(f"[data setup] {len(items)} tiles {size} {args.compression} TIFF ({tiff_mb:.0f} MB), written in "
          f"{write_s:.1f} s; decoded cache built in {build}; HDF5 written from it in {hdf5_s:.1f} s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    speedup = timed.ratio("folder", "cache")
    print(f"[data pipeline] batch {args.batch}, {args.workers} workers, page cache warm, {args.clock} clock: "
          + ", ".join(f"{name} {rates[name]:.0f} img/s" for name in LOADERS)
          + f"; cache/folder {speedup:.1f}x, hdf5/folder {timed.ratio('folder', 'hdf5'):.1f}x, "
          f"cache/hdf5 {timed.ratio('hdf5', 'cache'):.2f}x")
    precision = "bf16 autocast, channels_last" if args.device.startswith("cuda") else "fp32"
    print(f"[model consumption] {args.arch} training step, {args.image_size} px, batch {args.model_batch}, "
          f"{args.device} {precision}: {model:.1f} img/s; loader/model: "
          + ", ".join(f"{name} {rates[name] / model:.2f}" for name in LOADERS) + " (>= 1: the loader keeps up)")
    print(f"[same batches] folder, cache and hdf5 loaders yield identical batches: {same}")
    figures = {f"{name}_img_s": rates[name] for name in LOADERS}
    figures.update(cache_speedup=speedup, model_img_s=model, same_batches=same, build_s=builds,
                   hdf5_write_s=hdf5_s, rounds=timed.times)
    assert all(math.isfinite(v) for v in (*rates.values(), model, speedup))
    return figures


if __name__ == "__main__":
    main()
