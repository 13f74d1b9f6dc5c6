"""Cost of a training step under each training objective (advmed.objectives) relative to standard
training, on the same model and batch, against the forward / backward passes the objective implies.

Contestants: one ClassifierModule per objective (``--arch`` ResNet with the ImageNet normalisation
inside, random weights, every copy starting from the same weights), each with its own SGD (lr 1e-3,
momentum 0.9, weight decay 5e-4: the adversarial-training papers' optimiser; its cost is the same for
all), all on the same in-memory batch of random [0, 1] images:

- ``standard``: :class:`~advmed.objectives.Standard`, the model's loss on the clean batch;
- ``mixed``: :class:`~advmed.objectives.Mixed` at ``--fraction`` with FGSM (``conf/attack/fgsm.yaml``);
- ``pgd_at``: :class:`~advmed.objectives.PGDAT` with PGD-k (``--pgd-steps``, random start, step 2.5 eps / k);
- ``trades``: :class:`~advmed.objectives.TRADES` with k inner steps;
- ``mart``: :class:`~advmed.objectives.MART` with PGD-k;
- ``fgsm_rs``: :class:`~advmed.objectives.FGSMRS` (Wong et al.'s FGSM with a random start).

A step is what a training step of the module does with its objective: ``objective(module, x, y,
criterion, attack)``, ``zero_grad``, ``loss.backward()``, ``optimizer.step()``, the module in train mode
(the inner attacks switch to eval mode themselves). No Lightning: ``classifier.py`` measures what the
Trainer adds to a step, the same for every objective. Rounds of ``--steps`` steps alternate after an
untimed warm-up (timing.race, through gan_rounds.alternate); each objective's cost is the median over
rounds of its time / the standard step's time in the same round.

Passes implied, in batches (B images) of forward and backward passes through the network:

- standard 1 + 1; mixed (1 + f) + (1 + f), f the share of the batch attacked (one FGSM gradient on it);
- pgd_at (k + 1) + (k + 1): k gradient steps, then the training pass on x';
- trades (k + 3) + (k + 2): p(x) once without a graph, k KL steps, then f(x) and f(x') both differentiated
  (the natural loss and the KL both depend on f(x));
- mart (k + 2) + (k + 2): k PGD steps, then f(x) and f(x') both differentiated (the KL and the
  weight 1 - p_y(x) depend on f(x));
- fgsm_rs 2 + 2: one FGSM step, then the training pass on x'.

The benchmark counts them too, with hooks on the network during one untimed step per objective, and
prints both. ``passes`` is the work in standard steps, ``(forwards + 2 backwards) / 3`` (a backward
costs about two forwards), so ``time / passes`` near 1 means the objective costs what its passes
imply; the inner steps' backward computes input gradients only (no weight gradients), so it runs
somewhat below 1.

    # CPU, a few minutes on 1 thread (--clock cpu on a machine shared with other jobs)
    python experiments/benchmarks/objectives.py --device cpu --threads 1 --arch resnet18 --image-size 32 \\
        --batch 32 --steps 2 --repeats 3 --pgd-steps 10 --clock cpu
    # GPU
    python experiments/benchmarks/objectives.py --device cuda --arch resnet18 --image-size 64 --batch 128 \\
        --steps 10 --repeats 5 --pgd-steps 10
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gan_rounds import RoundResult, alternate, now, sync, use_clock
from omegaconf import OmegaConf
from torch import Tensor, nn

from advmed.attacks import PGD, build_attack
from advmed.models.classifier import ClassifierModule
from advmed.objectives import FGSMRS, MART, PGDAT, TRADES, Mixed, Objective, Standard

ARCHS = ("resnet18", "resnet34", "resnet50")
NUM_CLASSES = 9  # NCT-CRC-HE's classes
OPTIMIZER = {"_target_": "torch.optim.SGD", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4}
FGSM_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "attack" / "fgsm.yaml"
STANDARD = "standard"
NAMES = (STANDARD, "mixed", "pgd_at", "trades", "mart", "fgsm_rs")


@dataclass(frozen=True)
class Passes:
    """Forward and backward passes through the network in one training step, in batches."""

    forwards: float
    backwards: float

    @property
    def work(self) -> float:
        """In standard steps (one forward and one backward): ``(forwards + 2 backwards) / 3``."""
        return (self.forwards + 2 * self.backwards) / 3

    def matches(self, other: Passes) -> bool:
        return math.isclose(self.forwards, other.forwards) and math.isclose(self.backwards, other.backwards)

    def text(self) -> str:
        pairs = min(self.forwards, self.backwards)
        extra = self.forwards - pairs
        return f"{pairs:g}" + (f" + {extra:g} fwd" if extra else "")


def attacked_share(fraction: float, batch: int) -> float:
    """The share of a batch of ``batch`` images :func:`advmed.objectives.mixed.mix_adversarial` attacks."""
    return math.floor(fraction * batch + 0.5) / batch


def implied_passes(name: str, k: int, share: float) -> Passes:
    """What objective ``name`` implies per step (module docstring), with ``k`` inner steps and the mixed
    objective attacking ``share`` of the batch."""
    return {
        STANDARD: Passes(1, 1),
        "mixed": Passes(1 + share, 1 + share),
        "pgd_at": Passes(k + 1, k + 1),
        "trades": Passes(k + 3, k + 2),
        "mart": Passes(k + 2, k + 2),
        "fgsm_rs": Passes(2, 2),
    }[name]


def build_objective(name: str, eps: float, k: int, fraction: float) -> tuple[Objective, Any]:
    """``(objective, training attack)`` of contestant ``name``: the attack to give the module (None: the
    objective makes its own x', or trains on the clean batch)."""
    if name == STANDARD:
        return Standard(), None
    if name == "mixed":
        cfg = OmegaConf.to_container(OmegaConf.load(FGSM_CONFIG), resolve=True)
        return Mixed(fraction=fraction), build_attack({**cfg, "eps": eps})
    if name == "pgd_at":
        return PGDAT(eps=eps, steps=k), PGD(eps=eps, steps=k)
    if name == "trades":
        return TRADES(eps=eps, steps=k), None
    if name == "mart":
        return MART(eps=eps, steps=k), PGD(eps=eps, steps=k)
    if name == "fgsm_rs":
        return FGSMRS(eps=eps), None
    raise ValueError(f"unknown objective {name!r}: one of {', '.join(NAMES)}")


def build_contestants(args: argparse.Namespace, device: torch.device) -> dict[str, ClassifierModule]:
    """``{objective name: module}``, every module with the standard one's initial weights, in train mode."""
    modules: dict[str, ClassifierModule] = {}
    for name in NAMES:
        objective, attack = build_objective(name, args.eps, args.pgd_steps, args.fraction)
        module = ClassifierModule(arch=args.arch, num_classes=NUM_CLASSES, image_size=args.image_size,
                                  optimizer=OPTIMIZER, scheduler=None, objective=objective, train_attack=attack)
        if modules:
            module.load_state_dict(modules[STANDARD].state_dict())
        modules[name] = module.to(device).train()
    return modules


def make_optimizer(module: ClassifierModule) -> torch.optim.Optimizer:
    cfg = dict(OPTIMIZER)
    return getattr(torch.optim, cfg.pop("_target_").rsplit(".", 1)[-1])(module.parameters(), **cfg)


def training_step(module: ClassifierModule, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> Tensor:
    """One step of ``module``'s objective: its loss, backward, optimiser step (the module docstring)."""
    out = module.objective(module, x, y, module.criterion, module.train_attack)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    return out.loss.detach()


def count_passes(module: ClassifierModule, x: Tensor, y: Tensor) -> Passes:
    """The forward and backward passes through ``module.net`` in one training step (on a copy), in
    batches of ``len(x)``: a forward hook counts the images of every call, a hook on its output the
    images of every backward through it (autograd.grad w.r.t. an input included)."""
    module = copy.deepcopy(module)
    seen = {"forward": 0, "backward": 0}

    def on_forward(net: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        images = output.shape[0]
        seen["forward"] += images
        if output.requires_grad:
            output.register_hook(lambda grad: seen.__setitem__("backward", seen["backward"] + images))

    handle = module.net.register_forward_hook(on_forward)
    try:
        training_step(module, make_optimizer(module), x, y)
    finally:
        handle.remove()
    return Passes(seen["forward"] / len(x), seen["backward"] / len(x))


def objective_round(module: ClassifierModule, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                    device: torch.device) -> Callable[[int], RoundResult]:
    """A timed round of ``n`` steps of ``module`` (its weights and optimiser state carry over between rounds)."""

    def run(n: int) -> RoundResult:
        sync(device)
        start = now()
        for _ in range(n):
            loss = training_step(module, optimizer, x, y)
        sync(device)
        seconds = now() - start
        return RoundResult(seconds, n, None, last_losses={"loss": float(loss)})

    return run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18", choices=ARCHS)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed round")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps per objective first")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per objective")
    parser.add_argument("--pgd-steps", type=int, default=10, help="k: PGD-AT's and MART's PGD steps, TRADES's inner steps")
    parser.add_argument("--eps", type=float, default=8 / 255, help="L-inf budget of every objective (no effect on speed)")
    parser.add_argument("--fraction", type=float, default=0.5, help="the mixed objective's attacked share")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time; cpu: this process's CPU seconds (CPU only: steadier on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for flag in ("image_size", "batch", "steps", "repeats", "pgd_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} must be >= 1")
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps {args.warmup_steps} must be >= 0")
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction {args.fraction:g} must be in (0, 1]: 0 is the standard objective, always run")
    if not 0 <= args.eps <= 1:
        parser.error(f"--eps {args.eps:g} must be in [0, 1]")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but torch finds no CUDA device: use --device cpu")
    if args.clock == "cpu" and not args.device.startswith("cpu"):
        parser.error(f"--clock cpu counts this process's CPU seconds, which leave out the {args.device} device's work: "
                     "use --clock wall there")
    return args


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the rows (what the README records)."""
    header = ["objective", "passes implied (fwd+bwd)", "counted fwd / bwd", "ms/step (best round)",
              "time / standard (median, rounds)", "(time / standard) / passes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(f"| {r['objective']} | {r['implied'].text()} ({r['implied'].work:.3g}) | "
                     f"{r['counted'].forwards:g} / {r['counted'].backwards:g} | {r['ms_per_step']:.1f} | "
                     f"{r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | {r['efficiency']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its table and return the figures (the test reads them)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    use_clock(args.clock, device)
    torch.manual_seed(args.seed)
    modules = build_contestants(args, device)
    x = torch.rand(args.batch, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, NUM_CLASSES, (args.batch,), device=device)
    share = attacked_share(args.fraction, args.batch)
    params = sum(p.numel() for p in modules[STANDARD].net.parameters()) / 1e6
    print(f"Objective training-step cost, {device} ({torch.get_num_threads()} threads), {args.arch} ({params:.2f}M, "
          f"random weights), {args.image_size} px, batch {args.batch}, fp32; SGD; eps {args.eps:.4g}, k = "
          f"{args.pgd_steps} (PGD-AT, MART: PGD-k; TRADES: k KL steps), mixed: FGSM on {share:g} of the batch; "
          f"{args.steps} steps x {args.repeats} rounds after {args.warmup_steps} warm-up; {args.clock} clock; "
          f"torch {torch.__version__}")
    counted = {name: count_passes(module, x, y) for name, module in modules.items()}
    runs = {name: objective_round(module, make_optimizer(module), x, y, device) for name, module in modules.items()}
    results = alternate(runs, device, args.steps, args.warmup_steps, args.repeats)
    rows = []
    for name in NAMES:
        ratios = [o.seconds / s.seconds for o, s in zip(results[name], results[STANDARD])]
        implied = implied_passes(name, args.pgd_steps, share)
        ratio = statistics.median(ratios)
        rows.append({"objective": name, "implied": implied, "counted": counted[name],
                     "ms_per_step": 1000 * min(r.seconds for r in results[name]) / args.steps,
                     "ratio": ratio, "ratio_min": min(ratios), "ratio_max": max(ratios),
                     "efficiency": ratio / implied.work})
    print(table(rows))
    agree = all(r["counted"].matches(r["implied"]) for r in rows)
    print(f"[passes] counted by hooks on the network = implied by the objectives' definitions, every objective: {agree}")
    print("passes implied: forward+backward pairs (+ forwards without a backward), in batches; in brackets the work "
          "in standard steps, (forwards + 2 backwards) / 3. time / standard: median over rounds of the objective's "
          "round time / the standard round's; (time / standard) / passes < 1: cheaper than its passes imply (the "
          "inner steps' backward computes input gradients only)")
    return {"rows": rows, "results": results, "passes_agree": agree, "share": share}


if __name__ == "__main__":
    main()
