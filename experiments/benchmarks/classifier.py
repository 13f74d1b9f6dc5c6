"""Training speed of advmed's ClassifierModule through a Lightning Trainer against the same ResNet and
optimiser in a bare PyTorch loop, side by side in one process.

Ours: :class:`advmed.models.classifier.ClassifierModule` (torchvision ResNet with the ImageNet
normalisation inside, random weights) fitted by a real ``lightning.Trainer`` (logger, checkpointing
and progress bar off) for ``--steps`` optimiser steps, with the optimiser of
``conf/model/<arch>.yaml`` (AdamW lr 1e-3, weight decay 1e-4) and no scheduler (the configured cosine
schedule steps once per epoch, which costs nothing per step). Its step includes everything the
module does in training: the finite-loss check, the ``train/acc`` metric update and the ``self.log``
calls.

Bare: a copy of the same network (same initial weights) and the same optimiser built from the same
config, in a hand-written loop: forward, cross-entropy, ``zero_grad``, ``backward``, ``step``. With
``--bf16`` both run the forward and the loss under bf16 autocast (ours through
``precision="bf16-mixed"``); with ``--channels-last`` both hold the network and feed the input in
channels_last. ResNet training draws no random numbers, so both compute the same numbers on the same
batches: the benchmark prints whether their first- and last-step losses and final weights agree.

Both see the same in-memory random [0, 1] images with labels. Rounds alternate (timing.race); a
round times the training loop only (for Lightning from ``on_train_start`` to ``on_train_end``;
building the Trainer is printed apart); throughput is from the best round, the ratio the median over
rounds of bare time / our time (= our throughput relative to the bare loop).

    # CPU, about two minutes (add --clock cpu on a machine shared with other jobs)
    python experiments/benchmarks/classifier.py --device cpu --threads 1 --arch resnet34 --image-size 64 \\
        --batch 16 --steps 8 --repeats 4
    # GPU: Lockshin et al.'s classifier setting and the ResNet50 one
    python experiments/benchmarks/classifier.py --device cuda --arch resnet34 --image-size 224 --batch 64 \\
        --steps 50 --bf16 --channels-last
    python experiments/benchmarks/classifier.py --device cuda --arch resnet50 --image-size 224 --batch 256 \\
        --steps 50 --bf16 --channels-last

Target: ours / bare throughput >= 0.95.
"""

from __future__ import annotations

import argparse
import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from gan_rounds import (
    PeakMemory,
    RoundResult,
    _quiet_lightning,
    alternate,
    cycle_batches,
    fit_overhead,
    images_per_s,
    memory_line,
    now,
    random_image_loader,
    same_training,
    sync,
    throughput_ratio,
    use_clock,
    weights_fingerprint,
)
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader

from advmed.models.classifier import ClassifierModule

ARCHS = ("resnet34", "resnet50")  # the classifiers of the papers: Lockshin et al.'s ResNet34, SNAP's ResNet50
NUM_CLASSES = 9  # NCT-CRC-HE's classes
MODEL_CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"
OURS, BARE = "ours", "bare"


def configured_optimizer(arch: str, config_dir: Path = MODEL_CONFIG_DIR) -> dict[str, Any]:
    """The ``optimizer`` block of ``conf/model/<arch>.yaml`` as a plain dict (``_target_`` and arguments)."""
    path = config_dir / f"{arch}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no model config {path} for --arch {arch}: choose one of {list(ARCHS)}")
    return OmegaConf.to_container(OmegaConf.load(path).optimizer, resolve=True)


def build_template(arch: str, image_size: int, channels_last: bool = False, **module_kwargs: Any) -> ClassifierModule:
    """The module every contestant starts from: ``arch`` with random weights, the configured optimiser,
    no scheduler; ``module_kwargs`` (e.g. ``adv_fraction``, ``train_attack``) go to ClassifierModule."""
    return ClassifierModule(arch=arch, num_classes=NUM_CLASSES, in_channels=3, image_size=image_size,
                            optimizer=configured_optimizer(arch), scheduler=None, channels_last=channels_last,
                            **module_kwargs)


class StepClock(L.Callback):
    """Times the training loop (``on_train_start`` to ``on_train_end``, the device synchronised at both
    ends) and keeps the loss of the first and last step, cloned on the device and read after the clock
    stops, so that no host-device sync lands inside the loop."""

    def __init__(self, steps: int) -> None:
        self.steps, self.done = steps, 0
        self.first: Tensor | None = None
        self.last: Tensor | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.start = now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.done += 1
        if self.done in (1, self.steps):
            self.last = outputs["loss"].detach().clone()
            if self.first is None:
                self.first = self.last

    def on_train_end(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.seconds = now() - self.start


def fit_steps(template: ClassifierModule, loader: DataLoader, steps: int, device: torch.device,
              precision: str) -> tuple[ClassifierModule, StepClock, int | None]:
    """Fit a fresh copy of ``template`` for ``steps`` optimiser steps; returns the trained copy, its
    clock and the CUDA peak memory of the fit (None on a CPU)."""
    model = copy.deepcopy(template)
    clock = StepClock(steps)
    with PeakMemory(device) as peak, warnings.catch_warnings(), _quiet_lightning():
        warnings.simplefilter("ignore")  # "logger=False", "few workers", ...: not what is measured
        trainer = L.Trainer(
            max_steps=steps, accelerator=device.type, devices=[device.index] if device.index is not None else 1,
            precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock],
        )
        trainer.fit(model, train_dataloaders=loader)
    if model.global_step != steps:
        raise RuntimeError(f"the Trainer ran {model.global_step} optimiser steps, not {steps}")
    return model, clock, peak.bytes


