"""Speed of advmed's attacks against torchattacks, side by side in one process.

Same model (torchvision ResNet with ImageNet normalisation inside a wrapper, random weights:
nothing is downloaded), same batch, same PGD settings; the two are timed alternately after a
warm-up. Throughput comes from the best of ``--repeats`` rounds (the minimum, as ``timeit``
advises: slower runs measure interference from other processes, not the attack); ratios are
the median over rounds of the two adjacent runs' ratio, which cancels slow drifts in machine
load. Labels are the model's clean predictions, so every sample starts correctly classified
and the success rate is the fraction of flipped predictions.

1. PGD L-inf float32: images/s of ours and torchattacks, ratio ours/theirs (target >= 1.0).
2. The success-vs-iterations curve 1..N (N = --curve-steps) for one eps: one traced PGD-N
   run against N separate PGD-k runs (k = 1..N), each followed by the forward that reads
   its prediction; cost ratio traced/separate (target <= 1/10).
3. CUDA only: ours with bf16 autocast + channels_last against torchattacks float32, with
   both attack success rates (target >= 1.5x, success within 1 point).

    python experiments/benchmarks/attacks.py --arch resnet34 --image-size 32 --batch 16 --steps 10 --device cpu
"""

from __future__ import annotations

import argparse
import copy

import torch
import torchattacks
import torchvision
from timing import Normalized, race
from torch import nn

from advmed.attacks import PGD


def success_rate(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(1) != y).float().mean().item() * 100


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", choices=["resnet34", "resnet50"], default="resnet34")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=9)
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps of the speed races")
    parser.add_argument(
        "--curve-steps", type=int, default=20, help="length of the iterations curve (0: skip)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--curve-repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    net = getattr(torchvision.models, args.arch)(weights=None, num_classes=args.num_classes)
    model = Normalized(net).to(device).eval()
    x = torch.rand(args.batch, 3, args.image_size, args.image_size, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)
    alpha = 2.5 * args.eps / args.steps
    print(
        f"{args.arch}, {args.image_size}px, batch {args.batch}, {args.steps} steps, eps {args.eps:.4f}, "
        f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"torchattacks {torchattacks.__version__}"
    )

    # 1. float32 PGD, same settings and random start.
    ours = PGD(eps=args.eps, alpha=alpha, steps=args.steps)
    theirs = torchattacks.PGD(model, eps=args.eps, alpha=alpha, steps=args.steps, random_start=True)
    t = race(
        {"ours": lambda: ours(model, x, y), "torchattacks": lambda: theirs(x, y)},
        device,
        args.warmup,
        args.repeats,
    )
    print(
        f"[pgd fp32] ours {args.batch / t.best('ours'):.1f} img/s | torchattacks "
        f"{args.batch / t.best('torchattacks'):.1f} img/s | ratio ours/theirs "
        f"{t.ratio('torchattacks', 'ours'):.3f} (target >= 1.0)"
    )

    # 2. The iterations curve: one traced run against one run per length.
    if args.curve_steps:
        n = args.curve_steps
        curve_alpha = 2.5 * args.eps / n  # one step size for every length, as the curve needs
        traced_pred: list[torch.Tensor] = []
        separate_pred: list[torch.Tensor] = []

        def traced() -> None:
            _, trace = PGD(eps=args.eps, alpha=curve_alpha, steps=n, seed=0, trace=True)(model, x, y)
            traced_pred[:] = [trace.pred]

        def separate() -> None:
            preds = []
            for k in range(1, n + 1):
                x_adv = PGD(eps=args.eps, alpha=curve_alpha, steps=k, seed=0)(model, x, y)
                with torch.no_grad():
                    preds.append(model(x_adv).argmax(1))
            separate_pred[:] = [torch.stack(preds)]

        t = race({"traced": traced, "separate": separate}, device, warmup=0, repeats=args.curve_repeats)
        agree = (traced_pred[0] == separate_pred[0]).float().mean().item() * 100
        curve = ", ".join(f"{v:.0f}" for v in (traced_pred[0] != y).float().mean(1).mul(100).tolist())
        print(
            f"[curve 1..{n}] traced PGD-{n} {t.best('traced'):.2f} s | {n} separate PGD-k "
            f"{t.best('separate'):.2f} s | cost ratio {t.ratio('traced', 'separate'):.3f} (target <= 0.100) | "
            f"predictions agree {agree:.1f}%"
        )
        print(f"[curve 1..{n}] success % per step: {curve}")

    # 3. Mixed precision + channels_last (ours, on its own channels_last copy of the model)
    #    against torchattacks float32 on the original.
    if device.type == "cuda":
        fast_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        fast = PGD(eps=args.eps, alpha=alpha, steps=args.steps, amp_dtype="bf16", channels_last=True, seed=0)
        adv: dict[str, torch.Tensor] = {}

        def ours_fast() -> None:
            adv["ours"] = fast(fast_model, x, y)

        def theirs_fp32() -> None:
            adv["torchattacks"] = theirs(x, y)

        t = race({"ours": ours_fast, "torchattacks": theirs_fp32}, device, args.warmup, args.repeats)
        ours_sr, theirs_sr = success_rate(model, adv["ours"], y), success_rate(model, adv["torchattacks"], y)
        print(
            f"[pgd bf16+channels_last vs fp32] ours {args.batch / t.best('ours'):.1f} img/s | torchattacks "
            f"{args.batch / t.best('torchattacks'):.1f} img/s | ratio {t.ratio('torchattacks', 'ours'):.2f} "
            f"(target >= 1.5) | success ours {ours_sr:.1f}% vs torchattacks {theirs_sr:.1f}% "
            f"(gap {abs(ours_sr - theirs_sr):.1f} points, target <= 1)"
        )


if __name__ == "__main__":
    main()
