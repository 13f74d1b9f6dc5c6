"""Cost of an adversarial-training step against a clean one, through advmed's own ClassifierModule
and a Lightning Trainer, side by side in one process.

Contestants, all starting from the same ResNet weights on the same in-memory batches:

- clean: :class:`~advmed.models.classifier.ClassifierModule` with ``adv_fraction=0``;
- FGSM: the same module with ``train_attack`` = :class:`advmed.attacks.FGSM` built from
  ``conf/attack/fgsm.yaml`` and ``adv_fraction`` = ``--adv-fraction``;
- PGD-7: ``train_attack`` = :class:`advmed.attacks.PGD` from ``conf/attack/pgd.yaml`` with
  ``steps=7`` (random start, step 2.5 eps / 7, no early stop), same fraction.

With ``adv_fraction=1.0`` (the default, Madry et al.'s adversarial training) every image of a batch
is replaced by its attacked copy made with the current weights; the paper-style configs of this
project use 0.5 (``conf/train.yaml``'s example, the online variant of ``experiment=pervin/unet_fgsm``):
``--adv-fraction 1.0 0.5`` times both. Each contestant is fitted by a real Trainer for ``--steps``
steps per round (classifier.py's rounds: the training loop only), rounds alternate (timing.race),
and each cost is the median over rounds of the contestant's time / the clean time of the same round.

The step's work in FLOPs (FlopCounterMode, gpu_throughput.py) is printed beside each measured cost:
an attack that takes only input gradients (``torch.autograd.grad`` w.r.t. x, no weight-gradient
work) costs a forward and an input backward per gradient step, about 2 / 3 of a clean training step,
so FGSM at fraction 1 is about 1.67x a clean step and PGD-7 about 5.7x; with weight gradients they
would be 2x and 8x. A ``[attack work]`` line checks what one attack call does to the model: its
FLOPs against a forward, whether batch-norm statistics moved, whether a ``.grad`` was left.

    # CPU, about two minutes (add --clock cpu on a machine shared with other jobs)
    python experiments/benchmarks/adversarial_training.py --device cpu --threads 1 --arch resnet34 \\
        --image-size 64 --batch 16 --steps 4 --repeats 3
    # GPU
    python experiments/benchmarks/adversarial_training.py --device cuda --arch resnet34 --image-size 224 \\
        --batch 64 --steps 20 --bf16 --channels-last --adv-fraction 1.0 0.5

Targets at adv_fraction 1.0: FGSM <= 1.85x, PGD-7 <= 6.3x a clean step.
"""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from classifier import (
    add_common_flags,
    build_template,
    check_common_flags,
    describe,
    ours_round,
    setup,
    spread,
)
from gan_rounds import alternate, images_per_s, throughput_ratio
from gpu_throughput import count_flops, forward_flops, training_step_flops
from omegaconf import OmegaConf
from torch import Tensor

from advmed.attacks import Attack, build_attack
from advmed.models.classifier import ClassifierModule

ATTACK_CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf" / "attack"
PGD_STEPS = 7
CLEAN = "clean"
# Contestant kind -> (attack config file, overrides, target cost at adv_fraction 1.0).
KINDS = {"fgsm": ("fgsm.yaml", {}, 1.85), f"pgd-{PGD_STEPS}": ("pgd.yaml", {"steps": PGD_STEPS}, 6.3)}
PAPER_FRACTION = 0.5  # conf/train.yaml's adversarial-training example; pervin/unet_fgsm's online variant
FLOP_IMAGES = 4  # images of the slice the FLOPs are counted on (they grow linearly with the batch)


def build_train_attack(kind: str, eps: float | None, bf16: bool, channels_last: bool,
                       config_dir: Path = ATTACK_CONFIG_DIR) -> Attack:
    """The training attack of a contestant ``kind`` of :data:`KINDS`, from its config file (``eps``
    overrides the configured budget; bf16 / channels_last follow the training's)."""
    file, overrides, _ = KINDS[kind]
    cfg = OmegaConf.to_container(OmegaConf.load(config_dir / file), resolve=True)
    cfg.update(overrides, amp_dtype="bf16" if bf16 else None, channels_last=channels_last)
    if eps is not None:
        cfg["eps"] = eps
    return build_attack(cfg)


