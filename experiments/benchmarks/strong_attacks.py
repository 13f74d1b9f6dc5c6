"""Speed of advmed's strong attacks (APGD-CE, AutoAttack, FAB-T, Square) against torchattacks, side by
side in one process, with the forward and backward passes each one makes.

Model: the demo classifier of ``make demo`` (``conf/experiment/demo.yaml``: torchvision ResNet34 with
the ImageNet normalisation inside, :class:`~advmed.models.classifier.ClassifierModule`, on 64 px tiles
of the 9 synthetic-histology classes), loaded with :func:`advmed.models.load_module` from ``--ckpt``
(the demo writes ``outputs/demo/train/checkpoints/best.ckpt``). Without ``--ckpt`` the same
architecture with random weights, which the output says. Batch: the first ``--batch`` tiles of the
synthetic-histology test split (seed 0), rendered in memory. With a checkpoint the labels are the true
ones (the attacks skip the images the model already gets wrong, as both libraries do); with random
weights they are the model's clean predictions, so every image starts correctly classified.

Equal work. ``torchattacks.AutoAttack`` runs its APGD, APGD-T and FAB-T with 10 iterations (their
class defaults; it takes no ``steps``) and Square with 5000 queries; here its attacks are given
``--steps`` iterations, as ours (100, the paper's), and Square ``--n-queries - 1`` (torchattacks
queries the start and then makes ``n_queries`` updates; ours counts the start in its budget), and
``n_classes`` = the model's K, so both run ``K - 1`` targets (ours: ``min(9, K - 1)``). Both
ensembles attack an image only while no attack has broken it (torchattacks' ``MultiAttack`` drops
the broken images after each attack, and each of its attacks skips the images it finds misclassified),
so on the same model they attack the same images up to the random starts. Inside our AutoAttack,
APGD-CE and APGD-T also drop an image the moment it is fooled (``early_stop``; torchattacks and the
original iterate it to the end of the run): the same images end up broken, with fewer passes.
``--aa-full-runs`` turns that off, for the equal-work ratio. The pass counts printed for each attack
show the work each side did.

Passes are counted with a forward hook on the model (calls, and rows = images through the network)
which hangs a tensor hook on every output that carries a graph: it fires once per backward pass
through the network (``torch.autograd.grad`` or ``.backward()``, each of FAB's retained-graph passes
included). Each pass is booked to the attack running when its forward ran; ``ensemble`` holds the
ensembles' own forwards (ours: the clean prediction and the check after each attack; torchattacks:
the check after each attack).

It prints:

* ``[apgd-ce]``, ``[fab-t]``, ``[square]``, ``[autoattack]``: seconds of each side (the best of
  ``--repeats`` alternating rounds, after a one-pass warm-up of the model), the ratio torchattacks
  time / our time (median over rounds; target >= 1.0), both robust accuracies, and the passes;
* ``[autoattack per attack, last round]``: seconds and passes of each attack of both ensembles
  (``ensemble``: their own forwards, and the seconds of the call outside the attacks);
* ``[autoattack demo]``: our AutoAttack's seconds per image on this model;
* ``[pass check]``: whether APGD-CE's backward rows are ``steps + 1`` times the rows it attacked
  (start + one per iteration) and its forward rows that plus the rows it saw (its clean prediction),
  alone and inside both ensembles.

    # the demo model (after `make demo`), CPU, one thread (about 10 min on a quiet 2-core machine)
    python experiments/benchmarks/strong_attacks.py --device cpu --threads 1 --batch 16 --steps 100 \\
        --ckpt outputs/demo/train/checkpoints/best.ckpt
    # a seconds-long run of every line (random weights, 32 px, 2 images, 3 steps, 20 queries)
    python experiments/benchmarks/strong_attacks.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torchattacks
from timing import race
from torch import Tensor, nn

from advmed.attacks import APGD, FAB, AutoAttack, Square
from advmed.data.histology.synthetic_histology import generate_histology
from advmed.models.checkpoint import load_module
from advmed.models.classifier import ClassifierModule

# The demo's model and data (conf/experiment/demo.yaml, conf/model/resnet34.yaml,
# conf/data/synthetic_histology.yaml); the smoke test checks these against the configs.
DEMO_ARCH, DEMO_IMAGE_SIZE, DEMO_NUM_CLASSES = "resnet34", 64, 9
DEMO_CKPT = "outputs/demo/train/checkpoints/best.ckpt"
ENSEMBLE = ("apgd-ce", "apgd-t", "fab-t", "square")  # AutoAttack 'standard', in order
OURS, THEIRS = "ours", "torchattacks"
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
QUICK = {"batch": 2, "steps": 3, "n_queries": 20, "repeats": 1, "image_size": 32}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, set explicitly (default 1)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100, help="iterations of APGD, APGD-T and FAB-T, both libraries")
    parser.add_argument("--n-queries", type=int, default=5000, help="Square's query budget, the start included")
    parser.add_argument("--eps", type=float, default=8 / 255, help="L-inf budget")
    parser.add_argument("--ckpt", type=Path, default=None,
                        help=f"the demo checkpoint ({DEMO_CKPT}); none: the same architecture with random weights")
    parser.add_argument("--image-size", type=int, default=None,
                        help=f"random weights only (default {DEMO_IMAGE_SIZE}); a checkpoint fixes its own")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed rounds per contest")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="cpu: this process's CPU seconds (CPU device only; steadier on a shared machine)")
    parser.add_argument("--only", nargs="+", choices=["apgd-ce", "autoattack", "fab-t", "square"],
                        default=["apgd-ce", "autoattack", "fab-t", "square"], help="the contests to run")
    parser.add_argument("--aa-full-runs", action="store_true",
                        help="our AutoAttack's APGD without early stop: every image iterates to the end, as torchattacks "
                             "(equal work; the default lets a fooled image leave, which changes no figure)")
    parser.add_argument("--quick", action="store_true",
                        help="seconds-long: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + " (random weights only)")
    args = parser.parse_args(argv)
    if args.quick:
        if args.ckpt is not None:
            parser.error("--quick runs 32 px random weights: drop --ckpt")
        for key, value in QUICK.items():
            setattr(args, key, value)
    for name in ("threads", "batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)} must be >= 1")
    if args.n_queries < 2:
        parser.error(f"--n-queries {args.n_queries} must be >= 2 (the start and one update)")
    if not 0 < args.eps <= 1:
        parser.error(f"--eps {args.eps} must be in (0, 1]")
    if args.ckpt is not None and args.image_size is not None:
        parser.error("--image-size is for random weights: a checkpoint fixes the image size it was trained on")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch finds no CUDA device: use --device cpu")
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu counts this process's CPU seconds, which leave out the GPU's work: use --clock wall")
    return args


# --------------------------------------------------------------------------- passes


@dataclass
class Passes:
    """Forward and backward passes through the model: calls, and rows (images through the network)."""

    forward_calls: int = 0
    forward_rows: int = 0
    backward_calls: int = 0
    backward_rows: int = 0
    seconds: float = 0.0

    def text(self) -> str:
        return (f"fwd {self.forward_calls} calls / {self.forward_rows} rows, "
                f"bwd {self.backward_calls} calls / {self.backward_rows} rows")

    def same_work(self, other: Passes) -> bool:
        return (self.forward_rows, self.backward_rows) == (other.forward_rows, other.backward_rows)


@dataclass
class PassCounter:
    """Counts the passes through ``model``, each booked to the phase current at its forward."""

    model: nn.Module
    clock: Callable[[], float]
    phase: str = "other"
    passes: dict[str, Passes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._handle = self.model.register_forward_hook(self._on_forward)

    def book(self, phase: str) -> Passes:
        return self.passes.setdefault(phase, Passes())

    def _on_forward(self, module: nn.Module, args: Any, output: Tensor) -> None:
        booked = self.book(self.phase)
        booked.forward_calls += 1
        booked.forward_rows += output.shape[0]
        if output.requires_grad:  # a graph: each backward pass through it reaches this tensor once
            output.register_hook(partial(self._on_backward, booked))

    @staticmethod
    def _on_backward(booked: Passes, grad: Tensor) -> None:
        booked.backward_calls += 1
        booked.backward_rows += grad.shape[0]

    def within(self, fn: Callable[..., Any], phase: str) -> Callable[..., Any]:
        """``fn`` booking its passes (and its seconds) to ``phase``."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            outer, self.phase = self.phase, phase
            start = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.book(phase).seconds += self.clock() - start
                self.phase = outer

        return wrapped

    def take(self) -> dict[str, Passes]:
        """The passes counted since the last take, and a fresh count."""
        taken, self.passes = self.passes, {}
        return taken

    def remove(self) -> None:
        self._handle.remove()


