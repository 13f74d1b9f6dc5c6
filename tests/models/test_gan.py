"""GANModule: the schedule (n_critic, accumulation, lazy regularisation), clipping, EMA, NaN
messages, frozen targets, checkpoints and resuming, DDP, and a toy WGAN-GP that learns."""

from __future__ import annotations

import sys
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from advmed.models.base import CLASS_KEY
from advmed.models.checkpoint import load_module
from advmed.models.gan import COUNTERS_KEY, GANModule, lazy_reg_optimizer_kwargs
from tests.models import gan_toy
from tests.models.gan_toy import REAL_MEAN, LinearGAN, PointGAN, SaveRankWeights, point_loader, save_target


def _trainer(**kwargs) -> L.Trainer:
    args = dict(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False)
    return L.Trainer(**{**args, **kwargs})


def _fit(model, loader, ckpt_path=None, **kwargs) -> L.Trainer:
    trainer = _trainer(**kwargs)
    trainer.fit(model, loader, ckpt_path=ckpt_path)
    return trainer


def _ramp(n: int, batch_size: int = 1) -> DataLoader:
    """Batches of the values 1/n, 2/n, ..., 1 in order (LinearGAN's losses depend only on them)."""
    return DataLoader(TensorDataset(torch.arange(1.0, n + 1).unsqueeze(1) / n), batch_size=batch_size)


def test_a_toy_wgan_gp_moves_noise_to_the_data_and_logs_every_term():
    L.seed_everything(0)
    model = PointGAN(ema_decay=0.9)
    before = model.generator(torch.randn(2000, 2)).mean().item()
    trainer = _fit(model, point_loader(64 * 500, 64))
    with torch.no_grad():
        generated = model.generator(torch.randn(2000, 2)).mean().item()
        averaged = model.sampling_generator(torch.randn(2000, 2)).mean().item()
    assert abs(before - REAL_MEAN) > 2.0 and abs(generated - REAL_MEAN) < 0.5, (before, generated)
    assert abs(averaged - REAL_MEAN) < 0.5 and model.sampling_generator is model.generator_ema
    assert (model.critic_steps, model.generator_steps, trainer.global_step) == (500, 100, 600)
    m = trainer.callback_metrics
    assert {"train/d_loss", "train/d_wasserstein", "train/d_gp", "train/g_loss", "train/g_adv"} <= set(m)
    assert m["train/d_loss"] == pytest.approx(float(m["train/d_wasserstein"] + m["train/d_gp"]), abs=1e-5)


def test_n_critic_critic_steps_come_before_each_generator_step_and_all_count_as_global_steps():
    model = LinearGAN(n_critic=5)
    trainer = _fit(model, _ramp(10))
    assert model.events == [*"CCCCCG", *"CCCCCG"]
    assert model.leaks == 0 and model.generator.weight.requires_grad and model.critic.weight.requires_grad
    # Lightning 2.6 counts every optimizer.step() of manual optimisation, whichever the optimiser.
    assert (model.critic_steps, model.generator_steps, trainer.global_step) == (10, 2, 12)


def test_accumulation_steps_every_k_batches_like_one_step_on_their_concatenation():
    accumulated = LinearGAN(accumulate_grad_batches=2)
    trainer = _fit(accumulated, _ramp(8, batch_size=1))
    assert accumulated.events == [*"CCGG"] * 4  # both networks see the same group of batches
    assert (accumulated.critic_steps, accumulated.generator_steps, trainer.global_step) == (4, 4, 8)
    whole = LinearGAN()
    _fit(whole, _ramp(8, batch_size=2))
    for name in ("generator.weight", "critic.weight"):
        assert torch.allclose(accumulated.state_dict()[name], whole.state_dict()[name], atol=1e-6), name
    assert not torch.equal(whole.critic.weight, torch.full((1, 1), 0.5))  # they did move

    odd = LinearGAN(accumulate_grad_batches=2)
    _fit(odd, _ramp(5))  # the epoch's last batch closes a group of one
    assert odd.events == [*"CCGGCCGGCG"] and odd.critic_steps == 3


class _RecordingLinearGAN(LinearGAN):
    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        network = "g" if optimizer is self.trainer.optimizers[0] else "d"
        self.norms.append((network, torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()))


@pytest.mark.parametrize("clip", [0.1, None])
def test_each_networks_gradient_norm_is_clipped_before_its_step(clip):
    model = _RecordingLinearGAN(gradient_clip_val=clip, loss_scale=100.0)
    model.norms = []
    _fit(model, _ramp(4))
    assert {network for network, _ in model.norms} == {"g", "d"} and len(model.norms) == 8
    if clip:
        assert all(norm <= clip + 1e-6 for _, norm in model.norms), model.norms
    else:
        assert all(norm > 1.0 for _, norm in model.norms), model.norms  # clipping had work to do


