"""The DQN update: double-DQN targets on n-step returns, Huber loss (importance-weighted with
prioritized replay), target sync.

As in Dopamine and CleanRL, the update itself is a function of (networks, optimizer,
batch tensors) -- ``update_step`` -- and the ``Learner`` object only holds state
(networks, optimizer, update counter) and decides when to sync the target network.
That keeps the maths testable on a hand-made batch and lets ``torch.compile`` see one
function. Metrics come back as 0-d *device* tensors, and ``td_abs`` as one per sample:
reading them (``.item()``) is a host sync, so the training loop does it only when it logs
(the priorities of prioritized replay travel back through the replay prefetcher).

Target (n-step, from the replay ring, which already folds the discount):
    y = R + D * Q_target(s', a*),   a* = argmax_a Q_online(s', a)   (double DQN)
                                    a* = argmax_a Q_target(s', a)   (Nature 2015)
where R = sum_{k<m} gamma^k r_{t+k+1} and D = gamma^m, or 0 after ``terminated``.

With prioritized replay the batch carries importance-sampling weights w and the loss is
mean(w * elementwise loss); every update also returns |y - Q(s, a)| per sample
(``td_abs``, a device tensor like the other metrics) for the ring's priorities.
"""

from __future__ import annotations

import copy
import logging
from functools import partial
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from dqnfast.agent.common import apply_gradients
from dqnfast.agent.distributional import c51_update_step
from dqnfast.agent.noisy import NoisyLinear, resample_noise
from dqnfast.config import OptimConfig
from dqnfast.config.resolve import uses_cudagraphs
from dqnfast.config.schema import Loss, OptimName

__all__ = [
    "Learner",
    "make_optimizer",
    "soft_update",
    "td_target",
    "update_step",
]


def td_target(
    reward: torch.Tensor, discount: torch.Tensor, next_q_target: torch.Tensor, next_q_online: torch.Tensor | None = None
) -> torch.Tensor:
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


def update_step(
    online: nn.Module,
    target: nn.Module,
    optimizer: torch.optim.Optimizer,
    obs: torch.Tensor,
    action: torch.Tensor,
    reward: torch.Tensor,
    next_obs: torch.Tensor,
    discount: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    double: bool = True,
    loss: Loss | str = Loss.huber,
    max_grad_norm: float | None = None,
    amp_dtype: torch.dtype | None = None,
    nograd_amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, torch.Tensor]:
    """One gradient step on one batch; returns metrics as detached device tensors (0-d but td_abs).

    obs, next_obs: [B, *obs_shape] (uint8 or float32, as stored); action: int64[B];
    reward, discount: float32[B]. weight: float32[B] importance-sampling weights
    (prioritized replay: the loss is mean(weight * elementwise loss)) or None (the plain
    mean). loss: ``huber`` (delta 1, = Nature's error clipping) or ``mse``. max_grad_norm: clip the global gradient norm (None: no clipping).
    amp_dtype: run the networks' forward passes under autocast to this dtype
    (torch.bfloat16); Q-values are cast back to float32 for the target and the loss,
    and the optimizer works on the float32 weights. nograd_amp_dtype: autocast dtype of the
    forward passes without gradient only (the target's and the double-DQN argmax's on
    ``next_obs``; ``amp_dtype`` covers them too). channels_last: the gradient forward (and so
    its backward) takes ``obs`` in NHWC (4-d observations only); the no-grad forwards keep the
    layout given. Neither option changes the maths but its rounding. Metrics: loss, q_mean (mean
    Q(s, a) of the batch), target_mean, grad_norm (before clipping), td_abs (float32[B]:
    |y - Q(s, a)| per sample, the priorities of prioritized replay).
    """
    dev = obs.device.type
    nograd = amp_dtype or nograd_amp_dtype
    with torch.no_grad(), torch.autocast(dev, dtype=nograd or torch.bfloat16, enabled=nograd is not None):
        next_q_target = target(next_obs).float()
        next_q_online = online(next_obs).float() if double else None
        y = td_target(reward, discount, next_q_target, next_q_online)
    if channels_last and obs.dim() == 4:
        obs = obs.contiguous(memory_format=torch.channels_last)
    with torch.autocast(dev, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        q = online(obs).float().gather(1, action.long().unsqueeze(1)).squeeze(1)
    elementwise = F.smooth_l1_loss if loss == Loss.huber else F.mse_loss
    if weight is None:
        td_loss = elementwise(q, y)
    else:
        td_loss = (weight * elementwise(q, y, reduction="none")).mean()
    grad_norm = apply_gradients(td_loss, online, optimizer, max_grad_norm)
    return {
        "loss": td_loss.detach(),
        "q_mean": q.detach().mean(),
        "target_mean": y.mean(),
        "grad_norm": grad_norm.detach(),
        "td_abs": (y - q.detach()).abs(),
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


def make_optimizer(
    params: Iterable[torch.nn.Parameter],
    cfg: OptimConfig,
    *,
    device: torch.device | str = "cpu",
    compile_mode: str | None = None,
) -> torch.optim.Optimizer:
    """Adam(lr, eps) or RMSprop(lr, alpha, eps, centered) -- Nature: 2.5e-4, 0.95, 0.01, centered.

    The implementation follows how the update runs (see ``resolve_compile``): eager code uses
    the fused Adam kernel (RMSprop: foreach) on CUDA and on the CPU, compiled code lets
    torch.compile fuse the step, and modes that replay CUDA graphs keep the step counter on
    the device (``capturable``) so the optimizer step can live inside the graph. The maths is
    the same; the rounding of the fused kernel differs from the per-tensor loop's in the last
    bit, so a run keeps one implementation from its start through every resume.

    On the CPU torch's own default is the per-tensor loop: on the Nature CNN's 1.7M parameters
    its Adam step took 3.9 to 5.3 ms, foreach 3.6 to 4.5 ms and the fused kernel 1.1 to 1.5 ms
    (one thread of an AMD EPYC with AVX-512, ``benchmarks/roofline.py``'s parts), and the whole
    batch-32 update ran 1.13x faster with it (47.2 against 41.6 ms, timed in turn).
    """
    name = OptimName.of(cfg.name)
    kind = torch.device(device).type
    cuda = kind == "cuda"
    kw: dict[str, Any] = {}
    if kind in ("cuda", "cpu") and compile_mode is None:
        kw = {"fused": True} if name == OptimName.adam else {"foreach": True}
    elif cuda and uses_cudagraphs(compile_mode):
        kw = {"capturable": True}
    if name == OptimName.adam:
        return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.eps, **kw)
    kw.pop("fused", None)
    return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, centered=cfg.centered, **kw)


