"""Training speed of advmed's StyleGAN2Module through a Lightning Trainer against the same networks
and losses in a bare float32 PyTorch loop, side by side in one process.

Ours: :class:`advmed.models.stylegan2.StyleGAN2Module` fitted by a real ``lightning.Trainer`` (logger,
checkpointing and progress bar off) for the ``max_steps`` that make ``--iterations`` iterations,
with lazy R1 every 16 critic steps, path length every 4 generator steps, style mixing 0.9 and the
generator EMA, as configured by default. Its FID extractor, built at ``setup`` for the test step and
never called in training, is replaced by a stand-in so that no Inception weights file is needed.

Bare: StyleGAN2Generator / StyleGAN2Discriminator built with the same settings and loaded with the
same initial weights, the same loss classes (NonSaturatingLoss, R1Penalty, PathLengthPenalty) and
Adam with the same lazily rescaled lr / betas, in a hand-written loop: critic step, R1 step every
16 critic steps, generator step, path-length step every 4 generator steps, EMA update. It draws its
latents and noise in the same order from the same seed, so both contestants compute the same
numbers: the benchmark prints whether their first- and last-iteration losses and final EMA
weights agree.

Both see the same in-memory random [0, 1] images with labels. Rounds alternate (timing.race); a
round times the training loop only (gan_rounds.py); throughput is from the best round, the ratio the
median over rounds of bare time / our time. s/kimg = seconds per 1000 real images.

    # GPU: config F widths at 128 px, batch 32 (the paper's setting)
    python experiments/benchmarks/stylegan2.py --device cuda
    # CPU, about a minute (add --clock cpu on a machine shared with other jobs)
    python experiments/benchmarks/stylegan2.py --device cpu --threads 1 --image-size 32 --batch 8 \\
        --channel-base 1024 --channel-max 32 --z-dim 64 --mapping-layers 2 --iterations 16 --repeats 6

On CUDA a third contestant is ours with ``precision="bf16-mixed"`` (StyleGAN2Module has no
channels_last option, so bf16 alone), against the float32 bare loop.

Target: ours / bare throughput >= 0.95.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from gan_rounds import (
    NUM_CLASSES,
    LossRecorder,
    PeakMemory,
    RoundResult,
    alternate,
    cycle_batches,
    lightning_round,
    now,
    prepare_runs,
    report_rounds,
    set_requires_grad,
    sync,
)
from torch import nn
from torch.utils.data import DataLoader

from advmed.losses.stylegan2 import NonSaturatingLoss, PathLengthPenalty, R1Penalty
from advmed.models.gan import lazy_reg_optimizer_kwargs
from advmed.models.stylegan2 import STYLEGAN2_OPTIMIZER, StyleGAN2Module
from advmed.nets.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

# Logged metric of StyleGAN2Module -> the name the bare loop records the same term under.
LOSS_NAMES = {"train/d_real": "d_real", "train/d_fake": "d_fake", "train/d_r1": "d_r1",
              "train/g_adversarial": "g_adversarial", "train/g_path_length": "g_path_length"}
# Paper context (issue 9): the official code's speed and Lockshin et al.'s run, 280k iterations of
# batch 32 = 8960 kimg in 7 days 21 hours on one RTX A6000.
OFFICIAL_V100_S_PER_KIMG = 13.0
PAPER_SECONDS, PAPER_KIMG = (7 * 24 + 21) * 3600, 280_000 * 32 / 1000


class BenchStyleGAN2Module(StyleGAN2Module):
    """StyleGAN2Module whose FID feature extractor is a stand-in. ``setup`` builds the extractor at
    fit time so that a missing Inception file fails before training; only the test step uses it, so
    the training step timed here is StyleGAN2Module's own."""

    def fid_feature_extractor(self) -> nn.Module:
        return nn.Identity()