def contestant_name(kind: str, fraction: float) -> str:
    return f"{kind}@{fraction:g}"


def attacked_module(args: argparse.Namespace, kind: str, fraction: float,
                    clean: ClassifierModule) -> ClassifierModule:
    """``clean``'s network and weights, trained adversarially with the ``kind`` attack at ``fraction``."""
    attack = build_train_attack(kind, args.eps, args.bf16, args.channels_last)
    module = build_template(args.arch, args.image_size, args.channels_last, adv_fraction=fraction,
                            train_attack=attack)
    module.load_state_dict(clean.state_dict())
    return module


def build_contestants(args: argparse.Namespace) -> dict[str, ClassifierModule]:
    """``{"clean": module, "<kind>@<fraction>": module, ...}``, every module with the clean one's weights."""
    clean = build_template(args.arch, args.image_size, args.channels_last)
    modules = {CLEAN: clean}
    for fraction in args.adv_fraction:
        for kind in KINDS:
            modules[contestant_name(kind, fraction)] = attacked_module(args, kind, fraction, clean)
    return modules


def attack_work(model: ClassifierModule, attack: Attack, x: Tensor, y: Tensor) -> dict[str, Any]:
    """What one call of ``attack`` on ``model`` (a copy, in train mode as in training) does: its FLOPs,
    whether any batch-norm running statistic changed and whether any parameter was left a ``.grad``."""
    model = copy.deepcopy(model).train()
    model.zero_grad(set_to_none=True)
    before = {name: b.clone() for name, b in model.named_buffers()}
    flops = count_flops(lambda: attack(model, x, y))
    moved = sorted(name for name, b in model.named_buffers() if not torch.equal(b, before[name]))
    grads = sorted(name for name, p in model.named_parameters() if p.grad is not None)
    return {"flops": flops, "moved_buffers": moved, "parameter_grads": grads, "training_mode": model.training}


def flop_costs(modules: dict[str, ClassifierModule], x: Tensor, y: Tensor) -> tuple[int, dict[str, float]]:
    """The clean step's FLOPs on ``(x, y)`` and every other contestant's relative to them."""
    clean = training_step_flops(modules[CLEAN], x, y)
    return clean, {name: training_step_flops(module, x, y) / clean
                   for name, module in modules.items() if name != CLEAN}


def attacked_images(fraction: float, n: int) -> int:
    """How many of ``n`` images ``SupervisedModule.mix_adversarial`` attacks at ``fraction`` (its rounding)."""
    return math.floor(fraction * n + 0.5)