def test_the_trainers_own_clipping_and_accumulation_are_refused_in_manual_optimisation():
    # Lightning 2.6 behaviour this base works around: the settings are the model's, not the trainer's.
    for kwargs in ({"gradient_clip_val": 1.0}, {"accumulate_grad_batches": 2}):
        with pytest.raises(MisconfigurationException, match="not supported for manual optimization"):
            _fit(LinearGAN(), _ramp(2), **kwargs)


def test_ema_follows_the_hand_computed_decays_and_copies_buffers():
    model = LinearGAN(ema_decay=0.9)
    assert not model.generator_ema.training and not any(p.requires_grad for p in model.generator_ema.parameters())
    model.generator_ema.register_buffer("stat", torch.tensor(0.0))
    model.generator.register_buffer("stat", torch.tensor(3.0))
    with torch.no_grad():
        model.generator_ema.weight.fill_(0.0)
        model.generator.weight.fill_(1.0)
    model.update_ema()
    assert model.generator_ema.weight.item() == pytest.approx(0.1)  # 0.9 * 0 + 0.1 * 1
    assert model.generator_ema.stat.item() == 3.0

    ramped = LinearGAN(ema_decay=0.9, ema_rampup=0.5)
    assert ramped.ema_beta(0) == 0.0  # the first update copies the generator
    assert ramped.ema_beta(2) == pytest.approx(0.5)  # half-life 0.5 * 2 = 1 step
    assert ramped.ema_beta(10) == pytest.approx(0.5 ** (1 / 5))  # 0.8706 < 0.9
    assert ramped.ema_beta(100) == pytest.approx(0.9)
    with torch.no_grad():
        ramped.generator.weight.fill_(2.0)
    ramped.generator_steps = 2
    ramped.update_ema()
    assert ramped.generator_ema.weight.item() == pytest.approx(0.5 * 0.5 + 0.5 * 2.0)
    assert LinearGAN().generator_ema is None and LinearGAN().sampling_generator is not None


def test_lazy_regularisers_run_at_their_interval_with_the_loss_multiplied_by_it():
    model = LinearGAN(critic_reg_interval=4, generator_reg_interval=3)
    trainer = _fit(model, _ramp(10))
    assert _regularised_steps(model.events, "C") == [0, 4, 8]  # counted from 0, as stylegan2-ada does
    assert _regularised_steps(model.events, "G") == [0, 3, 6, 9]
    assert model.backward_losses.count(28.0) == 3 and model.backward_losses.count(15.0) == 4  # 7 * 4, 5 * 3
    assert trainer.global_step == 10 + 3 + 10 + 4  # each regulariser is its own optimiser step
    assert {"train/d_reg", "train/g_reg"} <= set(trainer.callback_metrics)
    assert float(trainer.callback_metrics["train/d_reg"]) == 7.0  # logged unscaled

    rescaled = lazy_reg_optimizer_kwargs(0.002, (0.0, 0.99), 4)  # c = 4 / 5
    assert rescaled["lr"] == pytest.approx(0.0016) and rescaled["betas"] == pytest.approx((0.0, 0.99**0.8))
    assert lazy_reg_optimizer_kwargs(0.002, (0.0, 0.99), None) == {"lr": 0.002, "betas": (0.0, 0.99)}


def _regularised_steps(events: list[str], network: str) -> list[int]:
    """The indices of ``network``'s steps ("C" or "G") that its regulariser followed."""
    steps = [events[i + 1 : i + 2] == [f"{network}r"] for i, e in enumerate(events) if e == network]
    return [i for i, regularised in enumerate(steps) if regularised]


def test_a_term_that_is_not_finite_stops_the_run_naming_network_term_step_and_fix():
    model = LinearGAN(nan_at=2)  # the third generator step, after C G C G C: global step 5
    with pytest.raises(FloatingPointError, match=r"^generator loss term 'xent' is nan at epoch 0, step 5: "
                       r"lower model\.generator_optimizer\.lr \(now 0\.1\)"):
        _fit(model, _ramp(10))
    assert model.generator_steps == 2


def test_bad_schedule_values_and_a_missing_init_gan_are_refused():
    with pytest.raises(ValueError, match="model.n_critic=0 must be an integer >= 1"):
        LinearGAN(n_critic=0)
    with pytest.raises(ValueError, match="model.ema_decay=1.0 must be in"):
        LinearGAN(ema_decay=1.0)

    class Forgot(GANModule):
        def __init__(self):
            super().__init__()
            self.generator, self.critic = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)

    with pytest.raises(RuntimeError, match="must call self.init_gan()"):
        _fit(Forgot(), _ramp(2))


