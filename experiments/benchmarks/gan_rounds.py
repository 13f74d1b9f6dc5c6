"""Shared by the GAN benchmarks (stylegan2.py, srgan.py, advgan.py): one timed round of a GAN module
fitted by a real Lightning Trainer, the bookkeeping a bare loop needs to report the same figures,
CUDA peak memory per round, and the alternating rounds of timing.race.

A round's time is its training loop only: for Lightning from ``on_train_start`` to ``on_train_end``
(every per-step hook, ``self.log`` and the base's finite-loss checks included; building the
Trainer and the fit's setup / teardown excluded and reported apart), for the bare loop from its
first to its last iteration. Each round also returns the loss terms of its first and last
iteration and a fingerprint of the sampling generator's weights, so that a benchmark can show
that the two contestants train the same networks from the same weights on the same batches.
"""

from __future__ import annotations

import copy
import gc
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from timing import race
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from advmed.models.gan import DEFAULT_OPTIMIZER

OURS, BARE, OURS_BF16 = "ours", "bare", "ours_bf16"
# wall: elapsed time, what a user waits for. cpu: this process's CPU seconds, which on a CPU shared
# with other jobs leave out the time spent waiting for a core (with --threads 1 they are the
# contestant's own work; neighbours still slow it through shared caches and memory bandwidth).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = {"name": "wall"}


def use_clock(name: str, device: torch.device) -> None:
    """Time every round with the clock ``name`` of :data:`CLOCKS`."""
    if name not in CLOCKS:
        raise ValueError(f"--clock {name!r} must be one of {sorted(CLOCKS)}")
    if name == "cpu" and device.type != "cpu":
        raise ValueError(f"--clock cpu counts this process's CPU seconds, which leave out the {device.type} device's "
                         "work: use --clock wall there")
    _clock["name"] = name


def now() -> float:
    """The selected clock (:func:`use_clock`; wall by default), in seconds."""
    return CLOCKS[_clock["name"]]()


@dataclass
class RoundResult:
    """What one contestant's round measured."""

    seconds: float  # the training loop only (see the module docstring)
    iterations: int  # generator / critic iterations done, each on one batch of real images
    peak_bytes: int | None  # CUDA max_memory_allocated over the round; None on a CPU
    first_losses: dict[str, float] = field(default_factory=dict)  # loss terms of the first iteration
    last_losses: dict[str, float] = field(default_factory=dict)  # ... and of the last
    fingerprint: float = 0.0  # sum of |w| over the sampling generator's parameters after the round
    round_seconds: float = 0.0  # the whole round (for Lightning: copying the module, the Trainer, setup too)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def weights_fingerprint(network: nn.Module) -> float:
    """Sum of the absolute parameter values in float64: equal weights give equal sums."""
    return float(sum(p.detach().double().abs().sum() for p in network.parameters()))


def random_image_loader(num_images: int, image_size: int, num_classes: int, batch: int, pin: bool) -> DataLoader:
    """Random [0, 1] RGB images with class labels in batches of ``batch``, in a fixed order. The
    loader has its own RNG, so that creating an iterator (which draws a base seed) leaves the global
    RNG, and with it both contestants' latents and noise, alone."""
    if num_images < batch:
        raise ValueError(f"--batches gives {num_images} images, fewer than --batch {batch}: raise --batches")
    data = TensorDataset(torch.rand(num_images, 3, image_size, image_size), torch.randint(0, num_classes, (num_images,)))
    return DataLoader(data, batch_size=batch, shuffle=False, drop_last=True, pin_memory=pin,
                      generator=torch.Generator().manual_seed(0))


def cycle_batches(loader: DataLoader, iterations: int) -> Iterator[tuple[int, list[Tensor]]]:
    """``(index, batch)`` for ``iterations`` batches, starting the loader over as an epoch ends (as
    a Trainer fitted for ``max_steps`` does)."""
    done = 0
    while done < iterations:
        for batch in loader:
            yield done, batch
            done += 1
            if done == iterations:
                return


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.bytes``: CUDA's allocator high-water mark
    over the block (None on a CPU, where torch keeps no such per-block figure)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.bytes = device, None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            gc.collect()  # the previous round's tensors must not count toward this one's peak
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device)