def ours_round(template: ClassifierModule, loader: DataLoader, steps: int, device: torch.device,
               bf16: bool) -> RoundResult:
    """One timed Lightning fit of ``steps`` steps (see the module docstring)."""
    model, clock, peak = fit_steps(template, loader, steps, device, "bf16-mixed" if bf16 else "32-true")
    return RoundResult(clock.seconds, steps, peak, {"loss": float(clock.first)}, {"loss": float(clock.last)},
                       weights_fingerprint(model.net))


def bare_round(template: ClassifierModule, loader: DataLoader, steps: int, device: torch.device,
               bf16: bool) -> RoundResult:
    """The module's training step as a plain loop on a copy of its network (see the module docstring)."""
    channels_last = template.hparams.channels_last
    with PeakMemory(device) as peak:
        net = copy.deepcopy(template.net).to(device).train()  # already channels_last when the module is
        cfg = template.hparams.optimizer
        optimizer = instantiate({k: v for k, v in cfg.items() if v is not None}, params=net.parameters())
        losses: list[Tensor] = []
        sync(device)
        start = now()
        for i, (x, y) in cycle_batches(loader, steps):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i in (0, steps - 1):
                losses.append(loss.detach())
        sync(device)
        seconds = now() - start
    return RoundResult(seconds, steps, peak.bytes, {"loss": float(losses[0])}, {"loss": float(losses[-1])},
                       weights_fingerprint(net))


def add_common_flags(parser: argparse.ArgumentParser, steps: int) -> None:
    """The flags classifier.py and adversarial_training.py share."""
    parser.add_argument("--arch", default="resnet34", choices=ARCHS)
    parser.add_argument("--image-size", type=int, default=64, help="tile side (NCT-CRC-HE: 224)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=steps, help="optimiser steps per timed round")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per contestant first")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches in the in-memory dataset")
    parser.add_argument("--repeats", type=int, default=4, help="timed rounds per contestant")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (ours: precision bf16-mixed)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last network and input")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time; cpu: this process's CPU seconds (CPU only: steadier on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)


def check_common_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, naming the value, what no round can run: the Trainer or the data would fail later and less clearly."""
    for flag in ("steps", "repeats", "batch", "batches", "image_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} must be >= 1")
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps {args.warmup_steps} must be >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but torch finds no CUDA device: use --device cpu")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser, steps=8)
    args = parser.parse_args(argv)
    check_common_flags(parser, args)
    return args


def setup(args: argparse.Namespace) -> tuple[torch.device, DataLoader]:
    """Threads, clock, seed and cuDNN autotuning from ``args``; the in-memory loader both contestants read."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    use_clock(args.clock, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both contestants: the speed option advmed turns on for GPUs
    torch.manual_seed(args.seed)
    loader = random_image_loader(args.batch * args.batches, args.image_size, NUM_CLASSES, args.batch,
                                 pin=device.type == "cuda")
    return device, loader


def describe(args: argparse.Namespace, template: ClassifierModule, device: torch.device) -> str:
    """The setting in words, for the first printed line."""
    params = sum(p.numel() for p in template.net.parameters()) / 1e6
    opt = template.hparams.optimizer
    extras = "".join(f", {name}" for name, on in (("bf16", args.bf16), ("channels_last", args.channels_last)) if on)
    return (f"{device} ({torch.get_num_threads()} threads), {args.arch} ({params:.2f}M, random weights), "
            f"{args.image_size} px, batch {args.batch}{extras or ', fp32'}; {opt['_target_'].rsplit('.', 1)[-1]} "
            f"lr {opt['lr']:g} (conf/model/{args.arch}.yaml); {args.steps} steps x {args.repeats} rounds; "
            f"{args.clock} clock; torch {torch.__version__}, lightning {L.__version__}")


def spread(den: Sequence[RoundResult], num: Sequence[RoundResult]) -> str:
    """The range of the per-round ratios num time / den time, in words: on a machine shared with other
    jobs it is the honest error bar of the median."""
    ratios = [b.seconds / a.seconds for a, b in zip(den, num)]
    return f"rounds {min(ratios):.3f}-{max(ratios):.3f}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its lines and return the figures (the test reads them)."""
    args = parse_args(argv)
    device, loader = setup(args)
    template = build_template(args.arch, args.image_size, args.channels_last)
    print(f"Classifier training step, {describe(args, template, device)}")
    runs = {OURS: lambda n: ours_round(template, loader, n, device, args.bf16),
            BARE: lambda n: bare_round(template, loader, n, device, args.bf16)}
    results = alternate(runs, device, args.steps, args.warmup_steps, args.repeats)
    ours, bare = images_per_s(results[OURS], args.batch), images_per_s(results[BARE], args.batch)
    ratio = throughput_ratio(results[OURS], results[BARE])
    print(f"[classifier train step] ours (Lightning) {ours:.2f} img/s, bare loop {bare:.2f} img/s, "
          f"ratio ours/bare {ratio:.3f} ({spread(results[OURS], results[BARE])}; target >= 0.95)")
    overhead = fit_overhead(results[OURS])
    print(f"[classifier fit overhead] ours {overhead:.2f} s per fit outside the training loop (copying the module, "
          "building the Trainer, setup / teardown; once per run, not in the ratio)")
    print(memory_line("classifier", results, device))
    same = all(same_training(a, b) for a, b in zip(results[OURS], results[BARE]))
    print(f"[classifier same training] every round: first- and last-step losses and final network weights of ours "
          f"and the bare loop agree: {same} (first step loss {results[BARE][0].first_losses['loss']:.5g})")
    return {"ours_img_s": ours, "bare_img_s": bare, "ratio": ratio, "ours_fit_overhead_s": overhead,
            "results": results, "same_training": same}


if __name__ == "__main__":
    main()