class Learner:
    """Holds the online/target networks and the optimizer; runs updates, syncs the target.

    The target is synced every ``target_update_period`` updates (tau=1: hard copy,
    Nature; tau<1: Polyak step towards the online net) and never otherwise.

    Args:
        online, target: networks of the same architecture, already on ``device``.
        optimizer: built on ``online.parameters()`` (``make_optimizer``).
        double: double-DQN target; False = Nature max target.
        loss: ``huber`` | ``mse``. max_grad_norm: global norm clip (None: off).
        target_update_period: updates between syncs. tau: sync step size.
        device: where the update runs; batches are moved there (non-blocking).
        compile: how ``update_step`` runs: False/None = eager, True = torch.compile's
            default mode, or a torch.compile mode name (``reduce-overhead``: the update
            is recorded once as CUDA graphs and replayed; see ``resolve_compile``).
        amp_dtype: autocast dtype of the forward passes (torch.bfloat16) or None.
        nograd_amp_dtype: autocast dtype of the forward passes without gradient only, or None.
        channels_last: the gradient forward takes its observations in NHWC (``update_step``).
        noise_seed: seeds the generator of the networks' noisy layers (if they have any): the
            online and the target network's noise is resampled before every update, and the
            generator's state is part of ``state_dict``, so a resumed run draws the same noise.

    A network with a distributional head (``atoms`` > 0) is updated by C51's step
    (``dqnfast.agent.distributional.c51_update_step``: same inputs and metrics; ``loss`` is
    then the cross-entropy, whatever ``loss`` says).

    Nothing in ``update`` waits for the device: metrics stay on it until the caller
    reads them. If compiling or CUDA-graph recording fails in the first updates (an
    unsupported torch/GPU combination), the learner rolls that update back, logs one
    warning and continues eagerly.
    """

    def __init__(
        self,
        online: nn.Module,
        target: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        double: bool = True,
        loss: Loss | str = Loss.huber,
        max_grad_norm: float | None = 10.0,
        target_update_period: int = 10_000,
        tau: float = 1.0,
        device: torch.device | str = "cpu",
        compile: bool | str | None = False,
        amp_dtype: torch.dtype | None = None,
        nograd_amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        noise_seed: int = 0,
    ) -> None:
        loss = Loss.of(loss)
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
        opts = {
            "double": bool(double),
            "max_grad_norm": max_grad_norm,
            "amp_dtype": amp_dtype,
            "nograd_amp_dtype": nograd_amp_dtype,
            "channels_last": bool(channels_last),
        }
        if getattr(online, "atoms", 0):
            self._eager: Callable[..., dict[str, torch.Tensor]] = partial(c51_update_step, **opts)
        else:
            self._eager = partial(update_step, loss=loss, **opts)
        self.noisy = any(isinstance(m, NoisyLinear) for m in online.modules())
        self._noise = torch.Generator().manual_seed(int(noise_seed)) if self.noisy else None
        self._resample_noise()  # acting before the first update already explores by noise
        mode = ("default" if compile is True else None) if isinstance(compile, bool) or compile is None else compile
        self.compile_mode: str | None = mode
        self.amp_dtype = amp_dtype
        self.graphed = mode is not None and uses_cudagraphs(mode) and self.device.type == "cuda"
        self._step = torch.compile(self._eager, mode=mode) if mode is not None else self._eager
        # compiled calls still guarded by the eager fallback: CUDA-graph trees warm up on the
        # first call and record on the second, so a failure can come as late as that
        self._guarded_calls = 0 if mode is None else 3

    @property
    def compiled(self) -> bool:
        return self.compile_mode is not None

    def update(self, batch: Any) -> dict[str, torch.Tensor]:
        """One update on a replay Batch (CPU tensors, pinned or not, or device tensors); returns device metrics.

        batch: obs/next_obs [B, *obs_shape], action int64[B], reward/discount float32[B],
        weight float32[B] or None (prioritized replay's importance-sampling weights).
        Syncs the target network when ``num_updates`` reaches a multiple of the period.
        The metrics include ``td_abs`` (float32[B] on the device) for the ring's priorities.
        """
        if getattr(batch, "frames", None) is not None and batch.frames.device != self.device:
            batch = batch.to(self.device)  # shared rows: one window copied, two views
        dev, nb = self.device, True
        args = (
            self.online,
            self.target,
            self.optimizer,
            batch.obs.to(dev, non_blocking=nb),
            batch.action.to(dev, non_blocking=nb),
            batch.reward.to(dev, non_blocking=nb),
            batch.next_obs.to(dev, non_blocking=nb),
            batch.discount.to(dev, non_blocking=nb),
            None if getattr(batch, "weight", None) is None else batch.weight.to(dev, non_blocking=nb),
        )
        self._resample_noise()
        if self.graphed:  # one update = one CUDA-graph generation (the update has a graph break at backward)
            torch.compiler.cudagraph_mark_step_begin()
        if self._guarded_calls:
            metrics = self._guarded(args)
        else:
            metrics = self._step(*args)
        if self.graphed:  # graph outputs are overwritten by the next replay: keep copies
            metrics = {k: v.clone() for k, v in metrics.items()}
        self.num_updates += 1
        if self.num_updates % self.target_update_period == 0:
            self.sync_target()
        return metrics

    def _guarded(self, args: tuple) -> dict[str, torch.Tensor]:
        """One of the first compiled updates; on a compiler error, one warning and eager from then on."""
        state = (
            {k: v.detach().clone() for k, v in self.online.state_dict().items()},
            copy.deepcopy(self.optimizer.state_dict()),
        )
        try:
            metrics = self._step(*args)
        except Exception as e:  # noqa: BLE001 - torch.compile raises many types (BackendCompilerFailed, ...)
            logging.getLogger("dqnfast.agent.dqn").warning(
                "torch.compile(mode=%r) failed (%s: %s); running the update eagerly (set algo.compile=false to "
                "skip compiling)",
                self.compile_mode,
                type(e).__name__,
                " ".join(str(e).split())[:200],
            )
            self.online.load_state_dict(state[0])
            self.optimizer.load_state_dict(state[1])
            self._step, self.compile_mode, self.graphed = self._eager, None, False
            self._guarded_calls = 0
            return self._step(*args)
        self._guarded_calls -= 1
        return metrics

    def _resample_noise(self) -> None:
        """New noise for the online and the target network's noisy layers (none: nothing to do)."""
        if self._noise is not None:
            resample_noise(self.online, self._noise)
            resample_noise(self.target, self._noise)

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimizer and counters: everything a resumed run needs to update on."""
        state = {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "num_updates": self.num_updates,
            "num_syncs": self.num_syncs,
        }
        if self._noise is not None:
            state["noise_rng"] = self._noise.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores ``state_dict()``'s output; missing counters are left as they are.

        The optimizer's hyperparameters (lr, eps, ...) stay this learner's: the config of
        a resumed run wins over the saved one. A capturable or fused optimizer keeps its
        step counter on the parameters' device, where ``load_state_dict`` does not put it.
        """
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        opt = self.optimizer
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        opt.load_state_dict(state["optimizer"])
        for g, h in zip(opt.param_groups, hyper):
            g.update(h)
            if not (g.get("capturable") or g.get("fused")):
                continue
            for p in g["params"]:
                st = opt.state.get(p, {})
                if torch.is_tensor(st.get("step")):
                    st["step"] = st["step"].to(p.device)
        self.num_updates = int(state.get("num_updates", self.num_updates))
        self.num_syncs = int(state.get("num_syncs", self.num_syncs))
        if self._noise is not None and state.get("noise_rng") is not None:
            self._noise.set_state(state["noise_rng"])

    def sync_target(self) -> None:
        """target <- tau * online + (1 - tau) * target."""
        soft_update(self.target, self.online, self.tau)
        self.num_syncs += 1