class _LoopClock(L.Callback):
    """Seeds the global RNG just before the first batch (where the bare loops seed it), times the
    training loop and keeps the logged loss terms of its first and last batch (cloned on the
    device, read after the clock stops, so that no sync lands inside the loop)."""

    def __init__(self, loss_names: dict[str, str], seed: int, iterations: int) -> None:
        self.loss_names, self.seed = loss_names, seed  # loss_names: logged metric -> name in RoundResult
        self.iterations, self.batches = iterations, 0
        self.first: dict[str, Tensor] = {}
        self.last: dict[str, Tensor] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        torch.manual_seed(self.seed)
        sync(pl_module.device)
        self.start = now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches not in (1, self.iterations):  # reading the metrics costs time: only when needed
            return
        metrics = trainer.callback_metrics  # computed on access from the self.log calls so far
        self.last = {ours: metrics[logged].detach().clone() for logged, ours in self.loss_names.items() if logged in metrics}
        if not self.first:
            self.first = self.last

    def on_train_end(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.seconds = now() - self.start


def lightning_round(template: L.LightningModule, loader: DataLoader, iterations: int, max_steps: int,
                    device: torch.device, precision: str, loss_names: dict[str, str],
                    counted: Callable[[L.LightningModule], int], seed: int) -> RoundResult:
    """Fit a fresh copy of ``template`` for ``max_steps`` optimiser steps (Lightning counts every
    optimiser step of manual optimisation), the global RNG seeded with ``seed`` at the start of
    training, and check that this was ``iterations`` iterations (``counted(module)`` after the
    fit), so that images/s counts what was really trained."""
    model = copy.deepcopy(template)
    clock = _LoopClock(loss_names, seed, iterations)
    with PeakMemory(device) as peak, warnings.catch_warnings(), _quiet_lightning():
        warnings.simplefilter("ignore")  # "logger=False", "few workers", ...: not what is measured
        trainer = L.Trainer(
            max_steps=max_steps, accelerator=device.type, devices=[device.index] if device.index is not None else 1,
            precision=precision, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock],
        )
        trainer.fit(model, train_dataloaders=loader)
    if counted(model) != iterations:
        raise RuntimeError(f"the Trainer ran {counted(model)} iterations, not {iterations}: the benchmark's "
                           f"max_steps={max_steps} no longer matches the module's optimiser steps per iteration")
    return RoundResult(clock.seconds, iterations, peak.bytes, _floats(clock.first), _floats(clock.last),
                       weights_fingerprint(model.sampling_generator))


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """The Trainer's banner lines ("GPU available", tips, "max_steps reached") would drown the
    figures; its warnings and errors still show."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _floats(terms: Mapping[str, Tensor]) -> dict[str, float]:
    return {name: float(value) for name, value in terms.items()}


class LossRecorder:
    """The bare loop's counterpart of the clock's loss capture: terms of the first and last
    iteration kept as detached tensors and turned into floats after the loop."""

    def __init__(self) -> None:
        self.first: dict[str, Tensor] = {}
        self.last: dict[str, Tensor] = {}
        self._current: dict[str, Tensor] = {}

    def add(self, prefix: str, terms: Mapping[str, Tensor]) -> None:
        self._current.update({f"{prefix}_{name}": value.detach() for name, value in terms.items()})

    def end_iteration(self) -> None:
        self.last, self._current = self._current, {}
        if not self.first:
            self.first = self.last

    def result(self, seconds: float, iterations: int, peak: PeakMemory, generator: nn.Module) -> RoundResult:
        return RoundResult(seconds, iterations, peak.bytes, _floats(self.first), _floats(self.last),
                           weights_fingerprint(generator))


def set_requires_grad(network: nn.Module, flag: bool) -> None:
    """What Lightning's ``toggle_optimizer`` does by hand: the other network's weights get no gradient."""
    for p in network.parameters():
        p.requires_grad_(flag)


def alternate(runs: Mapping[str, Callable[[int], RoundResult]], device: torch.device, iterations: int,
              warmup_iterations: int, repeats: int) -> dict[str, list[RoundResult]]:
    """Each contestant once for ``warmup_iterations`` (untimed), then ``repeats`` rounds of
    ``iterations`` alternately through :func:`timing.race` (order flipped every round). Returns each
    contestant's timed rounds, each with its whole duration on the selected clock (race's own
    times are wall-clock, so they are not used)."""
    if warmup_iterations:
        for run in runs.values():
            run(warmup_iterations)
    results: dict[str, list[RoundResult]] = {name: [] for name in runs}

    def timed(name: str) -> None:
        start = now()
        result = runs[name](iterations)
        result.round_seconds = now() - start
        results[name].append(result)

    race({name: (lambda n=name: timed(n)) for name in runs}, device, 0, repeats)
    return results


def images_per_s(rounds: list[RoundResult], batch: int) -> float:
    """Real images consumed per second in the best (least disturbed) round."""
    best = min(rounds, key=lambda r: r.seconds)
    return best.iterations * batch / best.seconds


def throughput_ratio(ours: list[RoundResult], bare: list[RoundResult]) -> float:
    """Median over rounds of bare time / our time: our throughput relative to the bare loop's."""
    return statistics.median(b.seconds / a.seconds for a, b in zip(ours, bare))


