"""ResNet50 training throughput on one CUDA GPU through advmed's ClassifierModule and a Lightning
Trainer, in images/s and model-FLOPs utilisation (MFU).

The module is the one ``python -m advmed.train model=resnet50`` fits (random weights, 9 classes, the
configured AdamW), run the way a GPU job should run it: ``precision="bf16-mixed"``,
``channels_last=True``, cuDNN autotuning, optionally ``torch.compile`` of the network (``--compile``).
The images are random [0, 1] tensors made on the GPU beforehand and handed over one ready batch at a
time, so the figure is the training step's, not a data pipeline's (that is another benchmark's). The
first ``--warmup-steps`` steps (cuDNN autotuning, compilation) are left out; the rest are timed in
windows of ``--window`` steps, the GPU synchronised only at window edges.

MFU = (training FLOPs per image) x (images/s) / (the GPU's peak dense bf16 FLOP/s). The FLOPs are
those of one training step as it executes (forward, loss, backward, no optimiser), counted by
``torch.utils.flop_counter.FlopCounterMode`` on a two-image slice: convolutions and matrix products
only, the backward without the input gradient of the first layer, which nothing needs. The peak
comes from :data:`PEAK_BF16_DENSE` by the device's name, or ``--peak-tflops``.

FlopCounterMode's module tracker cannot follow ``torch.autograd.grad`` w.r.t. a leaf tensor, which
is how every advmed attack takes its input gradient (pytorch/pytorch#131753: "A leaf node was passed
to _will_engine_execute_node"), so :func:`count_flops` swaps it for one that books every FLOP under
"Global": the total is all these benchmarks need. No library offers that count otherwise.

    python experiments/benchmarks/gpu_throughput.py                   # ResNet50, 224 px, batch 256, bf16
    python experiments/benchmarks/gpu_throughput.py --compile
    python experiments/benchmarks/gpu_throughput.py --peak-tflops 756  # a GPU not in the table (H100 PCIe)

Reference: ~2,500 img/s on an A100 with AMP (NVIDIA's ResNet50 v1.5 figures); target on an H100 >= 4,000.
It refuses to run without CUDA; its FLOP counting runs anywhere (the tests use it on a CPU).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from classifier import ARCHS, NUM_CLASSES, build_template
from gan_rounds import _quiet_lightning
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

# Peak dense (no sparsity) bf16 tensor-core FLOP/s by a substring of torch.cuda.get_device_name,
# from NVIDIA's data sheets; the first match wins, so the specific names come first.
PEAK_BF16_DENSE = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
)
REFERENCE = "~2,500 img/s on an A100 with AMP (NVIDIA's ResNet50 v1.5 training figures); target on an H100 >= 4,000"
FLOP_SLICE = 2  # images per FLOP count: convolution and matmul FLOPs grow linearly with the batch


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker (see the module docstring): every FLOP to "Global"."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the convolutions and matrix products that ``fn()`` runs, forward and backward, as
    ``torch.utils.flop_counter`` formulas count them (a multiply-add is two FLOPs)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return counter.get_total_flops()


def training_step_flops(module: L.LightningModule, x: Tensor, y: Tensor) -> int:
    """FLOPs of one training step of a ClassifierModule on ``(x, y)``, optimiser aside: the tensor work
    of its ``training_step`` (``mix_adversarial``, i.e. the training attack when ``adv_fraction`` > 0,
    then the forward and the cross-entropy) and the backward. Runs on a copy, so ``module``'s weights,
    gradients and batch-norm statistics are left alone."""
    work = copy.deepcopy(module).train()

    def step() -> None:
        F.cross_entropy(work(work.mix_adversarial(x, y)), y).backward()

    return count_flops(step)


def forward_flops(network: nn.Module, x: Tensor) -> int:
    """FLOPs of one forward of ``network`` on ``x`` (eval mode, no graph)."""
    network = copy.deepcopy(network).eval()
    with torch.no_grad():
        return count_flops(lambda: network(x))


def peak_flops(device_name: str, override_tflops: float | None = None) -> float:
    """The peak dense bf16 FLOP/s of the GPU called ``device_name`` (or ``override_tflops`` x 1e12)."""
    if override_tflops is not None:
        if override_tflops <= 0:
            raise ValueError(f"--peak-tflops {override_tflops} must be > 0")
        return override_tflops * 1e12
    for part, peak in PEAK_BF16_DENSE:
        if part in device_name:
            return peak
    known = ", ".join(f"{part} {peak / 1e12:g}" for part, peak in PEAK_BF16_DENSE)
    raise ValueError(f"no peak bf16 FLOP/s known for the GPU {device_name!r} (table, TFLOP/s: {known}): pass its "
                     "data sheet's dense bf16 figure as --peak-tflops")


class _ReadyBatches(Dataset):
    """Whole batches already on the device; with ``DataLoader(batch_size=None)`` no per-image indexing
    or collation runs in the loop."""

    def __init__(self, batches: list[tuple[Tensor, Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.batches[index]


def ready_loader(num_batches: int, batch: int, image_size: int, device: torch.device, seed: int = 0) -> DataLoader:
    """``num_batches`` batches of random [0, 1] images with labels, made on ``device``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    batches = [(torch.rand(batch, 3, image_size, image_size, device=device, generator=generator),
                torch.randint(0, NUM_CLASSES, (batch,), device=device, generator=generator))
               for _ in range(num_batches)]
    return DataLoader(_ReadyBatches(batches), batch_size=None, shuffle=False)