def optimizer_steps(iterations: int, critic_interval: int | None, generator_interval: int | None) -> int:
    """Lightning's ``max_steps`` for ``iterations`` iterations from fresh counters: a critic and a
    generator step each, plus a regulariser step at every multiple of each interval (from 0)."""
    def reg_steps(interval: int | None) -> int:
        return (iterations - 1) // interval + 1 if interval and iterations else 0

    return 2 * iterations + reg_steps(critic_interval) + reg_steps(generator_interval)


def build_template(args: argparse.Namespace) -> BenchStyleGAN2Module:
    return BenchStyleGAN2Module(
        num_classes=NUM_CLASSES, in_channels=3, image_size=args.image_size, z_dim=args.z_dim, w_dim=args.z_dim,
        mapping_layers=args.mapping_layers, channel_base=args.channel_base, channel_max=args.channel_max,
        r1_gamma=args.r1_gamma,
    )


def ema_beta(decay: float, rampup: float | None, steps: int) -> float:
    """StyleGAN2-ADA's ramped EMA decay after ``steps`` generator steps (0 at the first: a copy)."""
    if rampup is None:
        return decay
    return min(decay, 0.5 ** (1.0 / (rampup * steps))) if steps > 0 else 0.0


def bare_round(template: StyleGAN2Module, loader: DataLoader, iterations: int, device: torch.device,
               seed: int) -> RoundResult:
    """The same training as the module's, written as a plain loop (see the module docstring)."""
    h = template.hparams
    with PeakMemory(device) as peak:
        generator = StyleGAN2Generator(h.z_dim, h.w_dim, h.num_classes, h.image_size, h.in_channels,
                                       h.channel_base, h.channel_max, h.mapping_layers)
        critic = StyleGAN2Discriminator(h.num_classes, h.image_size, h.in_channels, h.channel_base, h.channel_max)
        generator.load_state_dict(template.generator.state_dict())
        critic.load_state_dict(template.critic.state_dict())
        generator, critic = generator.to(device).train(), critic.to(device).train()
        generator_ema = copy.deepcopy(generator).eval().requires_grad_(False)
        gan_loss, r1 = NonSaturatingLoss(), R1Penalty(h.r1_gamma)
        path_length = PathLengthPenalty(h.pl_weight, h.pl_decay, h.pl_batch_shrink).to(device)
        d_every, g_every = h.critic_reg_interval, h.generator_reg_interval

        def adam(params, interval: int | None) -> torch.optim.Adam:
            rescaled = lazy_reg_optimizer_kwargs(STYLEGAN2_OPTIMIZER["lr"], STYLEGAN2_OPTIMIZER["betas"], interval)
            return torch.optim.Adam(params, eps=STYLEGAN2_OPTIMIZER["eps"], **rescaled)

        g_opt, d_opt = adam(generator.parameters(), g_every), adam(critic.parameters(), d_every)

        def step(optimizer: torch.optim.Optimizer, terms: dict[str, torch.Tensor], scale: int = 1) -> None:
            optimizer.zero_grad(set_to_none=True)
            (sum(terms.values()) * scale).backward()
            optimizer.step()

        def training_ws(labels: torch.Tensor) -> torch.Tensor:
            z = torch.randn(labels.shape[0], h.z_dim, device=labels.device)
            return generator.training_ws(z, labels, h.style_mixing_prob)

        losses = LossRecorder()
        torch.manual_seed(seed)
        sync(device)
        start = now()
        for i, (x, y) in cycle_batches(loader, iterations):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            set_requires_grad(generator, False)
            set_requires_grad(critic, True)
            with torch.no_grad():
                fake = generator.synthesis(training_ws(y))
            terms = gan_loss.critic(critic(x, y), critic(fake, y))
            step(d_opt, terms)
            losses.add("d", terms)
            if d_every and i % d_every == 0:  # lazy R1, its loss times the interval
                terms = r1(lambda images, labels=y: critic(images, labels), x)
                step(d_opt, terms, d_every)
                losses.add("d", terms)
            set_requires_grad(generator, True)
            set_requires_grad(critic, False)
            terms = gan_loss.generator(critic(generator.synthesis(training_ws(y)), y))
            step(g_opt, terms)
            losses.add("g", terms)
            if g_every and i % g_every == 0:  # lazy path-length regularisation
                terms = path_length(generator.synthesis, training_ws(y))
                step(g_opt, terms, g_every)
                losses.add("g", terms)
            with torch.no_grad():
                beta = ema_beta(h.ema_decay, h.ema_rampup, i)
                for ema, weight in zip(generator_ema.parameters(), generator.parameters()):
                    ema.lerp_(weight, 1.0 - beta)
                for ema, buffer in zip(generator_ema.buffers(), generator.buffers()):
                    ema.copy_(buffer)
            losses.end_iteration()
        sync(device)
        seconds = now() - start
    return losses.result(seconds, iterations, peak, generator_ema)