def fit_overhead(rounds: list[RoundResult]) -> float:
    """Median seconds per round outside the training loop (copying the module, building the Trainer,
    the fit's setup and teardown): paid once per fit, so left out of the throughput."""
    return statistics.median(r.round_seconds - r.seconds for r in rounds)


def peak_text(rounds: list[RoundResult]) -> str:
    peaks = [r.peak_bytes for r in rounds if r.peak_bytes is not None]
    return f"{max(peaks) / 2**30:.2f} GiB" if peaks else "n/a"


def memory_line(tag: str, results: Mapping[str, list[RoundResult]], device: torch.device) -> str:
    if device.type != "cuda":
        return (f"[{tag} peak memory] n/a on CPU: torch keeps no per-run allocator peak there, and the process's "
                "ru_maxrss is one high-water mark for both contestants and the data")
    parts = ", ".join(f"{name} {peak_text(rounds)}" for name, rounds in results.items())
    return f"[{tag} peak memory] torch.cuda.max_memory_allocated per round (reset before each): {parts}"


def losses_agree(ours: Mapping[str, float], bare: Mapping[str, float], rel: float = 1e-5) -> bool:
    """Every term the bare loop computed, ours has with the same value within ``rel`` (float32
    round-off; on a CPU they are equal). Over the bare loop's terms because Lightning's
    ``callback_metrics`` keep a lazy regulariser's value from the last step that logged it."""
    return bool(bare) and all(k in ours and abs(ours[k] - bare[k]) <= rel * max(1.0, abs(bare[k])) for k in bare)


def same_training(ours: RoundResult, bare: RoundResult) -> bool:
    """Whether two rounds trained alike: first- and last-iteration losses and the final weights agree."""
    close = abs(ours.fingerprint - bare.fingerprint) <= 1e-6 * max(1.0, abs(bare.fingerprint))
    return losses_agree(ours.first_losses, bare.first_losses) and losses_agree(ours.last_losses, bare.last_losses) and close


def adam_from_config(params, cfg: Mapping[str, Any] | None) -> torch.optim.Adam:
    """The Adam that a GANModule builds from its ``generator_optimizer`` / ``critic_optimizer`` config
    (None: the base's default; keys set to None dropped, as ``configure_optimizers`` does), for a bare
    loop. A bare loop writes Adam only, so any other optimiser is refused rather than silently swapped."""
    cfg = dict(cfg or DEFAULT_OPTIMIZER)
    if cfg.get("_target_") != "torch.optim.Adam":
        raise ValueError(f"the bare loop builds torch.optim.Adam, but the module's optimiser is {cfg.get('_target_')!r}: "
                         "benchmark with an Adam config")
    kwargs = {k: (tuple(v) if k == "betas" else v) for k, v in cfg.items() if k != "_target_" and v is not None}
    return torch.optim.Adam(params, **kwargs)


# GAN base settings (advmed.models.gan.GAN_DEFAULTS) that change the schedule a bare loop would have
# to reproduce, with the value of the plain schedule: one critic and one generator step per batch.
PLAIN_SCHEDULE = {"n_critic": 1, "accumulate_grad_batches": 1, "gradient_clip_val": None, "ema_decay": None,
                  "critic_reg_interval": None, "generator_reg_interval": None}


