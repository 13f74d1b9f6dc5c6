"""Training speed of advmed's SRGANModule through a Lightning Trainer against the same networks and
losses in a bare float32 PyTorch loop, side by side in one process.

Ours: :class:`advmed.models.srgan.SRGANModule` in its adversarial phase (no pixel-MSE pre-training)
fitted by a real ``lightning.Trainer`` (logger, checkpointing and progress bar off) for
``2 * --iterations`` optimiser steps (one critic and one generator step per batch). The perceptual
term is the real :class:`~advmed.nets.vgg_features.VGGFeatures` at ``--vgg-layer`` (relu5_4 =
phi_{5,4}, the paper's) on torchvision's VGG19 layers with random weights: the same cost as ImageNet
weights, nothing loaded or downloaded.

Bare: SRResNet / SRDiscriminator built with the same settings and loaded with the same initial
weights, a copy of the same frozen VGG19 and the same SRGANLoss (alpha, beta), Adam as Ledig et al.
(lr 1e-4, betas (0.9, 0.999)), in a hand-written loop: make the (I_HR, I_LR) pair, critic step on
``G(I_LR)`` made without gradients, generator step on a fresh ``G(I_LR)``, as the module does. The
module builds the pair in each of its two hooks; the bare loop builds it once per batch (that
second resize is charged to ours). Both compute the same numbers from the same weights: the
benchmark prints whether their first- and last-iteration losses and final generator weights agree.

Both see the same in-memory random [0, 1] tiles. Rounds alternate (timing.race); a round times the
training loop only (gan_rounds.py); throughput is from the best round, the ratio the median over
rounds of bare time / our time.

    # GPU: the paper's sizes (224 px tiles -> I_HR 256, I_LR 128), Ledig et al.'s widths, batch 16
    python experiments/benchmarks/srgan.py --device cuda
    # CPU, about a minute (add --clock cpu on a machine shared with other jobs)
    python experiments/benchmarks/srgan.py --device cpu --threads 1 --tile-size 40 --hr-size 32 --lr-size 16 \\
        --batch 8 --num-blocks 4 --channels 16 --critic-width 16 --iterations 8 --repeats 6

On CUDA a third contestant is ours with ``precision="bf16-mixed"`` (SRGANModule has no
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
from torch.utils.data import DataLoader

from advmed.losses.srgan import SRGANLoss
from advmed.models.srgan import SRGANModule
from advmed.nets.srgan import SRDiscriminator, SRResNet
from advmed.nets.srgan_pairs import make_sr_pair
from advmed.nets.vgg_features import truncated_vgg19

# Logged metric of SRGANModule -> the name the bare loop records the same term under.
LOSS_NAMES = {"train/d_real": "d_real", "train/d_fake": "d_fake", "train/g_content": "g_content",
              "train/g_adversarial": "g_adversarial"}


def build_template(args: argparse.Namespace) -> SRGANModule:
    return SRGANModule(
        in_channels=3, image_size=args.tile_size, scale=args.hr_size // args.lr_size, hr_size=args.hr_size,
        lr_size=args.lr_size, num_blocks=args.num_blocks, channels=args.channels, critic_width=args.critic_width,
        perceptual={"layer": args.vgg_layer}, feature_network=truncated_vgg19(args.vgg_layer),
    )


def ours_round(template: SRGANModule, loader: DataLoader, iterations: int, device: torch.device,
               precision: str, seed: int) -> RoundResult:
    return lightning_round(template, loader, iterations, 2 * iterations, device, precision, LOSS_NAMES,
                           counted=lambda m: m.generator_steps, seed=seed)


def _adam(params, cfg: dict[str, Any]) -> torch.optim.Adam:
    if cfg.get("_target_") != "torch.optim.Adam":
        raise ValueError(f"the bare loop builds Adam, but the module's optimiser is {cfg.get('_target_')!r}")
    return torch.optim.Adam(params, **{k: (tuple(v) if k == "betas" else v) for k, v in cfg.items() if k != "_target_"})


def bare_round(template: SRGANModule, loader: DataLoader, iterations: int, device: torch.device,
               seed: int) -> RoundResult:
    """The module's adversarial-phase training as a plain loop (see the module docstring)."""
    h = template.hparams
    with PeakMemory(device) as peak:
        generator = SRResNet(h.scale, h.num_blocks, h.channels, h.in_channels)
        critic = SRDiscriminator(h.critic_width, h.critic_pool_size, h.in_channels)
        generator.load_state_dict(template.generator.state_dict())
        critic.load_state_dict(template.critic.state_dict())
        generator, critic = generator.to(device).train(), critic.to(device).train()
        features = copy.deepcopy(template.perceptual_features).to(device)  # frozen, eval mode
        loss = SRGANLoss(features, h.alpha, h.beta, content_fallback=h.perceptual["fallback"])
        g_opt, d_opt = _adam(generator.parameters(), h.generator_optimizer), _adam(critic.parameters(), h.critic_optimizer)

        def step(optimizer: torch.optim.Optimizer, terms: dict[str, torch.Tensor]) -> None:
            optimizer.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            optimizer.step()

        losses = LossRecorder()
        torch.manual_seed(seed)
        sync(device)
        start = now()
        for _, (tiles, _labels) in cycle_batches(loader, iterations):
            hr, lr = make_sr_pair(tiles.to(device, non_blocking=True), h.hr_size, h.lr_size, h.hr_kernel, h.lr_kernel)
            set_requires_grad(generator, False)
            set_requires_grad(critic, True)
            with torch.no_grad():
                sr = generator(lr)
            terms = loss.discriminator(critic(hr), critic(sr))
            step(d_opt, terms)
            losses.add("d", terms)
            set_requires_grad(generator, True)
            set_requires_grad(critic, False)
            sr = generator(lr)
            terms = loss.generator(sr, hr, critic(sr))
            step(g_opt, terms)
            losses.add("g", terms)
            losses.end_iteration()
        sync(device)
        seconds = now() - start
    return losses.result(seconds, iterations, peak, generator)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tile-size", type=int, default=224, help="side of the data tiles (paper: 224)")
    parser.add_argument("--hr-size", type=int, default=256, help="I_HR side (paper: 256)")
    parser.add_argument("--lr-size", type=int, default=128, help="I_LR side (paper: 128); hr / lr is the scale")
    parser.add_argument("--batch", type=int, default=16, help="Ledig et al.: 16")
    parser.add_argument("--num-blocks", type=int, default=16, help="SRResNet residual blocks (Ledig et al.: 16)")
    parser.add_argument("--channels", type=int, default=64, help="SRResNet channels (Ledig et al.: 64)")
    parser.add_argument("--critic-width", type=int, default=64, help="discriminator width (Ledig et al.: 64)")
    parser.add_argument("--vgg-layer", default="relu5_4", help="VGG19 layer of the content loss (paper: relu5_4)")
    parser.add_argument("--iterations", type=int, default=16, help="iterations (batches) per timed round")
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
    if args.lr_size < 1 or args.hr_size % args.lr_size:
        parser.error(f"--hr-size {args.hr_size} must be a multiple of --lr-size {args.lr_size} (x2 or x4)")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its lines and return the figures (the test reads them)."""
    args = parse_args(argv)
    template, device, runs = prepare_runs(args, args.tile_size, build_template, ours_round, bare_round)
    h = template.hparams
    print(f"SRGAN x{h.scale} training, {device} ({torch.get_num_threads()} threads), {args.tile_size} px tiles -> "
          f"I_LR {h.lr_size} / I_HR {h.hr_size}, batch {args.batch}, SRResNet {h.num_blocks} blocks x {h.channels} "
          f"channels ({sum(p.numel() for p in template.generator.parameters()) / 1e6:.2f}M), discriminator width "
          f"{h.critic_width} ({sum(p.numel() for p in template.critic.parameters()) / 1e6:.2f}M), VGG19 "
          f"{args.vgg_layer} (random weights); {args.iterations} iterations x {args.repeats} rounds; "
          f"{args.clock} clock; torch {torch.__version__}, lightning {L.__version__}")
    results = alternate(runs, device, args.iterations, args.warmup_iterations, args.repeats)
    return report(args, results, device)


def report(args: argparse.Namespace, results: dict[str, list[RoundResult]], device: torch.device) -> dict[str, Any]:
    return report_rounds("srgan", "SRGANModule", "generator", args.batch, results, device)


if __name__ == "__main__":
    main()
