"""Distributional DQN (C51, Bellemare et al. 2017): a categorical return distribution per action.

The network outputs, for every action, logits over ``atoms`` fixed returns (the support)
``z_i = v_min + i * (v_max - v_min) / (atoms - 1)``; Q(s, a) is the distribution's mean. The
target distribution of a transition is the next state's distribution, shifted and shrunk by the
n-step return (``r + gamma^n z``), projected back onto the support (Algorithm 1 of the paper); the
loss is the cross-entropy between that projection and the predicted distribution of the action
taken. With double-DQN action selection (Rainbow, Hessel et al. 2018) the next action is the
online network's greedy one and its distribution comes from the target network.

Shapes: B batch, A actions, N atoms. Everything here is plain torch on whatever device the
inputs live on, and traceable by torch.compile (no data-dependent Python control flow).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dqnfast.agent.common import apply_gradients, fp32_output
from dqnfast.agent.noisy import NoisyLinear

__all__ = [
    "DistributionalHead",
    "c51_loss",
    "c51_update_step",
    "make_support",
    "project_distribution",
    "q_values",
]


def make_support(v_min: float, v_max: float, atoms: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The fixed returns z_0..z_{N-1}, float32[N]; needs v_min < v_max and atoms >= 2."""
    if not v_min < v_max:
        raise ValueError(f"the support needs v_min < v_max, got v_min={v_min}, v_max={v_max}")
    if atoms < 2:
        raise ValueError(f"the support needs at least 2 atoms, got {atoms}")
    return torch.linspace(float(v_min), float(v_max), int(atoms), dtype=torch.float32, device=device)


def q_values(probs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Expected return per action: probs float[B, A, N] -> float32[B, A]."""
    return (probs.float() * support).sum(dim=-1)


def project_distribution(
    next_probs: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor, support: torch.Tensor
) -> torch.Tensor:
    """Projects ``r + discount * z`` with probabilities ``next_probs`` onto ``support``.

    next_probs: float[B, N] (the next state's distribution of the chosen action; rows sum to 1);
    reward: float[B] (the n-step discounted reward sum); discount: float[B] (gamma^n, 0 where the
    episode ended within the n steps: then all mass lands on the atoms around ``r``); support:
    float32[N], evenly spaced. Returns float32[B, N], rows summing to 1.

    Each shifted atom ``Tz_j``, clipped to [v_min, v_max], splits its mass between the two atoms
    around it in proportion to its distance from each; an atom that lands exactly on a support
    point (b integer, so floor(b) == ceil(b)) gives that point all its mass.
    """
    n = support.numel()
    v_min, v_max = support[0], support[-1]
    delta = (v_max - v_min) / (n - 1)
    tz = (reward.float().unsqueeze(1) + discount.float().unsqueeze(1) * support.unsqueeze(0)).clamp(v_min, v_max)
    b = (tz - v_min) / delta  # float[B, N] in [0, N-1]
    lower = b.floor().clamp(0, n - 1)
    upper = b.ceil().clamp(0, n - 1)
    p = next_probs.float()
    # on a support point lower == upper and both weights below would be 0: give it to the lower atom
    w_lower = torch.where(upper == lower, torch.ones_like(b), upper - b)
    w_upper = b - lower
    out = torch.zeros_like(p)
    out.scatter_add_(1, lower.long(), p * w_lower)
    out.scatter_add_(1, upper.long(), p * w_upper)
    return out


def c51_loss(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample: log_probs float[B, N] (log-softmax of the taken action), target float[B, N]."""
    return -(target * log_probs.float()).sum(dim=-1)


def _linear(in_features: int, out_features: int, noisy: bool, sigma0: float) -> nn.Module:
    return NoisyLinear(in_features, out_features, sigma0) if noisy else nn.Linear(in_features, out_features)


class DistributionalHead(nn.Module):
    """features float[B, F] -> logits float32[B, A, N] through one hidden layer of width ``hidden``.

    Plain: Linear ReLU Linear(hidden, A*N). Dueling (Rainbow): a value stream (output N) and an
    advantage stream (output A*N) combined per atom as value + advantage - mean_a advantage, then
    the softmax over atoms. ``noisy``: every Linear of the head is a factorised NoisyLinear
    (sigma0 = ``sigma0``), as in Rainbow. The output layers run in float32 under autocast, for the
    reason ``QHead`` gives.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        num_actions: int,
        atoms: int,
        *,
        dueling: bool = False,
        noisy: bool = False,
        sigma0: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_actions, self.atoms, self.dueling = num_actions, atoms, dueling
        self.advantage = nn.Sequential(
            _linear(in_features, hidden, noisy, sigma0), nn.ReLU(), _linear(hidden, num_actions * atoms, noisy, sigma0)
        )
        self.value = (
            nn.Sequential(_linear(in_features, hidden, noisy, sigma0), nn.ReLU(), _linear(hidden, atoms, noisy, sigma0))
            if dueling
            else None
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        adv = fp32_output(self.advantage, features).view(-1, self.num_actions, self.atoms)
        if self.value is None:
            return adv
        value = fp32_output(self.value, features).view(-1, 1, self.atoms)
        return value + adv - adv.mean(dim=1, keepdim=True)


def c51_update_step(
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
    max_grad_norm: float | None = None,
    amp_dtype: torch.dtype | None = None,
    nograd_amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, torch.Tensor]:
    """One C51 gradient step; the same inputs, options and metrics as the DQN ``update_step``.

    online, target: networks with a C51 head (``networks.make_network`` of a spec with ``atoms``):
    ``logits(obs)`` float32[B, A, N] and the ``support`` buffer.

    The next action is the online network's greedy one (``double``, as Rainbow) or the target's
    (C51 as published); its distribution under the target network is projected through
    ``reward + discount * z`` (the ring's n-step return and gamma^n, 0 after a termination). The loss
    is the cross-entropy, weighted by the importance-sampling weights where given; ``td_abs`` (the
    priorities of prioritized replay) is each sample's cross-entropy, as Rainbow prioritises by the
    distributional loss. ``q_mean`` and ``target_mean`` are expected values under the distributions.
    """
    dev = obs.device.type
    support = online.support
    rows = torch.arange(obs.shape[0], device=obs.device)
    nograd = amp_dtype or nograd_amp_dtype
    with torch.no_grad(), torch.autocast(dev, dtype=nograd or torch.bfloat16, enabled=nograd is not None):
        next_probs = torch.softmax(target.logits(next_obs).float(), dim=-1)
        chooser = torch.softmax(online.logits(next_obs).float(), dim=-1) if double else next_probs
        next_action = q_values(chooser, support).argmax(dim=1)
        m = project_distribution(next_probs[rows, next_action], reward, discount, support)
    if channels_last and obs.dim() == 4:
        obs = obs.contiguous(memory_format=torch.channels_last)
    with torch.autocast(dev, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        logits = online.logits(obs).float()[rows, action.long()]
    log_p = F.log_softmax(logits, dim=-1)
    per_sample = c51_loss(log_p, m)
    loss = per_sample.mean() if weight is None else (weight * per_sample).mean()
    grad_norm = apply_gradients(loss, online, optimizer, max_grad_norm)
    return {
        "loss": loss.detach(),
        "q_mean": (log_p.detach().exp() * support).sum(-1).mean(),
        "target_mean": (m * support).sum(-1).mean(),
        "grad_norm": grad_norm.detach(),
        "td_abs": per_sample.detach(),
    }