def ours_round(template: StyleGAN2Module, loader: DataLoader, iterations: int, device: torch.device,
               precision: str, seed: int) -> RoundResult:
    h = template.hparams
    steps = optimizer_steps(iterations, h.critic_reg_interval, h.generator_reg_interval)
    return lightning_round(template, loader, iterations, steps, device, precision, LOSS_NAMES,
                           counted=lambda m: m.critic_steps, seed=seed)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channel-base", type=int, default=32768, help="config F: 32768")
    parser.add_argument("--channel-max", type=int, default=512, help="config F: 512")
    parser.add_argument("--z-dim", type=int, default=512, help="z and w size (config F: 512)")
    parser.add_argument("--mapping-layers", type=int, default=8, help="config F: 8")
    parser.add_argument("--r1-gamma", type=float, default=None, help="default: 0.0002 R^2 / batch (StyleGAN2-ADA)")
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
    if args.r1_gamma is None:
        args.r1_gamma = 0.0002 * args.image_size**2 / args.batch
    if args.iterations < 1 or args.repeats < 1:
        parser.error(f"--iterations {args.iterations} and --repeats {args.repeats} must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its lines and return the figures (the test reads them)."""
    args = parse_args(argv)
    template, device, runs = prepare_runs(args, args.image_size, build_template, ours_round, bare_round)
    h = template.hparams
    print(f"StyleGAN2 training, {device} ({torch.get_num_threads()} threads), {args.image_size} px, batch "
          f"{args.batch}, channel_base {h.channel_base}, channel_max {h.channel_max}, z/w {h.z_dim}, mapping "
          f"{h.mapping_layers} layers, {sum(p.numel() for p in template.generator.parameters()) / 1e6:.2f}M G / "
          f"{sum(p.numel() for p in template.critic.parameters()) / 1e6:.2f}M D parameters; {args.iterations} "
          f"iterations x {args.repeats} rounds; R1 every {h.critic_reg_interval}, path length every "
          f"{h.generator_reg_interval}, EMA on; {args.clock} clock; torch {torch.__version__}, lightning {L.__version__}")
    results = alternate(runs, device, args.iterations, args.warmup_iterations, args.repeats)
    return report(args, results, device)


def report(args: argparse.Namespace, results: dict[str, list[RoundResult]], device: torch.device) -> dict[str, Any]:
    figures = report_rounds("stylegan2", "StyleGAN2Module", "EMA", args.batch, results, device, per_kimg=True)
    ours = figures["ours_img_s"]
    paper = PAPER_SECONDS / PAPER_KIMG
    print(f"[paper context] official StyleGAN2 code ~{OFFICIAL_V100_S_PER_KIMG:.0f} s/kimg on one V100 at 128 px; "
          f"Lockshin et al.: 280k iterations x 32 = {PAPER_KIMG:.0f} kimg in 7 d 21 h on one RTX A6000 = "
          f"{paper:.0f} s/kimg; ours {1000 / ours:.1f} s/kimg at the settings above (comparable at 128 px, batch 32, "
          "config F widths on a GPU)")
    return figures


if __name__ == "__main__":
    main()