def total(passes: dict[str, Passes]) -> Passes:
    out = Passes()
    for p in passes.values():
        out.forward_calls += p.forward_calls
        out.forward_rows += p.forward_rows
        out.backward_calls += p.backward_calls
        out.backward_rows += p.backward_rows
    return out


def apgd_ce_consistent(p: Passes, seen: int, attacked: int, steps: int) -> bool:
    """One APGD-CE run (no restart): a clean forward of the ``seen`` rows, then a forward and a
    backward of the ``attacked`` rows at the start and after each of the ``steps`` iterations."""
    return (p.backward_calls == steps + 1 and p.backward_rows == (steps + 1) * attacked
            and p.forward_rows == seen + (steps + 1) * attacked)


# --------------------------------------------------------------------------- contests


@dataclass
class Contest:
    """Both sides' seconds per round, the passes and the output of their last round."""

    seconds: dict[str, list[float]]
    passes: dict[str, dict[str, Passes]]
    outputs: dict[str, Tensor]
    same_passes_every_round: bool

    def best(self, side: str) -> float:
        return min(self.seconds[side])

    def ratio(self) -> float:
        """Median over rounds of torchattacks time / our time (> 1: ours is faster)."""
        return statistics.median(t / o for t, o in zip(self.seconds[THEIRS], self.seconds[OURS]))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def contest(runs: dict[str, Callable[[], Tensor]], counter: PassCounter, device: torch.device, repeats: int) -> Contest:
    """Each side once per round, alternately (timing.race flips the order every round), timed on the
    counter's clock; the passes of every round are counted and must repeat (both sides are seeded)."""
    seconds: dict[str, list[float]] = {side: [] for side in runs}
    passes: dict[str, list[dict[str, Passes]]] = {side: [] for side in runs}
    outputs: dict[str, Tensor] = {}

    def timed(side: str) -> None:
        counter.take()
        sync(device)
        start = counter.clock()
        outputs[side] = runs[side]()
        sync(device)
        seconds[side].append(counter.clock() - start)
        passes[side].append(counter.take())

    race({side: partial(timed, side) for side in runs}, device, 0, repeats)
    same = all(
        all({k: (v.forward_rows, v.backward_rows) for k, v in r.items()}
            == {k: (v.forward_rows, v.backward_rows) for k, v in rounds[0].items()} for r in rounds)
        for rounds in passes.values()
    )
    return Contest(seconds, {side: rounds[-1] for side, rounds in passes.items()}, outputs, same)