def paper_flop_costs(args: argparse.Namespace, modules: dict[str, ClassifierModule], flops: dict[str, float],
                     clean_flops: int, x: Tensor, y: Tensor) -> dict[str, float]:
    """Step FLOPs relative to the clean step's at :data:`PAPER_FRACTION`, per attack kind: measured when
    that fraction was a contestant; else scaled from fraction 1 (an attack's FLOPs grow linearly with the
    images it attacks); else counted."""
    costs = {}
    for kind in KINDS:
        if contestant_name(kind, PAPER_FRACTION) in flops:
            costs[kind] = flops[contestant_name(kind, PAPER_FRACTION)]
        elif contestant_name(kind, 1.0) in flops:
            share = attacked_images(PAPER_FRACTION, len(x)) / len(x)
            costs[kind] = 1 + share * (flops[contestant_name(kind, 1.0)] - 1)
        else:
            module = attacked_module(args, kind, PAPER_FRACTION, modules[CLEAN])
            costs[kind] = training_step_flops(module, x, y) / clean_flops
    return costs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser, steps=4)
    parser.add_argument("--adv-fraction", type=float, nargs="+", default=[1.0],
                        help="model.adv_fraction of the attacked contestants (an FGSM and a PGD-7 one per value; "
                             "paper-style configs: 0.5)")
    parser.add_argument("--eps", type=float,
                        help="the attacks' L-inf budget (default: the configs' 0.03; no effect on speed)")
    args = parser.parse_args(argv)
    check_common_flags(parser, args)
    for fraction in args.adv_fraction:
        if not 0 < fraction <= 1:
            parser.error(f"--adv-fraction {fraction:g} must be in (0, 1]: 0 is the clean contestant, always run")
    if len(set(args.adv_fraction)) != len(args.adv_fraction):
        parser.error(f"--adv-fraction {' '.join(f'{f:g}' for f in args.adv_fraction)} repeats a value")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its lines and return the figures (the test reads them)."""
    args = parse_args(argv)
    device, loader = setup(args)
    modules = build_contestants(args)
    eps = modules[contestant_name("fgsm", args.adv_fraction[0])].train_attack.eps
    print(f"Adversarial-training step cost, {describe(args, modules[CLEAN], device)}; attacks eps {eps:g} "
          f"(conf/attack/fgsm.yaml, conf/attack/pgd.yaml with steps {PGD_STEPS}), adv_fraction "
          + ", ".join(f"{f:g}" for f in args.adv_fraction))
    x, y = next(iter(loader))
    x, y = x[:FLOP_IMAGES].to(device), y[:FLOP_IMAGES].to(device)
    clean_flops, flops = flop_costs(modules, x, y)
    runs = {name: (lambda n, m=module: ours_round(m, loader, n, device, args.bf16))
            for name, module in modules.items()}
    results = alternate(runs, device, args.steps, args.warmup_steps, args.repeats)
    clean_img_s = images_per_s(results[CLEAN], args.batch)
    print(f"[clean step] {1000 * min(r.seconds for r in results[CLEAN]) / args.steps:.1f} ms/step "
          f"({clean_img_s:.2f} img/s, best round)")
    costs: dict[str, float] = {}
    for name, rounds in results.items():
        if name == CLEAN:
            continue
        kind, fraction = name.split("@")
        costs[name] = throughput_ratio(results[CLEAN], rounds)  # median over rounds of its time / the clean time
        target = KINDS[kind][2]
        verdict = (f"target <= {target:g}x: {'met' if costs[name] <= target else 'MISSED'}" if float(fraction) == 1.0
                   else f"the targets are stated for adv_fraction 1; {target:g}x there")
        best_ms = 1000 * min(r.seconds for r in rounds) / args.steps
        print(f"[{kind} step, adv_fraction {fraction}] {best_ms:.1f} ms/step, {costs[name]:.2f}x the clean step "
              f"(median over rounds, {spread(results[CLEAN], rounds)}; {verdict}); step FLOPs {flops[name]:.2f}x "
              "the clean step's")
    fgsm = attack_work(modules[CLEAN], build_train_attack("fgsm", args.eps, args.bf16, args.channels_last), x, y)
    forward = forward_flops(modules[CLEAN], x)
    clean_ok = not fgsm["moved_buffers"] and not fgsm["parameter_grads"] and fgsm["training_mode"]
    print(f"[attack work] one FGSM call = {fgsm['flops'] / forward:.2f} forwards (a forward and an input-only "
          f"backward is 2; a clean training step is {clean_flops / forward:.2f}); batch-norm statistics moved: "
          f"{len(fgsm['moved_buffers'])}, parameters left with a .grad: {len(fgsm['parameter_grads'])}, the model's "
          f"train mode restored: {fgsm['training_mode']} -> {'as the attack contract says' if clean_ok else 'CHECK'}")
    paper = paper_flop_costs(args, modules, flops, clean_flops, x, y)
    print(f"[paper-style configs] conf/train.yaml's adversarial-training example and the online variant of "
          f"experiment=pervin/unet_fgsm use model.adv_fraction={PAPER_FRACTION:g} (half of each batch attacked); "
          "step FLOPs there: " + ", ".join(f"{kind} {ratio:.2f}x" for kind, ratio in paper.items())
          + " the clean step's" + ("" if PAPER_FRACTION in args.adv_fraction else
                                   f" (time it with --adv-fraction {args.adv_fraction[0]:g} {PAPER_FRACTION:g})"))
    return {"clean_img_s": clean_img_s, "costs": costs, "flop_costs": flops, "paper_flop_costs": paper,
            "fgsm_work": fgsm, "results": results}


if __name__ == "__main__":
    main()
