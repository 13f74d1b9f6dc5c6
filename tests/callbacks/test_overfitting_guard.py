"""The catastrophic-overfitting guard: forced accuracy sequences for what it does at a drop (restore the
best weights, stop or continue, say so in the log, the metrics and the report), its check's contract
(eval mode, batch-norm statistics and gradients untouched, the training stream unchanged), config
(objective=fgsm_rs turns it on), bad settings, and the acceptance test: a real catastrophic overfitting
of FGSM training without a random start, detected."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advmed.attacks import FGSM
from advmed.attacks.core.model_mode import eval_mode
from advmed.callbacks import CatastrophicOverfittingGuard
from advmed.models import ClassifierModule
from advmed.objectives import FGSMRS
from advmed.studies.robustness_report import write_report
from tests.entrypoints.conftest import TINY, compose_config
from tests.models.classifier_toy import trainer
from tests.objectives.toy import SmallBNNet

LOGGER = "advmed.callbacks.overfitting_guard"


def _dataset(n: int = 24, size: int = 8, classes: int = 3, seed: int = 1234) -> TensorDataset:
    """``classes`` fixed mean images, ``n`` noisy copies of them (labels cycling): learnable, and robustly so
    at a small eps (the means differ by up to 0.4 per pixel, the noise is 0.1)."""
    generator = torch.Generator().manual_seed(seed)
    means = 0.5 + 0.2 * (2 * torch.rand(classes, 3, size, size, generator=generator) - 1)
    y = torch.arange(n) % classes
    x = (means[y] + 0.1 * torch.randn(n, 3, size, size, generator=generator)).clamp(0, 1)
    return TensorDataset(x, y)


def _module(make_net: Callable[[], nn.Module] | None = None, objective=None, classes: int = 3) -> ClassifierModule:
    """A classifier module (Adam 1e-3) whose ResNet is swapped for a small net, by default
    :class:`SmallBNNet` (a few hundred weights: seconds on a CPU)."""
    module = ClassifierModule(arch="resnet18", num_classes=classes, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
                              objective=objective)
    module.net = SmallBNNet(3, classes) if make_net is None else make_net()
    return module


def _fit(root: Path, module: ClassifierModule, callbacks: list, epochs: int, dataset: TensorDataset | None = None,
         batch_size: int = 8) -> L.Trainer:
    fit = trainer(root, epochs, callbacks=callbacks, limit_val_batches=0)
    fit.fit(module, DataLoader(dataset or _dataset(), batch_size=batch_size, shuffle=True))
    return fit


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _scripted(guard: CatastrophicOverfittingGuard, accuracies: list[float]) -> list[dict[str, torch.Tensor]]:
    """Make the guard's checks return ``accuracies`` in turn; returns the weights each check saw."""
    seen, sequence = [], iter(accuracies)

    def robust_accuracy(trainer, pl_module) -> float:
        seen.append(_weights(pl_module))
        return next(sequence)

    guard.robust_accuracy = robust_accuracy
    return seen


