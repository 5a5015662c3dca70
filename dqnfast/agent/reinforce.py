"""REINFORCE (Williams 1992): a softmax policy trained on whole episodes by the score-function gradient.

The estimator, for a batch of E whole episodes::

    loss = -(1 / E) * sum over valid steps t of  log pi(a_t | s_t) * (G_t - b_t)
    G_t  = r_t + gamma * G_{t+1}, cut at every episode end (no bootstrapping: episodes are whole)

``b_t`` is the baseline: none (0), ``mean`` (the mean G_t of the batch's valid steps) or
``value`` (a learned value head V(s_t), detached in the policy term and fitted to G_t by a
squared error weighted by ``value_coef``). Dividing by episodes, not steps, keeps the
gradient the textbook per-episode estimate; Adam makes its scale irrelevant to the step.

Pure functions (``returns_to_go``, ``policy_loss``) hold the maths; ``PolicyLearner``
only holds the network and optimizer state. No env stepping and no files here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from dqnfast.config.schema import Baseline

__all__ = ["PolicyLearner", "PolicyNetwork", "PolicySpec", "policy_loss", "returns_to_go"]


def returns_to_go(rewards: np.ndarray, dones: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted returns-to-go, cut at episode ends.

    rewards, dones: [T, ...] (time first; any trailing env axes). ``dones[t]`` true means
    step t is the last of its episode, so ``G_t = r_t`` there and step t+1 starts a new
    episode. Returns float64 [T, ...]. A step after the last ``done`` of a stream gets
    the discounted sum of the rewards up to the end (a cut-off episode).
    """
    r = np.asarray(rewards, np.float64)
    d = np.asarray(dones, bool)
    out = np.zeros_like(r)
    g = np.zeros(r.shape[1:], np.float64)
    for t in range(r.shape[0] - 1, -1, -1):
        g = r[t] + gamma * np.where(d[t], 0.0, g)
        out[t] = g
    return out


def policy_loss(
    logits: torch.Tensor,
    actions: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    num_episodes: int,
    baseline: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """``-(1/E) * sum_t mask_t * log pi(a_t|s_t) * (G_t - b_t)``, a 0-d tensor.

    logits: float32[N, A]; actions: int64[N]; returns, mask: float32[N] (mask 0 for steps
    that are not part of an episode); baseline: float32[N] or a number, treated as a
    constant (no gradient flows through it).
    """
    logp = torch.log_softmax(logits, dim=-1).gather(1, actions[:, None]).squeeze(1)
    adv = returns - (baseline.detach() if isinstance(baseline, torch.Tensor) else baseline)
    return -(mask * logp * adv).sum() / num_episodes


@dataclass(frozen=True)
class PolicySpec:
    """What a ``PolicyNetwork`` is built from; ``to_dict()`` is a checkpoint's ``network`` entry.

    The dict has DQN's ``NetworkSpec`` keys where they mean the same (``kind`` is
    ``policy`` or ``policy+value``), so ``dqnfast.checkpoint.check_compatible`` compares
    and names two policies the way it does two Q-networks.
    """

    obs_dim: int
    num_actions: int
    hidden: tuple[int, ...] = ()
    value: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "policy+value" if self.value else "policy",
            "obs_shape": [self.obs_dim],
            "obs_dtype": "float32",
            "num_actions": self.num_actions,
            "hidden": list(self.hidden),
        }


class PolicyNetwork(nn.Module):
    """obs float32[B, d] -> action logits float32[B, A] (argmax = the greedy action).

    hidden: MLP widths (tanh); empty = a linear (for two actions: logistic) policy.
    value: also a value head, ``value(obs)`` -> float32[B] (a separate torso, so the
    value fit does not pull on the policy's features).
    """

    def __init__(self, obs_dim: int, num_actions: int, hidden: Sequence[int], *, value: bool = False) -> None:
        super().__init__()
        self.spec = PolicySpec(int(obs_dim), int(num_actions), tuple(int(h) for h in hidden), bool(value))
        self.policy = self._mlp(obs_dim, num_actions, hidden)
        self.value_head = self._mlp(obs_dim, 1, hidden) if value else None

    @staticmethod
    def _mlp(d: int, out: int, hidden: Sequence[int]) -> nn.Sequential:
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(d, h), nn.Tanh()]
            d = h
        layers.append(nn.Linear(d, out))
        return nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy(obs.float())

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        assert self.value_head is not None
        return self.value_head(obs.float()).squeeze(-1)


class PolicyLearner:
    """Holds a ``PolicyNetwork`` and its Adam state; ``update`` takes one whole-episode batch.

    ``online`` is the network (the name the evaluation and checkpoints use for DQN's).
    """

    def __init__(
        self,
        network: PolicyNetwork,
        *,
        lr: float,
        eps: float = 1e-8,
        gamma: float,
        baseline: Baseline | str = Baseline.mean,
        value_coef: float = 0.5,
        device: Any = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.online = network.to(self.device)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=lr, eps=eps)
        self.gamma, self.baseline, self.value_coef = gamma, Baseline.of(baseline), value_coef
        self.num_updates = 0

    def act(self, obs: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """Actions int64[B] sampled from pi(.|obs) (training: the policy explores by itself)."""
        with torch.no_grad():
            logits = self.online(torch.as_tensor(obs, device=self.device))
            probs = torch.softmax(logits, -1).cpu()
        return torch.multinomial(probs, 1, generator=generator).squeeze(1).numpy()

    def update(
        self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray, mask: np.ndarray
    ) -> dict[str, float]:
        """One gradient step on a batch of whole episodes.

        obs: float32[T, E, d]; actions: int[T, E]; rewards: float[T, E]; dones: bool[T, E]
        (each env's episode ends at its last valid step); mask: bool[T, E] (steps inside an
        episode; the batch holds E episodes). Returns loss, value_loss and value_mean (V's
        mean over the batch; 0 without a value head).
        """
        g = returns_to_go(rewards * mask, dones | ~mask, self.gamma)
        m = mask.reshape(-1)
        dev = self.device
        o = torch.as_tensor(obs.reshape(-1, obs.shape[-1])[m], device=dev)
        a = torch.as_tensor(actions.reshape(-1)[m].astype(np.int64), device=dev)
        ret = torch.as_tensor(g.reshape(-1)[m], dtype=torch.float32, device=dev)
        ones = torch.ones_like(ret)
        episodes = int(mask.shape[1])
        value_loss = torch.zeros((), device=dev)
        if self.baseline == Baseline.value:
            v = self.online.value(o)
            b: torch.Tensor | float = v
            value_loss = ((v - ret) ** 2).mean()
        elif self.baseline == Baseline.mean:
            b = ret.mean()
        else:
            b = 0.0
        loss = policy_loss(self.online(o), a, ret, ones, episodes, b)
        self.optimizer.zero_grad(set_to_none=True)
        (loss + self.value_coef * value_loss).backward()
        self.optimizer.step()
        self.num_updates += 1
        value_mean = float(b.detach().mean()) if isinstance(b, torch.Tensor) and b.dim() else 0.0
        return {"loss": float(loss.detach()), "value_loss": float(value_loss.detach()), "value_mean": value_mean}

    def state_dict(self) -> dict[str, Any]:
        return {
            "online": self.online.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores ``state_dict()``'s output (a checkpoint holds it at its top level).

        Adam's hyperparameters (lr, eps) stay this learner's: the config of a resumed run
        wins over the saved one.
        """
        self.online.load_state_dict(state["online"])
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for g, h in zip(self.optimizer.param_groups, hyper):
            g.update(h)
        self.num_updates = int(state.get("updates", self.num_updates))