class WindowClock(L.Callback):
    """Synchronises the device and reads the clock at the start of step ``warmup`` and after every
    ``window`` steps from there; ``seconds`` holds each window's duration."""

    def __init__(self, warmup: int, window: int) -> None:
        self.warmup, self.window = warmup, window
        self.started = 0
        self.marks: list[float] = []

    def _mark(self, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.marks.append(time.perf_counter())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.started >= self.warmup and (self.started - self.warmup) % self.window == 0:
            self._mark(pl_module.device)
        self.started += 1

    def on_train_end(self, trainer, pl_module) -> None:
        if (self.started - self.warmup) % self.window:  # a last, shorter window: not comparable, dropped
            return
        self._mark(pl_module.device)

    @property
    def seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def measure(module: L.LightningModule, loader: DataLoader, warmup: int, steps: int, window: int,
            device: torch.device, precision: str) -> list[float]:
    """Fit ``module`` for ``warmup + steps`` steps; seconds of each timed window of ``window`` steps."""
    clock = WindowClock(warmup, window)
    with warnings.catch_warnings(), _quiet_lightning():
        warnings.simplefilter("ignore")
        trainer = L.Trainer(
            max_steps=warmup + steps, accelerator=device.type,
            devices=[device.index] if device.index is not None else 1,
            precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock],
        )
        trainer.fit(module, train_dataloaders=loader)
    if module.global_step != warmup + steps:
        raise RuntimeError(f"the Trainer ran {module.global_step} steps, not {warmup + steps}")
    return clock.seconds


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50", choices=ARCHS)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup-steps", type=int, default=20, help="untimed steps first (autotuning, compilation)")
    parser.add_argument("--window", type=int, default=20, help="timed steps per window (--steps is a multiple)")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches kept on the GPU")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="precision bf16-mixed")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (default mode)")
    parser.add_argument("--peak-tflops", type=float,
                        help="the GPU's peak dense bf16 TFLOP/s (default: from the table)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for flag in ("image_size", "batch", "steps", "window", "batches"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} must be >= 1")
    if args.steps % args.window:
        parser.error(f"--steps {args.steps} must be a multiple of --window {args.window}")
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps {args.warmup_steps} must be >= 0")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error(f"--peak-tflops {args.peak_tflops} must be > 0")
    if not args.device.startswith("cuda"):
        parser.error(f"--device {args.device}: this benchmark measures a CUDA GPU; for CPU figures run "
                     "experiments/benchmarks/classifier.py --device cpu")
    if not torch.cuda.is_available():
        parser.error("no CUDA device (torch.cuda.is_available() is False): this benchmark measures GPU training "
                     "throughput; run it on a GPU machine, or experiments/benchmarks/classifier.py --device cpu here")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its lines and return the figures."""
    args = parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device)
    try:
        peak = peak_flops(name, args.peak_tflops)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)
    module = build_template(args.arch, args.image_size, args.channels_last).to(device)
    loader = ready_loader(args.batches, args.batch, args.image_size, device, args.seed)
    x, y = (t[:FLOP_SLICE] for t in loader.dataset[0])
    step_flops = training_step_flops(module, x, y) / len(x)
    fwd_flops = forward_flops(module, x) / len(x)
    if args.compile:
        module.net.compile()
    precision = "bf16-mixed" if args.bf16 else "32-true"
    print(f"GPU training throughput, {name}, {args.arch} (random weights), {args.image_size} px, batch {args.batch}, "
          f"{precision}{', channels_last' if args.channels_last else ''}{', torch.compile' if args.compile else ''}; "
          f"{args.warmup_steps} warm-up + {args.steps} timed steps; torch {torch.__version__}, "
          f"lightning {L.__version__}")
    torch.cuda.reset_peak_memory_stats(device)
    windows = measure(module, loader, args.warmup_steps, args.steps, args.window, device, precision)
    rates = [args.window * args.batch / s for s in windows]
    img_s = args.steps * args.batch / sum(windows)
    mfu = step_flops * img_s / peak
    print(f"[gpu throughput] ours (ClassifierModule + Lightning) {img_s:,.0f} img/s over {args.steps} steps "
          f"(windows of {args.window}: median {statistics.median(rates):,.0f}, min {min(rates):,.0f}, "
          f"max {max(rates):,.0f}); reference {REFERENCE}")
    print(f"[gpu mfu] {step_flops / 1e9:.2f} GFLOP per image per training step (forward {fwd_flops / 1e9:.2f}, "
          f"FlopCounterMode) x {img_s:,.0f} img/s = {step_flops * img_s / 1e12:.1f} TFLOP/s = {100 * mfu:.1f} % "
          f"of {peak / 1e12:g} TFLOP/s peak dense bf16")
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"[gpu peak memory] {peak_gib:.2f} GiB (torch.cuda.max_memory_allocated over the fit)")
    return {"img_s": img_s, "window_img_s": rates, "flops_per_image": step_flops, "mfu": mfu, "peak_gib": peak_gib}


if __name__ == "__main__":
    main()