class _WeightsAfter(L.Callback):
    """After the guard (later in the callback list): the weights at each epoch's end, as the guard left them."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.weights.append(_weights(pl_module))


# ---------------------------------------------------------------- a drop, forced


def test_a_drop_beyond_the_margin_restores_the_best_weights_says_so_and_stops(tmp_path, caplog):
    guard = CatastrophicOverfittingGuard(enabled=True, eps=0.03, margin=0.25)
    # Epoch 2 falls exactly the margin below the best (kept); epoch 3 falls 0.5 below it.
    seen = _scripted(guard, [0.5, 0.75, 0.5, 0.25, 1.0])
    module = _module()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fit = _fit(tmp_path, module, [guard], epochs=5)
    assert [c.pgd_acc for c in guard.checks] == [0.5, 0.75, 0.5, 0.25]  # stopped after epoch 3
    assert [(c.epoch, c.step) for c in guard.checks] == [(0, 3), (1, 6), (2, 9), (3, 12)]
    assert fit.current_epoch == 4 and fit.global_step == 12
    assert _same(_weights(module), seen[1])  # the weights of the best check (epoch 1)
    assert not _same(seen[1], seen[3])
    assert ("catastrophic overfitting detected at epoch 3 (step 12): PGD accuracy on the guard's 24 held training "
            "images fell from 0.7500 (best, epoch 1, step 6) to 0.2500, more than callbacks.overfitting_guard.margin=0.25 "
            "below; restored the weights of epoch 1, step 6, and stopping the run") in caplog.text
    assert guard.metrics == {
        "guard/catastrophic_overfitting": 1.0, "guard/best_pgd_acc": 0.75, "guard/best_epoch": 1.0, "guard/checks": 4.0,
        "guard/eps": 0.03, "guard/alpha": pytest.approx(2.5 * 0.03 / 10), "guard/steps": 10.0, "guard/margin": 0.25,
        "guard/detections": 1.0, "guard/detected_at_epoch": 3.0, "guard/detected_at_step": 12.0,
        "guard/pgd_acc_at_detection": 0.25, "guard/restored_epoch": 1.0, "guard/restored_pgd_acc": 0.75,
        "guard/stopped": 1.0,
    }

    # metrics.json and report.md say so (advmed.train merges the callback's metrics into the run's).
    report = write_report(tmp_path, {"test/acc": 0.9, **guard.metrics}, None, "best.ckpt", "Toy").read_text()
    assert ("- **Catastrophic overfitting detected** at epoch 3 (step 12): PGD(eps=0.03, alpha=0.0075, steps=10, random "
            "start) accuracy on the guard's held training images fell from 0.7500 (epoch 1) to 0.2500, more than the "
            "margin of 0.25; the weights of epoch 1 were restored and training stopped.") in report
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["guard/catastrophic_overfitting"] == 1.0


def test_on_overfitting_continue_restores_and_trains_on(tmp_path, caplog):
    guard = CatastrophicOverfittingGuard(enabled=True, eps=0.03, margin=0.25, on_overfitting="continue")
    seen = _scripted(guard, [0.5, 0.75, 0.25, 0.5, 0.75])
    after = _WeightsAfter()
    module = _module()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fit = _fit(tmp_path, module, [guard, after], epochs=5)
    assert fit.current_epoch == 5 and len(guard.checks) == 5  # all epochs ran
    assert _same(after.weights[2], seen[1])  # epoch 2 ended on the weights of epoch 1, restored
    assert not _same(_weights(module), seen[1])  # and training went on from them
    assert "and training on from them (callbacks.overfitting_guard.on_overfitting=continue)" in caplog.text
    assert len(guard.detections) == 1  # 0.5 after the restore is the margin below, not more
    assert guard._best.epoch == 4  # a tie with the best moves it to the later weights
    metrics = guard.metrics
    assert (metrics["guard/stopped"], metrics["guard/detected_at_epoch"], metrics["guard/detections"]) == (0.0, 2.0, 1.0)
    report = write_report(tmp_path, metrics, None, "best.ckpt", "Toy").read_text()
    assert "the weights of epoch 1 were restored and training continued from them." in report


def test_checks_every_n_steps_and_every_n_epochs(tmp_path):
    guard = CatastrophicOverfittingGuard(enabled=True, eps=0.03, every_n_epochs=2, every_n_steps=2, margin=1.0)
    _scripted(guard, [0.5] * 20)
    _fit(tmp_path, _module(), [guard], epochs=4)  # 3 steps per epoch
    # every 2nd step, and the end of every 2nd epoch (step 6 is both: one check)
    assert [(c.epoch, c.step) for c in guard.checks] == [(0, 2), (1, 4), (1, 6), (2, 8), (3, 10), (3, 12)]


def test_a_disabled_guard_does_nothing(tmp_path):
    guard = CatastrophicOverfittingGuard()  # enabled=False: the default of conf/callbacks/default.yaml
    _fit(tmp_path, _module(), [guard], epochs=1)
    assert guard.checks == [] and guard.metrics == {} and guard.attack is None


# ---------------------------------------------------------------- the check itself


class _Watch(L.Callback):
    """Records, at each batch end, what the check must leave alone: batch-norm statistics, gradients, modes."""

    def __init__(self) -> None:
        self.states = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states.append((
            {k: v.clone() for k, v in pl_module.state_dict().items() if "running" in k or "num_batches" in k},
            {n: None if p.grad is None else p.grad.clone() for n, p in pl_module.named_parameters()},
            [m.training for m in pl_module.modules()],
        ))


@pytest.mark.filterwarnings("ignore:Found 1 module\\(s\\) in eval mode")
def test_the_check_runs_in_eval_mode_and_leaves_statistics_gradients_and_modes_alone(tmp_path):
    guard = CatastrophicOverfittingGuard(enabled=True, eps=0.03, steps=3, margin=1.0)
    before, after = _Watch(), _Watch()
    module = _module()
    module.net.body[1].eval()  # a frozen batch norm in a training model stays frozen
    fit = _fit(tmp_path, module, [before, guard, after], epochs=2)
    assert len(guard.checks) == 2 and all(0.0 <= c.pgd_acc <= 1.0 for c in guard.checks)
    assert "guard/pgd_acc" in fit.callback_metrics
    for (stats_0, grads_0, modes_0), (stats_1, grads_1, modes_1) in zip(before.states, after.states):
        assert _same(stats_0, stats_1) and modes_0 == modes_1
        assert grads_0.keys() == grads_1.keys()
        assert all((g is None and grads_1[n] is None) or torch.equal(g, grads_1[n]) for n, g in grads_0.items())
    assert module.training and not module.net.body[1].training


def test_the_check_is_the_pgd_accuracy_on_the_held_batch(tmp_path):
    guard = CatastrophicOverfittingGuard(enabled=True, eps=0.03, steps=3, margin=1.0, num_samples=10, seed=7)
    module = _module()
    fit = _fit(tmp_path, module, [guard], epochs=1)
    dataset = _dataset()
    held = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(7))[:10].sort().values
    x, y = dataset.tensors[0][held], dataset.tensors[1][held]
    assert torch.equal(guard._held[0], x) and torch.equal(guard._held[1], y)
    correct = 0
    for chunk in (slice(0, 8), slice(8, 10)):  # in chunks of the training batch size, 8
        x_adv = guard.attack(module, x[chunk], y[chunk])
        with torch.no_grad(), eval_mode(module):
            correct += int((module(x_adv).argmax(1) == y[chunk]).sum())
    assert guard.robust_accuracy(fit, module) == pytest.approx(correct / 10)
    assert guard.robust_accuracy(fit, module) == guard.robust_accuracy(fit, module)  # seeded start: repeatable


def test_a_guard_that_never_fires_leaves_the_fit_bit_for_bit_as_without_it(tmp_path):
    def fit(callbacks) -> dict[str, torch.Tensor]:
        L.seed_everything(0)
        module = _module(objective=FGSMRS(eps=0.03))  # random starts from the global generator
        _fit(tmp_path, module, callbacks, epochs=3)  # a shuffle from the global generator
        return _weights(module)

    guard = CatastrophicOverfittingGuard(enabled=True, margin=1.0)  # a drop of more than 1 never happens
    assert _same(fit([guard]), fit([]))
    assert len(guard.checks) == 3 and guard.attack.eps == 0.03  # the objective's eps


def test_without_an_eps_and_an_objective_that_has_none_the_guard_says_what_to_set(tmp_path):
    with pytest.raises(ValueError, match=r"callbacks.overfitting_guard.eps is null and the objective \(standard\) has no "
                                         r"eps to take: set callbacks.overfitting_guard.eps \(e.g. 8/255\)"):
        _fit(tmp_path, _module(), [CatastrophicOverfittingGuard(enabled=True)], epochs=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"margin": 0}, r"callbacks.overfitting_guard.margin=0 must be in \(0, 1\]: the drop of PGD accuracy below its "
                    r"best that counts as catastrophic overfitting \(Wong et al. use 0.2\)"),
    ({"margin": 1.5}, r"callbacks.overfitting_guard.margin=1.5 must be in \(0, 1\]"),
    ({"margin": "wide"}, r"callbacks.overfitting_guard.margin must be a number, got 'wide'"),
    ({"eps": 8}, r"callbacks.overfitting_guard.eps=8 must be in \[0, 1\], a fraction of the \[0, 1\] intensity range "
                 r"\(did you mean 8/255\?\)"),
    ({"eps": -0.1}, r"callbacks.overfitting_guard.eps=-0.1 must be in \[0, 1\]"),
    ({"alpha": 2.0}, r"callbacks.overfitting_guard.alpha=2 must be in \[0, 1\]"),
    ({"steps": 0}, r"callbacks.overfitting_guard.steps=0 must be an integer >= 1"),
    ({"every_n_epochs": 0}, r"callbacks.overfitting_guard.every_n_epochs=0 must be an integer >= 1"),
    ({"every_n_steps": 0}, r"callbacks.overfitting_guard.every_n_steps=0 must be an integer >= 1"),
    ({"every_n_epochs": None}, r"callbacks.overfitting_guard.every_n_epochs and every_n_steps are both null: the "
                               r"guard would never check"),
    ({"num_samples": 0}, r"callbacks.overfitting_guard.num_samples=0 must be an integer >= 1"),
    ({"on_overfitting": "halt"}, r"callbacks.overfitting_guard.on_overfitting='halt' must be one of stop, continue"),
])
def test_bad_settings_get_one_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CatastrophicOverfittingGuard(**kwargs)


def test_eps_given_as_a_fraction_string_as_hydra_passes_it():
    assert CatastrophicOverfittingGuard(eps="8/255").eps == pytest.approx(8 / 255)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("overrides, enabled, eps", [
    (["objective=standard"], False, None),
    (["objective=pgd_at", "objective.eps=0.05"], False, 0.05),
    (["objective=fgsm_rs", "objective.eps=0.05"], True, 0.05),
    (["objective=fgsm_rs", "callbacks.overfitting_guard.enabled=false"], False, 0.031),
    (["objective=pgd_at", "++callbacks.overfitting_guard.enabled=true"], True, 0.031),
    (["objective=fgsm_rs", "callbacks.overfitting_guard.eps=4/255"], True, 4 / 255),
])
def test_objective_fgsm_rs_turns_the_guard_on_through_config(tmp_path, overrides, enabled, eps):
    cfg = compose_config("train", overrides, tmp_path)
    guard = instantiate(cfg.callbacks.overfitting_guard)
    assert isinstance(guard, CatastrophicOverfittingGuard)
    assert guard.enabled is enabled and guard.eps == (None if eps is None else pytest.approx(eps))  # the objective's by default
    assert (guard.margin, guard.steps, guard.every_n_epochs, guard.on_overfitting) == (0.2, 10, 1, "stop")


def test_a_single_step_run_reports_the_guard_in_metrics_json_and_report_md(tmp_path):
    from advmed.train import train

    metrics = train(compose_config("train", [
        "experiment=demo", *TINY, "objective=fgsm_rs", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
        "attack=fgsm", "attack.eps=0.03", "callbacks.overfitting_guard.num_samples=8", "callbacks.overfitting_guard.steps=2",
    ], tmp_path))
    assert metrics["guard/catastrophic_overfitting"] == 0.0 and metrics["guard/checks"] == 1.0
    assert metrics["guard/eps"] == pytest.approx(0.031) and 0.0 <= metrics["guard/pgd_acc"] <= 1.0
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["guard/checks"] == 1.0
    assert "- Catastrophic-overfitting guard: no drop of more than 0.2 in PGD(eps=0.031, alpha=0.03875, steps=2" in (
        tmp_path / "report.md").read_text()


# ---------------------------------------------------------------- acceptance: a real catastrophic overfitting


class _FGSMAccuracy(L.Callback):
    """Before the guard (earlier in the callback list): FGSM accuracy on the guard's held batch at each
    epoch end, on the weights the guard is about to check."""

    def __init__(self, guard: CatastrophicOverfittingGuard, eps: float) -> None:
        self.guard, self.attack, self.by_epoch = guard, FGSM(eps=eps), {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        x, y = self.guard._held
        x_adv = self.attack(pl_module, x, y)
        with torch.no_grad(), eval_mode(pl_module):
            self.by_epoch[trainer.current_epoch] = (pl_module(x_adv).argmax(1) == y).float().mean().item()


def _single_step_fit(root: Path, eps: float, epochs: int) -> tuple[CatastrophicOverfittingGuard, dict, L.Trainer, nn.Module]:
    """FGSM training without a random start (FGSM-RS with no noise: x' = x + eps * sign(grad)) of a small ReLU CNN on
    64 images of 4 classes at 16 px, full batch, Adam 1e-3; the guard checks every 2 epochs."""
    classes, size = 4, 16

    def net() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                             nn.Flatten(), nn.Linear(32 * size * size, classes))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one reduction order: the same trajectory on every run of this machine
    try:
        L.seed_everything(0)
        module = _module(net, objective=FGSMRS(eps=eps, variant="rs", noise=0.0), classes=classes)
        guard = CatastrophicOverfittingGuard(enabled=True, every_n_epochs=2, num_samples=64)
        fgsm = _FGSMAccuracy(guard, eps)
        fit = _fit(root, module, [fgsm, guard], epochs, _dataset(n=64, size=size, classes=classes), batch_size=64)
    finally:
        torch.set_num_threads(threads)
    return guard, fgsm.by_epoch, fit, module


def test_fgsm_training_without_random_start_at_a_large_eps_overfits_catastrophically_and_the_guard_stops_it(tmp_path):
    """Acceptance: a real fit, nothing forced. At eps=0.12 the model first becomes robust on its training images
    (PGD accuracy 1.00 at epoch 25, one full-batch step per epoch), then overfits catastrophically: PGD accuracy
    falls while FGSM accuracy, the attack it trains on, stays near 1 (measured here: PGD 0.77 with FGSM 0.98 at
    epoch 37, where the guard fires; left to train, PGD accuracy sinks to 0.2-0.4 with FGSM at 0.8-1.0; at
    eps=0.06 it stays at 1, the test below). The guard sees the fall, restores the best weights and stops."""
    guard, fgsm, fit, module = _single_step_fit(tmp_path, eps=0.12, epochs=100)
    assert len(guard.detections) == 1 and fit.current_epoch < 100  # stopped
    found = guard.detections[0]
    assert found.best_pgd_acc >= 0.8  # it had become robust ...
    assert found.best_pgd_acc - found.pgd_acc > 0.2  # ... and lost it,
    assert fgsm[found.epoch] >= 0.8 and fgsm[found.epoch] - found.pgd_acc >= 0.1  # robust to FGSM still: the CO signature
    assert _same(_weights(module), guard._best_state) and guard._best.pgd_acc == found.best_pgd_acc  # restored
    assert guard.metrics["guard/catastrophic_overfitting"] == 1.0


def test_the_same_fit_at_a_small_eps_does_not_trip_the_guard(tmp_path):
    guard, fgsm, fit, _ = _single_step_fit(tmp_path, eps=0.06, epochs=36)
    assert guard.detections == [] and fit.current_epoch == 36
    assert guard.metrics["guard/best_pgd_acc"] >= 0.9 and guard.checks[-1].pgd_acc >= 0.9


# ---------------------------------------------------------------- DDP


class _Corrupt(L.Callback):
    """Flip the sign of the last layer after epoch ``epoch``'s last step (before the guard's check): accuracy falls."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx + 1 == trainer.num_training_batches:
            with torch.no_grad():
                pl_module.net[-1].weight.neg_()