def robust_accuracy(model: nn.Module, x_adv: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item() * 100


# --------------------------------------------------------------------------- model and batch


def build_model(args: argparse.Namespace, device: torch.device) -> tuple[ClassifierModule, str]:
    if args.ckpt is not None:
        module = load_module(args.ckpt, ClassifierModule)
        hp = module.hparams
        described = (f"{hp.arch}, trained weights from {args.ckpt} ({hp.num_classes} classes, "
                     f"{hp.image_size} px)")
    else:
        torch.manual_seed(0)
        size = args.image_size or DEMO_IMAGE_SIZE
        module = ClassifierModule(arch=DEMO_ARCH, num_classes=DEMO_NUM_CLASSES, in_channels=3, image_size=size)
        described = (f"{DEMO_ARCH}, RANDOM weights (no --ckpt: the demo's architecture, not the trained demo "
                     f"model), {DEMO_NUM_CLASSES} classes, {size} px")
    return module.to(device).eval(), described


def demo_batch(module: ClassifierModule, batch: int, device: torch.device, trained: bool) -> tuple[Tensor, Tensor, str]:
    """The first ``batch`` synthetic-histology test tiles in [0, 1] and their labels: the true ones
    for a trained model, the clean predictions for random weights."""
    size = module.hparams.image_size or DEMO_IMAGE_SIZE
    x = generate_histology(0, "test", torch.arange(batch), size).float().div_(255).to(device)
    if trained:
        y = (torch.arange(batch) % module.hparams.num_classes).to(device)
        with torch.no_grad():
            correct = int((module(x).argmax(1) == y).sum())
        return x, y, f"true labels, clean accuracy {correct}/{batch}"
    with torch.no_grad():
        y = module(x).argmax(1)
    return x, y, "labels = clean predictions (every image starts correctly classified)"


# --------------------------------------------------------------------------- the benchmark


def line(tag: str, c: Contest, acc: dict[str, float], batch: int, target: str = "target >= 1.0") -> str:
    ours, theirs = c.best(OURS), c.best(THEIRS)
    return (f"[{tag}] ours {ours:.2f} s ({ours / batch:.3f} s/img) | torchattacks {theirs:.2f} s "
            f"({theirs / batch:.3f} s/img) | ratio torchattacks/ours {c.ratio():.3f} ({target}) | robust acc "
            f"ours {acc[OURS]:.1f}% vs torchattacks {acc[THEIRS]:.1f}%")


def passes_line(tag: str, c: Contest) -> str:
    parts = [f"{side}: {total(c.passes[side]).text()}" for side in (OURS, THEIRS)]
    return f"[{tag} passes] " + " | ".join(parts)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = CLOCKS[args.clock]
    model, described = build_model(args, device)
    x, y, labels = demo_batch(model, args.batch, device, trained=args.ckpt is not None)
    k = model.hparams.num_classes
    with torch.no_grad():
        correct = int((model(x).argmax(1) == y).sum())
    print(f"[setup] {described} | batch {args.batch} synthetic_histology test tiles, {labels} | eps {args.eps:.4f} "
          f"L-inf, {args.steps} steps, {args.n_queries} queries, {k - 1} targets | device {device}, "
          f"{torch.get_num_threads()} torch threads, {args.clock} clock, {args.repeats} rounds | torch "
          f"{torch.__version__}, torchattacks {torchattacks.__version__}")

    # Warm-up: one forward and input backward (first-call allocations, kernel selection).
    leaf = x.clone().requires_grad_(True)
    torch.autograd.grad(model(leaf).sum(), leaf)
    counter = PassCounter(model, clock)
    figures: dict[str, Any] = {"threads": torch.get_num_threads(), "steps": args.steps, "batch": args.batch,
                               "correct": correct, "num_classes": k, "contests": {}, "robust_accuracy": {},
                               "checks": {}}

    def report(tag: str, c: Contest, target: str = "target >= 1.0") -> None:
        figures["contests"][tag] = c
        acc = figures["robust_accuracy"][tag] = {side: robust_accuracy(model, c.outputs[side], y) for side in c.outputs}
        print(line(tag, c, acc, args.batch, target))
        print(passes_line(tag, c))

    try:
        if "apgd-ce" in args.only:
            ours = counter.within(APGD(args.eps, steps=args.steps, loss="ce", seed=0), "apgd-ce")
            theirs = counter.within(
                torchattacks.APGD(model, norm="Linf", eps=args.eps, steps=args.steps, n_restarts=1, loss="ce", seed=0),
                "apgd-ce")
            c = contest({OURS: lambda: ours(model, x, y), THEIRS: lambda: theirs(x, y)}, counter, device, args.repeats)
            report("apgd-ce", c)
            check = {side: apgd_ce_consistent(c.passes[side]["apgd-ce"], args.batch, correct, args.steps)
                     for side in (OURS, THEIRS)}
            figures["checks"]["apgd-ce"] = check
            print(f"[pass check] apgd-ce alone: bwd rows = (steps + 1) x {correct} rows attacked, fwd rows that + "
                  f"{args.batch} seen: ours {check[OURS]}, torchattacks {check[THEIRS]}; same work both sides "
                  f"{c.passes[OURS]['apgd-ce'].same_work(c.passes[THEIRS]['apgd-ce'])}")

        if "autoattack" in args.only:
            ours_aa = AutoAttack(args.eps, norm="Linf", version="standard", steps=args.steps,
                                 n_queries=args.n_queries, seed=0)
            if args.aa_full_runs:
                for stage in ours_aa._stages:
                    if isinstance(stage.attack, APGD):
                        stage.attack.early_stop = False
            for stage in ours_aa._stages:  # book each attack's passes to its name
                stage.attack.run = counter.within(stage.attack.run, stage.name)
            theirs_aa = torchattacks.AutoAttack(model, norm="Linf", eps=args.eps, version="standard", n_classes=k, seed=0)
            for atk, name in zip(theirs_aa._autoattack.attacks, ENSEMBLE, strict=True):
                if name == "square":
                    atk.n_queries = args.n_queries - 1  # + its start: the same queries as ours
                else:
                    atk.steps = args.steps  # torchattacks' AutoAttack leaves them at 10
                atk.forward = counter.within(atk.forward, name)
            ours_call = counter.within(lambda: ours_aa(model, x, y), "ensemble")
            theirs_call = counter.within(lambda: theirs_aa(x, y), "ensemble")
            c = contest({OURS: ours_call, THEIRS: theirs_call}, counter, device, args.repeats)
            report("autoattack", c)
            for name in (*ENSEMBLE, "ensemble"):
                cells = []
                for side in (OURS, THEIRS):
                    p = c.passes[side].get(name)
                    seconds = None if p is None else p.seconds
                    if name == "ensemble" and p is not None:  # the whole call less its attacks
                        seconds -= sum(c.passes[side][a].seconds for a in ENSEMBLE if a in c.passes[side])
                    cells.append(f"{side} " + ("not run" if p is None else f"{seconds:.2f} s, {p.text()}"))
                print(f"[autoattack per attack, last round] {name}: " + " | ".join(cells))
            s_per_img = c.best(OURS) / args.batch
            figures["autoattack_s_per_image"] = s_per_img
            print(f"[autoattack demo] ours {s_per_img:.3f} s/image ({c.best(OURS):.2f} s for {args.batch} images, "
                  f"{c.best(OURS) / max(correct, 1):.3f} s per attacked image, {correct} attacked) on "
                  f"{described.split(' (')[0]}; torchattacks {c.best(THEIRS) / args.batch:.3f} s/image with the same "
                  "iterations and queries")
            # Ours gives APGD-CE the correctly classified images only; torchattacks' MultiAttack gives
            # it the whole batch, and its APGD skips those it finds misclassified.
            # With early stop (ours by default) a fooled image leaves APGD: at most that many rows.
            seen = {OURS: correct, THEIRS: args.batch}
            check = {side: apgd_ce_consistent(c.passes[side]["apgd-ce"], seen[side], correct, args.steps)
                     for side in (OURS, THEIRS) if "apgd-ce" in c.passes[side]}
            figures["checks"]["autoattack apgd-ce"] = check
            early = "early stop, so at most" if not args.aa_full_runs else "no early stop (--aa-full-runs)"
            print(f"[pass check] apgd-ce inside AutoAttack: bwd rows = (steps + 1) x {correct} rows: "
                  + ", ".join(f"{side} {ok}" for side, ok in check.items())
                  + f" (ours: {early}; same robust accuracy both sides: "
                    f"{figures['robust_accuracy']['autoattack'][OURS] == figures['robust_accuracy']['autoattack'][THEIRS]})")

        if "fab-t" in args.only:
            ours = counter.within(FAB(args.eps, steps=args.steps, multi_targeted=True, seed=0), "fab-t")
            theirs = counter.within(
                torchattacks.FAB(model, norm="Linf", eps=args.eps, steps=args.steps, n_restarts=1,
                                 multi_targeted=True, n_classes=k, seed=0), "fab-t")
            model.zero_grad(set_to_none=True)
            c = contest({OURS: lambda: ours(model, x, y), THEIRS: lambda: theirs(x, y)}, counter, device, args.repeats)
            report("fab-t", c)
            # Ours takes input gradients only (torch.autograd.grad); torchattacks.FAB calls .backward(),
            # which also computes the weight gradients and accumulates them into the model's .grad.
            wrote = figures["fab_wrote_parameter_grads"] = any(p.grad is not None for p in model.parameters())
            model.zero_grad(set_to_none=True)
            print(f"[fab-t note] the model's parameters were given a .grad during the contest: {wrote} "
                  "(torchattacks.FAB back-propagates with .backward(), computing weight gradients too; advmed's "
                  "attacks take the input gradient only)")

        if "square" in args.only:
            ours = counter.within(Square(args.eps, n_queries=args.n_queries, p_init=0.8, seed=0), "square")
            theirs = counter.within(
                torchattacks.Square(model, norm="Linf", eps=args.eps, n_queries=args.n_queries - 1, n_restarts=1,
                                    p_init=0.8, loss="margin", seed=0), "square")
            c = contest({OURS: lambda: ours(model, x, y), THEIRS: lambda: theirs(x, y)}, counter, device, args.repeats)
            report("square", c)
    finally:
        counter.remove()
    unsteady = [tag for tag, c in figures["contests"].items() if not c.same_passes_every_round]
    if unsteady:
        print(f"[note] the passes changed between rounds in: {', '.join(unsteady)} (unseeded randomness)")
    return figures


if __name__ == "__main__":
    main()