def check_plain_schedule(hparams: Mapping[str, Any]) -> None:
    """Refuse, naming the setting, a module whose schedule differs from :data:`PLAIN_SCHEDULE` (0 counts
    as off for the clip value and the intervals): a bare loop that writes only the plain schedule would
    otherwise time different training from ours."""
    for key, plain in PLAIN_SCHEDULE.items():
        value = hparams.get(key, plain)
        if value != plain and not (plain is None and value == 0):
            raise ValueError(f"model.{key}={value}: the bare loop writes one critic and one generator step per batch "
                             f"without clipping, accumulation, EMA or lazy regularisation; benchmark with "
                             f"{key}={plain}")


def report_rounds(name: str, module: str, weights: str, batch: int, results: dict[str, list[RoundResult]],
                  device: torch.device, per_kimg: bool = False) -> dict[str, Any]:
    """Print the lines every GAN benchmark shares (``[<name> fp32]``, fit overhead, bf16 when run,
    peak memory, same training) and return the figures: ``ours_img_s``, ``bare_img_s``, ``ratio``,
    ``ours_fit_overhead_s``, ``results``, ``same_training`` (and ``bf16_img_s``, ``bf16_ratio``).
    ``module`` names the LightningModule, ``weights`` the network whose final weights are compared,
    ``per_kimg`` adds seconds per thousand images."""
    def rate(img_s: float) -> str:
        return f"{img_s:.2f} img/s" + (f" = {1000 / img_s:.1f} s/kimg" if per_kimg else "")

    ours, bare = images_per_s(results[OURS], batch), images_per_s(results[BARE], batch)
    ratio = throughput_ratio(results[OURS], results[BARE])
    print(f"[{name} fp32] ours (Lightning) {rate(ours)}, bare loop {rate(bare)}, ratio ours/bare {ratio:.3f} "
          "(target >= 0.95)")
    figures: dict[str, Any] = {"ours_img_s": ours, "bare_img_s": bare, "ratio": ratio,
                               "ours_fit_overhead_s": fit_overhead(results[OURS]), "results": results}
    print(f"[{name} fit overhead] ours {figures['ours_fit_overhead_s']:.2f} s per fit outside the training loop "
          "(copying the module, building the Trainer, setup / teardown; once per run, not in the ratio)")
    if OURS_BF16 in results:
        fast = images_per_s(results[OURS_BF16], batch)
        figures.update(bf16_img_s=fast, bf16_ratio=throughput_ratio(results[OURS_BF16], results[BARE]))
        print(f"[{name} bf16-mixed vs fp32 bare] ours bf16-mixed {rate(fast)}, bare fp32 {bare:.2f} img/s, "
              f"speed-up {figures['bf16_ratio']:.2f}x (channels_last: not an option of {module}, so bf16 alone)")
    print(memory_line(name, results, device))
    same = all(same_training(a, b) for a, b in zip(results[OURS], results[BARE]))
    figures["same_training"] = same
    print(f"[{name} same training] every round: first- and last-iteration losses and final {weights} weights of ours "
          f"and the bare loop agree: {same} (first iteration: "
          + ", ".join(f"{k} {v:.5g}" for k, v in results[OURS][0].first_losses.items()) + ")")
    return figures


NUM_CLASSES = 9  # NCT-CRC-HE's classes: labels ride along with the random tiles (SRGAN ignores them)


def prepare_runs(args: Any, image_size: int, build_template: Callable[[Any], Any], ours_round: Callable[..., Any],
                 bare_round: Callable[..., Any], check: Callable[[Any], None] | None = None):
    """The set-up every GAN benchmark's ``main`` shares: threads, device, clock and seed from ``args``,
    the template module (``check(template)`` before any round), a loader of random images of
    ``image_size`` and the contestants ``{OURS, BARE[, OURS_BF16]}`` (bf16 by default on CUDA only).
    Returns ``(template, device, runs)``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    use_clock(args.clock, device)
    bf16 = device.type == "cuda" if args.bf16 is None else args.bf16
    torch.manual_seed(args.seed)
    template = build_template(args)
    if check is not None:
        check(template)
    loader = random_image_loader(args.batch * args.batches, image_size, NUM_CLASSES, args.batch,
                                 pin=device.type == "cuda")
    runs = {OURS: lambda n: ours_round(template, loader, n, device, "32-true", args.seed),
            BARE: lambda n: bare_round(template, loader, n, device, args.seed)}
    if bf16:
        runs[OURS_BF16] = lambda n: ours_round(template, loader, n, device, "bf16-mixed", args.seed)
    return template, device, runs