class _SaveRank(L.Callback):
    def __init__(self, root: str, guard: CatastrophicOverfittingGuard) -> None:
        self.root, self.guard = root, guard

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save({"checks": [c.pgd_acc for c in self.guard.checks], "detections": len(self.guard.detections),
                    "epoch": trainer.current_epoch, "state": _weights(pl_module), "held": len(self.guard._held[1])},
                   Path(self.root) / f"rank{trainer.global_rank}.pt")


@pytest.mark.cluster  # two spawned gloo ranks
def test_under_ddp_every_rank_reaches_the_same_verdict_restores_and_stops(tmp_path):
    L.seed_everything(0)
    module = _module(lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 3)))
    guard = CatastrophicOverfittingGuard(enabled=True, eps=0.02, steps=3, num_samples=24)
    fit = trainer(tmp_path, 10, callbacks=[_Corrupt(6), guard, _SaveRank(str(tmp_path), guard)], limit_val_batches=0,
                  devices=2, strategy="ddp_spawn", deterministic=False)
    fit.fit(module, DataLoader(_dataset(), batch_size=4, shuffle=True))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["held"] == ranks[1]["held"] == 12  # each rank its half of the held batch
    assert ranks[0]["checks"] == ranks[1]["checks"] and len(ranks[0]["checks"]) == 7  # pooled: the same accuracies
    assert ranks[0]["detections"] == ranks[1]["detections"] == 1 and ranks[0]["epoch"] == ranks[1]["epoch"] == 7
    assert max(ranks[0]["checks"][:6]) - ranks[0]["checks"][6] > 0.2
    assert _same(ranks[0]["state"], ranks[1]["state"])  # the same weights restored on both


def test_the_test_time_restore_of_an_earlier_checkpoint_does_not_rewind_the_fits_record():
    """advmed.train tests the best checkpoint after the fit, and Lightning restores the callbacks' state
    from it: the guard's checks as of that epoch. The verdict must stay the fit's (a run of 8 epochs
    reported 4 checks); a resumed fit (before the fit ends) still restores them."""
    from advmed.callbacks.overfitting_guard import Check

    earlier = {"checks": [{"epoch": 0, "step": 5, "pgd_acc": 0.3}], "detections": []}
    resumed = CatastrophicOverfittingGuard(enabled=True)
    resumed.load_state_dict(earlier)
    assert len(resumed.checks) == 1
    guard = CatastrophicOverfittingGuard(enabled=True)
    guard.on_fit_start(None, None)
    guard.checks = [Check(e, 5 * (e + 1), 0.3) for e in range(8)]
    guard.on_fit_end(None, None)
    guard.load_state_dict(earlier)
    assert len(guard.checks) == 8 and guard.metrics["guard/checks"] == 8.0
