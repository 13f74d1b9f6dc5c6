"""The one base of every adversarially trained advmed module (StyleGAN2, SRGAN, AdvGAN, the
deformation attacker): a generator and a critic trained in turn with two optimisers.

Lightning's manual optimisation leaves the training schedule to the module, and its Trainer refuses
``gradient_clip_val`` and ``accumulate_grad_batches`` for such modules (Lightning 2.6 raises a
MisconfigurationException at ``fit``). So the schedule, clipping, accumulation, the generator's
exponential moving average and lazy regularisation are written here once, as model config values.
The EMA is hand-written because ``torch.optim.swa_utils.AveragedModel`` averages buffers instead of
copying them and wraps the copy in another module; StyleGAN2-ADA copies buffers.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn

from advmed.models.base import AdvmedModule
from advmed.utils.run import plain

LossTerms = Mapping[str, Tensor]
"""Named scalar loss terms, already weighted: their sum is the loss that is back-propagated."""

# Checkpoint key of the schedule's counters (resuming continues the n_critic, lazy-reg and EMA phases).
COUNTERS_KEY = "advmed_gan"
_EVAL_WARNING = r"Found \d+ module\(s\) in eval mode"

GAN_DEFAULTS: dict[str, Any] = {
    "generator_optimizer": None,
    "critic_optimizer": None,
    "n_critic": 1,
    "gradient_clip_val": None,
    "accumulate_grad_batches": 1,
    "ema_decay": None,
    "ema_rampup": None,
    "critic_reg_interval": None,
    "generator_reg_interval": None,
}
# Adam as in DCGAN (Radford et al. 2016); WGAN-GP uses lr 1e-4, betas (0, 0.9): set it in config.
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 2e-4, "betas": (0.5, 0.999)}


def lazy_reg_optimizer_kwargs(lr: float, betas: tuple[float, float], interval: int | None) -> dict[str, Any]:
    """``lr`` and Adam ``betas`` rescaled by ``c = k / (k + 1)`` (lr * c, beta ** c) for a network
    regularised every ``k = interval`` steps, so that its k + 1 optimiser steps per k batches move
    the weights as k steps would (StyleGAN2, Karras et al. 2020, appendix B; stylegan2-ada-pytorch
    ``training_loop.py``). No interval: the values unchanged."""
    c = interval / (interval + 1) if interval else 1.0
    return {"lr": lr * c, "betas": tuple(beta**c for beta in betas)}


class GANModule(AdvmedModule):
    """Manual-optimisation base of a generator / critic pair.

    A subclass calls ``save_hyperparameters`` with the config keys below among its arguments (absent
    ones take the defaults of :data:`GAN_DEFAULTS`; DictConfig arguments of its own it first turns
    into plain containers with ``plain``, so that checkpoints load with ``weights_only=True``),
    builds ``self.generator`` and ``self.critic`` (and freezes the networks it attacks with
    :meth:`freeze_target`), then calls :meth:`init_gan`.
    It implements :meth:`generator_loss` and :meth:`critic_loss`, and optionally
    :meth:`generator_regularizer` / :meth:`critic_regularizer`, :meth:`generator_parameters` /
    :meth:`critic_parameters`, :meth:`after_critic_step`. Losses and regularisers return :data:`LossTerms`; each term is logged as
    ``train/g_<name>`` or ``train/d_<name>``, the sums as ``train/g_loss`` and ``train/d_loss``,
    and a term that is not finite stops the run with a FloatingPointError naming the network, the
    term and the step. Inside a loss the other network's parameters do not require gradients
    (``toggle_optimizer``), so fakes need no ``detach`` and nothing leaks into the other network.

    Config keys:

    - ``generator_optimizer`` / ``critic_optimizer``: Hydra ``_target_`` dicts of torch optimisers
      (params added; keys set to null dropped); None: Adam lr 2e-4, betas (0.5, 0.999).
    - ``n_critic``: critic steps per generator step (WGAN: 5). Counted in (effective) batches: every
      batch does one critic step and every ``n_critic``-th also one generator step, after the critic's
      (Arjovsky et al. 2017, Algorithm 1), so an epoch sees every batch once in the critic.
    - ``accumulate_grad_batches`` (k): networks step once per k batches, as one step on their
      concatenation would (losses are divided by the number of batches; batch norm statistics aside).
      The batches are held until the k-th so that every phase, the generator's included, sees one
      state of the other network; the last batch of an epoch closes a shorter group (as Lightning
      does). Under DDP the first k - 1 backward passes skip the gradient all-reduce.
    - ``gradient_clip_val``: clip each network's gradient norm separately (after AMP unscaling, in
      :meth:`on_before_optimizer_step`); 0 or None: no clipping.
    - ``ema_decay``: keep ``generator_ema``, a frozen exponential moving average of the generator's
      weights (buffers copied), updated after every generator step; it is saved in the checkpoint
      and is what sampling uses (:attr:`sampling_generator`). None: no EMA. ``ema_rampup``:
      the ramp-up of StyleGAN2-ADA (Karras et al., NeurIPS 2020; stylegan2-ada-pytorch
      ``training/training_loop.py``, with ``cur_nimg = t * batch``): the half-life grows with
      training, ``decay_t = min(ema_decay, 0.5 ** (1 / (ema_rampup * t)))`` after ``t`` generator
      steps, 0 (a copy) at the first. ADA's ``ema_kimg`` is ``ema_decay = 0.5 ** (batch / (1000 *
      ema_kimg))``. None: a constant decay.
    - ``critic_reg_interval`` / ``generator_reg_interval`` (k): lazy regularisation (StyleGAN2,
      Karras et al. 2020, sec. 3.1): the regulariser runs as its own optimiser step on the critic
      (generator) steps whose index is a multiple of k, counting from 0 as stylegan2-ada does, with
      its loss multiplied by k. The lr / beta rescaling that keeps the optimiser's effective
      settings is the subclass's config concern: see :func:`lazy_reg_optimizer_kwargs`. None or 0:
      never.

    Steps and checkpoints: Lightning 2.6 counts every ``optimizer.step()`` of manual optimisation in
    ``trainer.global_step`` (``optim_step_progress``), whichever optimiser, so critic, generator and
    regulariser steps all count, and ``max_steps`` / ``every_n_train_steps`` are in those units.
    The schedule keeps its own counters, ``critic_steps`` and ``generator_steps``, in the
    checkpoint, so a resumed fit continues its phases (held batches of an unfinished accumulation
    group are not saved). Frozen targets are left out of ``state_dict`` and rebuilt by the subclass.

    The base implements ``setup``, ``on_fit_start``, ``on_train_start``, ``on_before_optimizer_step``,
    ``on_save_checkpoint``, ``on_load_checkpoint``, ``train``, ``state_dict`` and ``load_state_dict``:
    a subclass that overrides one calls ``super()``.

    Under DDP each backward pass reaches only one network's parameters, so DDP must look for unused
    ones: ``trainer=ddp`` (``ModuleDDPStrategy``) reads :attr:`ddp_find_unused_parameters`; a plain
    Lightning strategy needs ``strategy=ddp_find_unused_parameters_true``.
    """

    ddp_find_unused_parameters = True

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False  # two optimisers on a schedule of our own

    def init_gan(self) -> None:
        """Check the schedule's config and create ``generator_ema``; call after building the networks."""
        cfg = self._gan_cfg
        for key in ("n_critic", "accumulate_grad_batches"):
            if not isinstance(cfg[key], int) or cfg[key] < 1:
                raise ValueError(f"model.{key}={cfg[key]} must be an integer >= 1")
        for key in ("critic_reg_interval", "generator_reg_interval"):
            if cfg[key] is not None and (not isinstance(cfg[key], int) or cfg[key] < 0):
                raise ValueError(f"model.{key}={cfg[key]} must be an integer >= 1, or null / 0 to disable it")
        if cfg["gradient_clip_val"] is not None and cfg["gradient_clip_val"] < 0:
            raise ValueError(f"model.gradient_clip_val={cfg['gradient_clip_val']} must be >= 0 (0 or null: no clipping)")
        if cfg["ema_decay"] is not None and not 0.0 <= cfg["ema_decay"] < 1.0:
            raise ValueError(f"model.ema_decay={cfg['ema_decay']} must be in [0, 1), or null to disable the EMA")
        if cfg["ema_rampup"] is not None and cfg["ema_rampup"] <= 0:
            raise ValueError(f"model.ema_rampup={cfg['ema_rampup']} must be > 0, or null for a constant decay")
        for key in ("generator_optimizer", "critic_optimizer"):  # Hydra hands DictConfigs over
            if key in self.hparams:
                self.hparams[key] = plain(self.hparams[key])
        self.generator_ema = None
        if cfg["ema_decay"] is not None:
            self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.critic_steps = 0
        self.generator_steps = 0
        self._held: list[Any] = []

    @property
    def _gan_cfg(self) -> dict[str, Any]:
        return {key: self.hparams.get(key, default) for key, default in GAN_DEFAULTS.items()}

    # ------------------------------------------------------------------ what a subclass implements

    def generator_loss(self, batch: Any) -> LossTerms:
        """The generator's loss terms on one training batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement generator_loss(batch)")

    def critic_loss(self, batch: Any) -> LossTerms:
        """The critic's (discriminator's) loss terms on one training batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement critic_loss(batch)")

    def generator_regularizer(self, batch: Any) -> LossTerms | None:
        """Lazy generator regulariser (e.g. path-length), unscaled; None: nothing to add. It must
        return None on every rank or on none (DDP)."""
        return None

    def critic_regularizer(self, batch: Any) -> LossTerms | None:
        """Lazy critic regulariser (e.g. R1), unscaled; None: nothing to add (on every rank or none)."""
        return None

    def after_critic_step(self) -> None:
        """Called after every critic optimiser step (e.g. the original WGAN's weight clipping)."""

    def generator_parameters(self) -> Iterable[nn.Parameter]:
        return self.generator.parameters()

    def critic_parameters(self) -> Iterable[nn.Parameter]:
        return self.critic.parameters()

    @property
    def sampling_generator(self) -> nn.Module:
        """The network that makes samples: ``generator_ema`` when kept, else ``generator``."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    # ------------------------------------------------------------------ frozen targets

    def freeze_target(self, name: str, module: nn.Module) -> nn.Module:
        """Register ``module`` (an attacked U-Net or classifier) as ``self.<name>``: always in eval
        mode, without gradients, in no optimiser and not in the checkpoint (the subclass rebuilds it
        from its own recorded checkpoint path, e.g. via ``restore_kwargs``)."""
        self.add_module(name, module.eval().requires_grad_(False))
        self._target_names = (*getattr(self, "_target_names", ()), name)
        return module

    def _is_target_key(self, key: str) -> bool:
        return any(key.startswith(f"{name}.") for name in getattr(self, "_target_names", ()))

    def _frozen_names(self) -> tuple[str, ...]:
        names = (*getattr(self, "_target_names", ()), "generator_ema")
        return tuple(name for name in names if getattr(self, name, None) is not None)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self._frozen_names():  # never in training mode: batch-norm statistics and dropout stay put
            getattr(self, name).eval()
        return self

    def on_fit_start(self) -> None:
        self._held = []  # nothing left over from a fit stopped inside an accumulation group
        # Lightning warns at the start of training about modules in eval mode; the frozen ones are so
        # on purpose, so the warning is silenced until on_train_start when no other module is.
        frozen = self._frozen_names()
        others = [n for n, m in self.named_modules() if not m.training and n.split(".")[0] not in frozen]
        if frozen and not others:
            warnings.filterwarnings("ignore", _EVAL_WARNING, PossibleUserWarning)
            self._eval_filter = warnings.filters[0]

    def on_train_start(self) -> None:
        if getattr(self, "_eval_filter", None) in warnings.filters:
            warnings.filters.remove(self._eval_filter)  # "ignore" leaves no registry entry to clear

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        for key in [k for k in state if k.startswith(prefix) and self._is_target_key(k[len(prefix):])]:
            del state[key]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        # Target keys in the file are ignored and the live target stands in for its own keys, so
        # that strict loading still checks every other key.
        state = OrderedDict((k, v) for k, v in state_dict.items() if not self._is_target_key(k))
        for name in getattr(self, "_target_names", ()):
            for key, value in getattr(self, name).state_dict(keep_vars=True).items():
                state[f"{name}.{key}"] = value
        if hasattr(state_dict, "_metadata"):
            state._metadata = state_dict._metadata
        return super().load_state_dict(state, strict=strict, assign=assign)

    # ------------------------------------------------------------------ checkpoint

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[COUNTERS_KEY] = {"critic_steps": self.critic_steps, "generator_steps": self.generator_steps}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        counters = checkpoint.get(COUNTERS_KEY) or {}
        self.critic_steps = int(counters.get("critic_steps", 0))
        self.generator_steps = int(counters.get("generator_steps", 0))

    # ------------------------------------------------------------------ optimisation

    def setup(self, stage: str) -> None:
        if not hasattr(self, "critic_steps"):
            raise RuntimeError(f"{type(self).__name__}.__init__ must call self.init_gan() after building its networks")

    def configure_optimizers(self):
        """``[generator optimiser, critic optimiser]``, in that order (``self.optimizers()``)."""
        def build(name: str, params: Iterable[nn.Parameter]):
            cfg = self._gan_cfg[f"{name}_optimizer"] or DEFAULT_OPTIMIZER
            return instantiate({k: v for k, v in cfg.items() if v is not None}, params=list(params), _convert_="all")

        return [build("generator", self.generator_parameters()), build("critic", self.critic_parameters())]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        cfg = self._gan_cfg
        self._held.append(batch)
        if len(self._held) < cfg["accumulate_grad_batches"] and not self.trainer.is_last_batch:
            return
        batches, self._held = self._held, []
        g_opt, d_opt = self.optimizers()
        terms = self._step("critic loss", d_opt, self.critic_loss, batches)
        self.after_critic_step()
        self._log("d", terms, total=True)
        interval = cfg["critic_reg_interval"]
        if self._due(interval, self.critic_steps):
            self._log("d", self._step("critic regularizer", d_opt, self.critic_regularizer, batches, interval))
        self.critic_steps += 1
        if self.critic_steps % cfg["n_critic"]:
            return
        terms = self._step("generator loss", g_opt, self.generator_loss, batches)
        self._log("g", terms, total=True)
        interval = cfg["generator_reg_interval"]
        if self._due(interval, self.generator_steps):
            self._log("g", self._step("generator regularizer", g_opt, self.generator_regularizer, batches, interval))
        self.update_ema()
        self.generator_steps += 1

    @staticmethod
    def _due(interval: int | None, step: int) -> bool:
        return bool(interval) and step % interval == 0

    def _step(self, what: str, optimizer, loss_fn, batches: list, scale: int = 1) -> dict[str, Tensor] | None:
        """One step of ``optimizer`` on ``loss_fn``'s loss (``what``: "critic loss", ...) averaged
        over ``batches`` and multiplied by ``scale``; the mean of each term (None: no terms given)."""
        means: dict[str, Tensor] = {}
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(batches):
            # Only the last backward pass of the group all-reduces gradients under DDP.
            with optimizer.toggle_model(sync_grad=i == len(batches) - 1):
                terms = loss_fn(batch)
                if terms is None:
                    continue
                total = self._checked_total(terms, what, optimizer)
                if total is None:  # not finite, nonfinite_loss=skip: this network skips the step
                    optimizer.zero_grad(set_to_none=True)
                    return None
                self.manual_backward(total * (scale / len(batches)))
            for name, value in terms.items():
                means[name] = means.get(name, 0.0) + value.detach() / len(batches)
        if not means:
            return None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return means

    def _checked_total(self, terms: LossTerms, what: str, optimizer) -> Tensor | None:
        """The sum of ``terms``; when not finite, a FloatingPointError naming the term, or None under
        ``nonfinite_loss=skip``."""
        if not terms:
            raise ValueError(f"{type(self).__name__}: the {what} has no terms (return None to skip a regularizer)")
        for name, value in terms.items():
            if not isinstance(value, Tensor) or value.numel() != 1:
                raise TypeError(f"{what} term '{name}' must be a scalar tensor, got {type(value).__name__} "
                                f"of shape {tuple(getattr(value, 'shape', ()))}")
        total = sum(terms.values())
        # One check (one device sync; under DDP one all-reduce) per backward pass, terms only on failure.
        if not self.finite_on_every_rank(total):
            name, value = next(((n, v) for n, v in terms.items() if not torch.isfinite(v)), ("sum", total))
            network = what.split()[0]
            self.nonfinite_training_loss(
                f"{what} term '{name}' is {float(value.detach())} at epoch {self.current_epoch}, step {self.global_step}: "
                f"lower model.{network}_optimizer.lr (now {optimizer.optimizer.param_groups[0]['lr']}) "
                "or check the inputs are finite and in [0, 1]"
            )
            return None
        return total.reshape(())

    def _log(self, prefix: str, terms: dict[str, Tensor] | None, total: bool = False) -> None:
        for name, value in (terms or {}).items():
            self.log(f"train/{prefix}_{name}", value)
        if total and terms:
            self.log(f"train/{prefix}_loss", sum(terms.values()), prog_bar=True)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Called inside optimizer.step() after AMP's unscaling, so the threshold is in true units;
        # the optimiser's parameters are one network's, so each network is clipped on its own norm.
        clip = self._gan_cfg["gradient_clip_val"]
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    # ------------------------------------------------------------------ EMA

    def ema_beta(self, steps: int) -> float:
        """The EMA decay of the update after ``steps`` generator steps (see ``ema_rampup``)."""
        decay, rampup = self._gan_cfg["ema_decay"], self._gan_cfg["ema_rampup"]
        if rampup is None:
            return decay
        half_life = rampup * steps  # in generator steps; 0 at the first update: the EMA starts as a copy
        return min(decay, 0.5 ** (1.0 / half_life)) if half_life > 0 else 0.0

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move ``generator_ema`` toward the generator: ``ema = beta * ema + (1 - beta) * weights``
        with ``beta = ema_beta(generator_steps)``; buffers (e.g. batch-norm statistics) are copied."""
        if self.generator_ema is None:
            return
        beta = self.ema_beta(self.generator_steps)
        for ema, weight in zip(self.generator_ema.parameters(), self.generator.parameters(), strict=True):
            ema.lerp_(weight.detach(), 1.0 - beta)
        for ema, buffer in zip(self.generator_ema.buffers(), self.generator.buffers(), strict=True):
            ema.copy_(buffer)
