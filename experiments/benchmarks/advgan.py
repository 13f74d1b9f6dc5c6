"""Training speed of advmed's AdvGANModule through a Lightning Trainer against the same networks and
losses in a bare float32 PyTorch loop, side by side in one process.

Ours: :class:`advmed.models.advgan.AdvGANModule` fitted by a real ``lightning.Trainer`` (logger,
checkpointing and progress bar off) for ``2 * --iterations`` optimiser steps (one discriminator and
one generator step per batch), with the loss weights, threshold, widths and Adam settings of
``conf/model/advgan.yaml`` (Xiao et al.'s c3-8, d16, d32, 4 x r32, u16, u8, c3 generator and C8,
C16, C32 discriminator; Lockshin et al.'s gamma 10, theta 1, zeta 1) unless a flag overrides them.
The attacked classifier is a :class:`~advmed.models.classifier.ClassifierModule` (default ResNet34,
the classifiers of Lockshin et al.'s Table 1) with random weights, built in this process and saved
as a checkpoint in a temporary folder for the module to load (it takes a checkpoint path): the same
cost per pass as a trained one, nothing loaded or downloaded.

Bare: AdvGANGenerator / AdvGANDiscriminator built with the same settings and loaded with the same
initial weights, a copy of the same frozen classifier, the same AdvGANLoss and Adam, in a
hand-written loop: discriminator step on ``x`` against ``x + G(x)`` made without gradients, then the
generator step (eq. 9) on a fresh ``G(x)``, with the same ``requires_grad`` toggling as the module.
AdvGAN training draws no random numbers (no latents or dropout; the classifier is in eval mode), so
both compute the same numbers from the same weights and batches: the benchmark prints whether their
first- and last-iteration losses and final generator weights agree.

Both see the same in-memory random [0, 1] tiles with labels. Rounds alternate (timing.race); a round
times the training loop only (gan_rounds.py); throughput is from the best round, the ratio the
median over rounds of bare time / our time.

    # GPU: the paper's setting, 224 px tiles, batch 16, a ResNet34 target, the configured widths
    python experiments/benchmarks/advgan.py --device cuda
    # CPU, about a minute (add --clock cpu on a machine shared with other jobs)
    python experiments/benchmarks/advgan.py --device cpu --threads 1 --image-size 48 --batch 16 \\
        --iterations 8 --repeats 6

On CUDA a third contestant is ours with ``precision="bf16-mixed"`` (AdvGANModule has no
channels_last option, so bf16 alone), against the float32 bare loop.

Target: ours / bare throughput >= 0.95.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from gan_rounds import (
    NUM_CLASSES,
    LossRecorder,
    PeakMemory,
    RoundResult,
    adam_from_config,
    alternate,
    check_plain_schedule,
    cycle_batches,
    lightning_round,
    now,
    prepare_runs,
    report_rounds,
    set_requires_grad,
    sync,
)
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from advmed.losses.advgan import AdvGANLoss
from advmed.models.advgan import AdvGANModule
from advmed.models.base import CLASS_KEY, class_path
from advmed.models.classifier import ClassifierModule
from advmed.nets.advgan import AdvGANDiscriminator, AdvGANGenerator, apply_perturbation
from advmed.nets.resnet import RESNET_WEIGHTS

MODEL_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "model" / "advgan.yaml"
# Config keys the benchmark sets itself: the classifier it builds, and the data's values (in the
# config they are interpolations from data=...).
BENCHMARK_KEYS = ("_target_", "classifier_ckpt", "num_classes", "in_channels", "class_names", "image_size")
# Flags that override a configured model value (flag dest -> AdvGANModule argument).
MODEL_FLAGS = ("base_width", "depth", "residual_blocks", "critic_width", "critic_depth", "thr")
# Logged metric of AdvGANModule -> the name the bare loop records the same term under (target_ce
# instead of nce when the config is targeted; the clock keeps only the metrics that were logged).
LOSS_NAMES = {"train/d_real": "d_real", "train/d_fake": "d_fake", "train/g_nce": "g_nce",
              "train/g_target_ce": "g_target_ce", "train/g_gan": "g_gan", "train/g_threshold": "g_threshold"}
# Paper context: Lockshin et al. sec. 4.3 trained AdvGAN for 68,000 iterations of batch 16 (no time given).
PAPER_ITERATIONS, PAPER_BATCH = 68_000, 16


def configured_model_kwargs(path: Path = MODEL_CONFIG) -> dict[str, Any]:
    """AdvGANModule arguments from the model config ``path`` (loss weights, widths, optimisers, the GAN
    schedule), without the keys of :data:`BENCHMARK_KEYS`."""
    values = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return {key: value for key, value in values.items() if key not in BENCHMARK_KEYS}


def save_random_classifier(arch: str, image_size: int, folder: Path) -> Path:
    """A ClassifierModule checkpoint with random weights (as ``advmed.train`` would write its record:
    weights, hyper-parameters and module class), for AdvGANModule to load; returns its path."""
    classifier = ClassifierModule(arch=arch, num_classes=NUM_CLASSES, in_channels=3, image_size=image_size)
    path = folder / "classifier.ckpt"
    torch.save({"state_dict": classifier.state_dict(), "hyper_parameters": dict(classifier.hparams),
                CLASS_KEY: class_path(ClassifierModule)}, path)
    return path


def build_template(args: argparse.Namespace) -> AdvGANModule:
    """The module both contestants start from; its classifier file is only needed while it is built."""
    with tempfile.TemporaryDirectory(prefix="advgan_bench_") as folder:
        path = save_random_classifier(args.classifier_arch, args.image_size, Path(folder))
        return AdvGANModule(str(path), num_classes=NUM_CLASSES, in_channels=3, image_size=args.image_size, **args.model)


def ours_round(template: AdvGANModule, loader: DataLoader, iterations: int, device: torch.device,
               precision: str, seed: int) -> RoundResult:
    return lightning_round(template, loader, iterations, 2 * iterations, device, precision, LOSS_NAMES,
                           counted=lambda m: m.generator_steps, seed=seed)


def bare_round(template: AdvGANModule, loader: DataLoader, iterations: int, device: torch.device,
               seed: int) -> RoundResult:
    """The module's training as a plain loop (see the module docstring)."""
    h = template.hparams
    check_plain_schedule(h)
    with PeakMemory(device) as peak:
        generator = AdvGANGenerator(h.in_channels, h.base_width, h.depth, h.residual_blocks, h.max_perturbation,
                                    h.upsampling)
        critic = AdvGANDiscriminator(h.in_channels, h.critic_width, h.critic_depth)
        generator.load_state_dict(template.generator.state_dict())
        critic.load_state_dict(template.critic.state_dict())
        generator, critic = generator.to(device).train(), critic.to(device).train()
        classifier = copy.deepcopy(template.classifier).to(device)  # frozen, eval mode
        loss = AdvGANLoss(h.gamma, h.theta, h.zeta, h.thr, h.targeted, h.non_saturating)
        g_opt = adam_from_config(generator.parameters(), h.generator_optimizer)
        d_opt = adam_from_config(critic.parameters(), h.critic_optimizer)

        def step(optimizer: torch.optim.Optimizer, terms: dict[str, torch.Tensor]) -> None:
            optimizer.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            optimizer.step()

        losses = LossRecorder()
        torch.manual_seed(seed)  # as ours (nothing in AdvGAN training draws from it)
        sync(device)
        start = now()
        for _, (x, y) in cycle_batches(loader, iterations):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            goal = torch.full_like(y, h.target_class) if h.targeted else y
            set_requires_grad(generator, False)
            set_requires_grad(critic, True)
            with torch.no_grad():
                x_adv = apply_perturbation(x, generator(x))
            terms = loss.critic(critic(x), critic(x_adv))
            step(d_opt, terms)
            losses.add("d", terms)
            set_requires_grad(generator, True)
            set_requires_grad(critic, False)
            perturbation = generator(x)
            x_adv = apply_perturbation(x, perturbation)
            terms, _ = loss.generator(classifier(x_adv), goal, critic(x_adv), perturbation)
            step(g_opt, terms)
            losses.add("g", terms)
            losses.end_iteration()
        sync(device)
        seconds = now() - start
    return losses.result(seconds, iterations, peak, generator)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The flags, with ``args.model``: the configured AdvGANModule arguments with the flags' overrides."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224, help="tile side (paper: 224)")
    parser.add_argument("--batch", type=int, default=16, help="paper: 16")
    parser.add_argument("--classifier-arch", default="resnet34", choices=sorted(RESNET_WEIGHTS),
                        help="the attacked ResNet (paper: resnet34)")
    configured = "default: conf/model/advgan.yaml's"
    parser.add_argument("--base-width", type=int, help=f"generator's first width ({configured}, Xiao et al.: 8)")
    parser.add_argument("--depth", type=int, help=f"generator's stride-2 blocks ({configured}, Xiao et al.: 2)")
    parser.add_argument("--residual-blocks", type=int, help=f"generator's residual blocks ({configured}, Xiao et al.: 4)")
    parser.add_argument("--critic-width", type=int, help=f"discriminator's first width ({configured}, Xiao et al.: 8)")
    parser.add_argument("--critic-depth", type=int, help=f"discriminator's stride-2 layers ({configured}, Xiao et al.: 3)")
    parser.add_argument("--thr", type=float, help=f"eq. 6's noise threshold ({configured}; no effect on speed)")
    parser.add_argument("--iterations", type=int, default=32, help="iterations (batches) per timed round")
    parser.add_argument("--warmup-iterations", type=int, default=2, help="untimed iterations per contestant first")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches in the in-memory dataset")
    parser.add_argument("--repeats", type=int, default=4, help="timed rounds per contestant")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="add ours with precision bf16-mixed (default: on CUDA only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time; cpu: this process's CPU seconds (CPU only: steadier on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.repeats < 1:
        parser.error(f"--iterations {args.iterations} and --repeats {args.repeats} must be >= 1")
    overrides = {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name) is not None}
    args.model = {**configured_model_kwargs(), **overrides}
    # The networks' own limits (advmed/nets/advgan.py), said here in flags before any Trainer starts.
    depth, critic_depth = args.model["depth"], args.model["critic_depth"]
    smallest = 2 ** (max(depth, critic_depth) + 1)
    if args.image_size % 2**depth or args.image_size < smallest:
        parser.error(f"--image-size {args.image_size} must be a multiple of {2**depth} (generator depth {depth}) "
                     f"and at least {smallest} (generator depth {depth}, discriminator depth {critic_depth})")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its lines and return the figures (the test reads them)."""
    args = parse_args(argv)
    template, device, runs = prepare_runs(args, args.image_size, build_template, ours_round, bare_round,
                                          lambda t: check_plain_schedule(t.hparams))
    h = template.hparams

    def millions(network: torch.nn.Module) -> str:
        return f"{sum(p.numel() for p in network.parameters()) / 1e6:.2f}M"

    print(f"AdvGAN training, {device} ({torch.get_num_threads()} threads), {args.image_size} px, batch {args.batch}, "
          f"generator width {h.base_width} depth {h.depth} x {h.residual_blocks} residual blocks "
          f"({millions(template.generator)}), discriminator width {h.critic_width} depth {h.critic_depth} "
          f"({millions(template.critic)}), target {args.classifier_arch} (random weights, {millions(template.classifier)}); "
          f"gamma {h.gamma}, theta {h.theta}, zeta {h.zeta}, thr {h.thr}; {args.iterations} iterations x {args.repeats} "
          f"rounds; {args.clock} clock; torch {torch.__version__}, lightning {L.__version__}")
    results = alternate(runs, device, args.iterations, args.warmup_iterations, args.repeats)
    return report(args, results, device)


def report(args: argparse.Namespace, results: dict[str, list[RoundResult]], device: torch.device) -> dict[str, Any]:
    figures = report_rounds("advgan", "AdvGANModule", "generator", args.batch, results, device)
    ours = figures["ours_img_s"]
    images = PAPER_ITERATIONS * PAPER_BATCH
    print(f"[paper context] Lockshin et al. trained AdvGAN for {PAPER_ITERATIONS:,} iterations x {PAPER_BATCH} = "
          f"{images:,} images (time not reported); at ours' {ours:.2f} img/s that is {images / ours / 3600:.1f} h "
          f"(comparable at 224 px, batch {PAPER_BATCH}, a ResNet34 target, on a GPU)")
    return figures


if __name__ == "__main__":
    main()
