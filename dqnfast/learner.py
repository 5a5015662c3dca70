"""The DQN update: double-DQN targets on n-step returns, Huber loss, target sync.

As in Dopamine and CleanRL, the update itself is a function of (networks, optimizer,
batch tensors) -- ``update_step`` -- and the ``Learner`` object only holds state
(networks, optimizer, update counter) and decides when to sync the target network.
That keeps the maths testable on a hand-made batch and lets ``torch.compile`` see one
function. Metrics come back as 0-d *device* tensors: reading them (``.item()``) is a
host sync, so the training loop does it only when it logs.

Target (n-step, from the replay ring, which already folds the discount):
    y = R + D * Q_target(s', a*),   a* = argmax_a Q_online(s', a)   (double DQN)
                                    a* = argmax_a Q_target(s', a)   (Nature 2015)
where R = sum_{k<m} gamma^k r_{t+k+1} and D = gamma^m, or 0 after ``terminated``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from dqnfast.config import OptimConfig

__all__ = [
    "Learner",
    "make_optimizer",
    "resolve_compile",
    "soft_update",
    "td_target",
    "update_step",
]


def td_target(reward: torch.Tensor, discount: torch.Tensor, next_q_target: torch.Tensor,
              next_q_online: torch.Tensor | None = None) -> torch.Tensor:
    """The bootstrapped target y, float32[B] (no gradient).

    reward: float32[B] n-step return; discount: float32[B] (gamma^m or 0);
    next_q_target: float32[B, A] = Q_target(s'); next_q_online: float32[B, A] =
    Q_online(s') selects the action for double DQN, or None for the Nature max.
    """
    if next_q_online is None:
        next_v = next_q_target.max(dim=1).values
    else:
        a_star = next_q_online.argmax(dim=1, keepdim=True)
        next_v = next_q_target.gather(1, a_star).squeeze(1)
    return reward + discount * next_v


def update_step(online: nn.Module, target: nn.Module, optimizer: torch.optim.Optimizer,
                obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor,
                discount: torch.Tensor, *, double: bool = True, loss: str = "huber",
                max_grad_norm: float | None = None) -> dict[str, torch.Tensor]:
    """One gradient step on one batch; returns metrics as detached 0-d device tensors.

    obs, next_obs: [B, *obs_shape] (uint8 or float32, as stored); action: int64[B];
    reward, discount: float32[B]. loss: ``huber`` (delta 1, = Nature's error clipping)
    or ``mse``. max_grad_norm: clip the global gradient norm (None: no clipping).
    Metrics: loss, q_mean (mean Q(s, a) of the batch), target_mean, grad_norm (before
    clipping).
    """
    with torch.no_grad():
        next_q_target = target(next_obs)
        next_q_online = online(next_obs) if double else None
        y = td_target(reward, discount, next_q_target, next_q_online)
    q = online(obs).gather(1, action.long().unsqueeze(1)).squeeze(1)
    if loss == "huber":
        td_loss = F.smooth_l1_loss(q, y)
    else:
        td_loss = F.mse_loss(q, y)
    optimizer.zero_grad(set_to_none=True)
    td_loss.backward()
    params = [p for p in online.parameters() if p.grad is not None]
    grad_norm = nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else float("inf"))
    optimizer.step()
    return {
        "loss": td_loss.detach(),
        "q_mean": q.detach().mean(),
        "target_mean": y.mean(),
        "grad_norm": grad_norm.detach(),
    }


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * online + (1 - tau) * target, for parameters and buffers (tau=1: copy)."""
    t_params = [p for p in target.parameters()] + [b for b in target.buffers() if b.is_floating_point()]
    o_params = [p for p in online.parameters()] + [b for b in online.buffers() if b.is_floating_point()]
    if tau >= 1.0:
        torch._foreach_copy_(t_params, o_params)
    else:
        torch._foreach_lerp_(t_params, o_params, float(tau))


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam(lr, eps) or RMSprop(lr, alpha, eps, centered) -- Nature: 2.5e-4, 0.95, 0.01, centered."""
    name = str(cfg.name).lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, centered=cfg.centered)
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose adam or rmsprop")


def resolve_compile(mode: str | bool, device: torch.device | str) -> bool:
    """``auto`` -> compile on CUDA only; ``true``/``false`` force it."""
    m = str(mode).lower()
    if m == "auto":
        return torch.device(device).type == "cuda"
    return m == "true"


class Learner:
    """Holds the online/target networks and the optimizer; runs updates, syncs the target.

    The target is synced every ``target_update_period`` updates (tau=1: hard copy,
    Nature; tau<1: Polyak step towards the online net) and never otherwise.

    Args:
        online, target: networks of the same architecture, already on ``device``.
        optimizer: built on ``online.parameters()``.
        double: double-DQN target; False = Nature max target.
        loss: ``huber`` | ``mse``. max_grad_norm: global norm clip (None: off).
        target_update_period: updates between syncs. tau: sync step size.
        device: where the update runs; batches are moved there (non-blocking).
        compile: torch.compile ``update_step``.
    """

    def __init__(self, online: nn.Module, target: nn.Module, optimizer: torch.optim.Optimizer, *,
                 double: bool = True, loss: str = "huber", max_grad_norm: float | None = 10.0,
                 target_update_period: int = 10_000, tau: float = 1.0, device: torch.device | str = "cpu",
                 compile: bool = False) -> None:
        if loss not in ("huber", "mse"):
            raise ValueError(f"unknown loss {loss!r}; choose huber or mse")
        self.online = online
        self.target = target
        self.optimizer = optimizer
        self.device = torch.device(device)
        self.target_update_period = int(target_update_period)
        self.tau = float(tau)
        self.num_updates = 0
        self.num_syncs = 0
        for p in self.target.parameters():
            p.requires_grad_(False)
        step: Callable[..., dict[str, torch.Tensor]] = partial(
            update_step, double=bool(double), loss=loss, max_grad_norm=max_grad_norm
        )
        self._step = torch.compile(step) if compile else step
        self.compiled = bool(compile)

    def update(self, batch: Any) -> dict[str, torch.Tensor]:
        """One update on a replay Batch (CPU tensors, pinned or not); returns device metrics.

        batch: obs/next_obs [B, *obs_shape], action int64[B], reward/discount float32[B].
        Syncs the target network when ``num_updates`` reaches a multiple of the period.
        """
        dev, nb = self.device, True
        metrics = self._step(
            self.online, self.target, self.optimizer,
            batch.obs.to(dev, non_blocking=nb), batch.action.to(dev, non_blocking=nb),
            batch.reward.to(dev, non_blocking=nb), batch.next_obs.to(dev, non_blocking=nb),
            batch.discount.to(dev, non_blocking=nb),
        )
        self.num_updates += 1
        if self.num_updates % self.target_update_period == 0:
            self.sync_target()
        return metrics

    def sync_target(self) -> None:
        """target <- tau * online + (1 - tau) * target."""
        soft_update(self.target, self.online, self.tau)
        self.num_syncs += 1
