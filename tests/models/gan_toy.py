"""Toy GANs for the GANModule tests (importable, so that DDP-spawned workers can unpickle them).

- :class:`PointGAN`: a WGAN-GP on points of R^d whose affine generator learns to move N(0, I) noise
  to N(3, 0.5^2 I), optionally also pushed by a frozen batch-norm "target" network it attacks.
- :class:`LinearGAN`: one weight per network and losses that depend only on the batch, so that
  its steps, schedule and scaling can be checked by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advmed.models.gan import GANModule

REAL_MEAN, REAL_STD = 3.0, 0.5
ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-2, "betas": [0.5, 0.9]}
ADAM_FAST = {**ADAM, "lr": 5e-2}  # the generator moves by up to lr per step: 100 steps cover the distance to 3
SGD = {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": None}


def real_points(n: int, dim: int = 2, seed: int = 0) -> torch.Tensor:
    return REAL_MEAN + REAL_STD * torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def point_loader(n: int, batch_size: int, dim: int = 2, shuffle: bool = True) -> DataLoader:
    return DataLoader(TensorDataset(real_points(n, dim)), batch_size=batch_size, shuffle=shuffle)


def make_target(dim: int = 2) -> nn.Sequential:
    """A small 'attacked network' with batch norm, so that a training-mode call would move its statistics."""
    return nn.Sequential(nn.Linear(dim, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))


def save_target(path: Path, dim: int = 2) -> Path:
    target = make_target(dim)
    target(torch.randn(64, dim) * 2 + 1)  # non-trivial running statistics
    torch.save(target.state_dict(), path)
    return path


class PointGAN(GANModule):
    """WGAN-GP (Gulrajani et al. 2017) on points; optional R1 on the critic as a lazy regulariser
    and a frozen target whose output the generator also lowers (``target_weight``)."""

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 32,
        gp_weight: float = 1.0,
        r1_gamma: float = 0.0,
        target_path: str | None = None,
        target_weight: float = 0.0,
        n_critic: int = 5,
        generator_optimizer: dict[str, Any] | None = ADAM_FAST,
        critic_optimizer: dict[str, Any] | None = ADAM,
        gradient_clip_val: float | None = None,
        accumulate_grad_batches: int = 1,
        ema_decay: float | None = None,
        ema_rampup: float | None = None,
        critic_reg_interval: int | None = None,
        generator_reg_interval: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.generator = nn.Linear(dim, dim)
        self.critic = nn.Sequential(
            nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1)
        )
        if target_path is not None:  # rebuilt from its own file, also when restoring from a checkpoint
            target = make_target(dim)
            target.load_state_dict(torch.load(target_path, weights_only=True))
            self.freeze_target("target", target)
        self.init_gan()

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.hparams.dim, device=self.device)

    def critic_loss(self, batch):
        (x,) = batch
        fake = self.generator(self.noise(len(x)))
        eps = torch.rand(len(x), 1, device=x.device)
        mixed = (eps * x + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(mixed).sum(), mixed, create_graph=True)
        return {
            "wasserstein": self.critic(fake).mean() - self.critic(x).mean(),
            "gp": self.hparams.gp_weight * ((grad.norm(dim=1) - 1) ** 2).mean(),
        }

    def generator_loss(self, batch):
        (x,) = batch
        fake = self.generator(self.noise(len(x)))
        terms = {"adv": -self.critic(fake).mean()}
        if self.hparams.target_path is not None:
            terms["target"] = self.hparams.target_weight * self.target(fake).mean()
        return terms

    def critic_regularizer(self, batch):
        if not self.hparams.r1_gamma:
            return None
        (x,) = batch
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(x).sum(), x, create_graph=True)
        return {"r1": self.hparams.r1_gamma / 2 * grad.pow(2).sum(1).mean()}


class LinearGAN(GANModule):
    """``generator(x) = a x``, ``critic(x) = b x`` (a = b = 0.5 at start), deterministic losses.

    ``events`` records the calls in order ("C", "Cr", "G", "Gr"), ``backward_losses`` every loss
    handed to ``manual_backward``; ``nan_at`` puts a NaN term 'xent' in that generator step's loss.
    """

    def __init__(
        self,
        n_critic: int = 1,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        critic_reg_interval: int | None = None,
        generator_reg_interval: int | None = None,
        loss_scale: float = 1.0,
        nan_at: int | None = None,
        generator_optimizer: dict[str, Any] | None = SGD,
        critic_optimizer: dict[str, Any] | None = SGD,
        ema_decay: float | None = None,
        ema_rampup: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.generator = nn.Linear(1, 1, bias=False)
        self.critic = nn.Linear(1, 1, bias=False)
        nn.init.constant_(self.generator.weight, 0.5)
        nn.init.constant_(self.critic.weight, 0.5)
        self.init_gan()
        self.events: list[str] = []
        self.backward_losses: list[float] = []
        self.leaks = 0  # losses computed while the other network's weight required gradients

    def manual_backward(self, loss, *args, **kwargs) -> None:
        self.backward_losses.append(loss.item())
        super().manual_backward(loss, *args, **kwargs)

    def critic_loss(self, batch):
        (x,) = batch
        self.events.append("C")
        self.leaks += self.generator.weight.requires_grad
        s = self.hparams.loss_scale
        return {
            "fit": s * ((self.critic(x) - 2 * x) ** 2).mean(),
            "fake": s * 0.1 * self.critic(self.generator(x)).pow(2).mean(),
        }

    def generator_loss(self, batch):
        (x,) = batch
        self.events.append("G")
        self.leaks += self.critic.weight.requires_grad
        terms = {"fool": self.hparams.loss_scale * ((self.critic(self.generator(x)) - x) ** 2).mean()}
        if self.hparams.nan_at == self.generator_steps:
            terms["xent"] = torch.tensor(float("nan"))
        return terms

    def critic_regularizer(self, batch):
        self.events.append("Cr")
        return {"reg": 7.0 + 0.0 * self.critic.weight.sum()}

    def generator_regularizer(self, batch):
        self.events.append("Gr")
        return {"reg": 5.0 + 0.0 * self.generator.weight.sum()}


class SaveRankWeights(L.Callback):
    """Each rank saves its state dict to ``<dirpath>/rank<r>.pt`` when training ends (DDP test)."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"state": state, "steps": (pl_module.critic_steps, pl_module.generator_steps)},
                   Path(self.dirpath) / f"rank{trainer.global_rank}.pt")
