"""Speed of advmed's SNAP against a plain hand-written PyTorch loop doing the same update, side
by side in one process.

Same model (torchvision ResNet with ImageNet normalisation inside a wrapper, random weights:
nothing is downloaded), same batch, same masks and colour ranges, median start, signed-gradient
steps toward class 0, no early stop. The hand-written loop gets the masks and colour ranges
precomputed; ours draws them inside every call, so the ratio charges ours for that too. The two
outputs must be identical (checked and printed). Timed alternately after a warm-up; throughput
is from the best round, the ratio the median of adjacent rounds (see timing.py).

    python experiments/benchmarks/snap.py --arch resnet50 --image-size 64 --batch 32 --steps 10 --device cpu

Target: ours / hand-written throughput >= 0.95.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import torchvision
from timing import Normalized, race

from advmed.attacks import SNAP
from advmed.attacks.patch.snap import colour_range


def hand_written_snap(model, x, target, region, lo, hi, steps: int, step_size: float) -> torch.Tensor:
    """The SNAP update in plain PyTorch: x' = where(m, delta, x); delta <- clip(delta - a*sign(grad CE(target)))."""
    patch = x.flatten(2).median(dim=2).values[..., None, None].expand_as(x).clamp(lo, hi)
    for _ in range(steps):
        patch = patch.detach().requires_grad_(True)
        loss = F.cross_entropy(model(torch.where(region, patch, x)), target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, patch)
        patch = torch.minimum(torch.maximum(patch - step_size * grad.sign(), lo), hi)
    return torch.where(region, patch.detach(), x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["resnet18", "resnet34", "resnet50"], default="resnet50")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--area-fraction", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-size", type=float, default=0.02)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = Normalized(getattr(torchvision.models, args.arch)(weights=None, num_classes=2)).to(device).eval()
    x = torch.rand(args.batch, 3, args.image_size, args.image_size, device=device)
    y = torch.ones(args.batch, dtype=torch.long, device=device)
    ours = SNAP(area_fraction=args.area_fraction, steps=args.steps, step_size=args.step_size, confidence=None, seed=0)
    # The same masks and ranges ours draws (same seed), precomputed for the hand-written loop.
    region = ours.masks(x, torch.Generator(device=device).manual_seed(0))
    lo, hi = colour_range(x, ours.colour_quantiles)
    target = torch.zeros_like(y)
    print(
        f"{args.arch}, {args.image_size}px, batch {args.batch}, {args.steps} steps, area {args.area_fraction}, "
        f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    out: dict[str, torch.Tensor] = {}

    def run_ours() -> None:
        out["ours"] = ours(model, x, y)

    def run_hand() -> None:
        out["hand"] = hand_written_snap(model, x, target, region, lo, hi, args.steps, args.step_size)

    t = race({"ours": run_ours, "hand": run_hand}, device, args.warmup, args.repeats)
    same = torch.equal(out["ours"], out["hand"])
    print(
        f"[snap step] ours {args.batch * args.steps / t.best('ours'):.1f} img-steps/s | hand-written "
        f"{args.batch * args.steps / t.best('hand'):.1f} img-steps/s | ratio ours/hand {t.ratio('hand', 'ours'):.3f} "
        f"(target >= 0.95) | identical output: {same}"
    )


if __name__ == "__main__":
    main()