def test_optimisers_come_from_config_with_null_keys_dropped():
    g_opt, d_opt = LinearGAN().configure_optimizers()  # SGD(momentum=None) would raise
    assert isinstance(g_opt, torch.optim.SGD) and g_opt.param_groups[0]["lr"] == 0.1
    from_hydra = PointGAN(generator_optimizer=OmegaConf.create({"_target_": "torch.optim.RMSprop", "lr": 1e-4}))
    assert type(from_hydra.hparams.generator_optimizer) is dict  # checkpoints stay weights_only-loadable
    assert isinstance(from_hydra.configure_optimizers()[0], torch.optim.RMSprop)
    model = LinearGAN()
    g_opt, d_opt = model.configure_optimizers()
    assert g_opt.param_groups[0]["params"] == [model.generator.weight]
    assert d_opt.param_groups[0]["params"] == [model.critic.weight]


def test_a_frozen_target_stays_frozen_in_eval_mode_and_out_of_the_checkpoint(tmp_path, monkeypatch):
    L.seed_everything(0)
    target_path = save_target(tmp_path / "target.pt")
    saved = torch.load(target_path, weights_only=True)
    model = PointGAN(target_path=str(target_path), target_weight=1.0, ema_decay=0.9)
    assert not any(p is q for opt in model.configure_optimizers() for group in opt.param_groups
                   for p in group["params"] for q in model.target.parameters())
    trainer = _fit(model, point_loader(64 * 30, 64))
    assert "train/g_target" in trainer.callback_metrics  # the generator did train through it
    assert not any(f[1] is not None and "eval mode" in f[1].pattern for f in warnings.filters)  # filter lifted
    assert not model.target.training
    assert all(torch.equal(v, saved[k]) for k, v in model.target.state_dict().items())  # weights and BN stats
    assert all(p.grad is None and not p.requires_grad for p in model.target.parameters())
    model.train()
    assert model.generator.training and not model.target.training and not model.generator_ema.training

    ckpt_path = tmp_path / "gan.ckpt"
    trainer.save_checkpoint(ckpt_path)
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert not any(key.startswith("target.") for key in ckpt["state_dict"])
    assert any(key.startswith("generator_ema.") for key in ckpt["state_dict"])
    assert ckpt[COUNTERS_KEY] == {"critic_steps": 30, "generator_steps": 6}

    # load_module imports only advmed's classes: serve the toy under an advmed name for this test.
    monkeypatch.setitem(sys.modules, "advmed.models._gan_toy", gan_toy)
    ckpt[CLASS_KEY] = "advmed.models._gan_toy.PointGAN"
    torch.save(ckpt, ckpt_path)
    restored = load_module(ckpt_path)
    assert isinstance(restored, PointGAN) and not restored.target.training
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    assert all(torch.equal(v, saved[k]) for k, v in restored.target.state_dict().items())
    with pytest.raises(RuntimeError, match="Missing key"):  # strict loading still checks the rest
        restored.load_state_dict({k: v for k, v in ckpt["state_dict"].items() if not k.startswith("critic.")})


def test_resuming_a_fit_continues_the_schedule(tmp_path):
    first = LinearGAN(n_critic=5, ema_decay=0.5)
    trainer = _fit(first, _ramp(3))
    assert first.events == [*"CCC"]
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    resumed = LinearGAN(n_critic=5, ema_decay=0.5)
    trainer = _fit(resumed, _ramp(3), max_epochs=2, ckpt_path=tmp_path / "last.ckpt")
    assert resumed.events == [*"CCGC"]  # critic steps 4, 5, 6: the generator's turn comes at the 5th
    assert (resumed.critic_steps, resumed.generator_steps, trainer.global_step) == (6, 1, 7)


@pytest.mark.cluster  # two spawned gloo ranks: with the other multi-process tests (`make test-cluster`)
def test_ddp_keeps_both_networks_and_the_ema_equal_across_ranks(tmp_path):
    # Two gloo processes; different data per rank, so unsynchronised gradients would split the weights.
    # Accumulation is on: the first backward of each group skips the all-reduce, the last must not.
    L.seed_everything(0)
    model = PointGAN(ema_decay=0.9, accumulate_grad_batches=2, gradient_clip_val=1.0, n_critic=2)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    strategy = "ddp_spawn_find_unused_parameters_true"  # each backward pass reaches one network only
    trainer = _trainer(devices=2, strategy=strategy, callbacks=[SaveRankWeights(str(tmp_path))])
    trainer.fit(model, point_loader(16 * 8, 8))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == (4, 2)
    assert ranks[0]["state"].keys() == ranks[1]["state"].keys()
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    assert not torch.equal(ranks[0]["state"]["generator.bias"], initial["generator.bias"])  # it trained
