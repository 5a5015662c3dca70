"""Noisy nets (Fortunato et al. 2018): linear layers whose weights carry learned Gaussian noise.

Exploration comes from the noise instead of epsilon-greedy: each weight is ``mu + sigma * eps``
with ``mu`` and ``sigma`` learned and ``eps`` resampled. Factorised Gaussian noise (the paper's
choice for DQN, section 3.1): ``eps_w[i, j] = f(e_out[i]) * f(e_in[j])`` and ``eps_b = f(e_out)``
with ``f(x) = sign(x) sqrt(|x|)`` and ``e`` standard normal, so a layer draws in + out numbers,
not in * out. Initialisation (section 3.2): ``mu ~ U(-1/sqrt(in), 1/sqrt(in))``, ``sigma =
sigma0 / sqrt(in)`` with ``sigma0 = 0.5``.

The noise lives in buffers (``weight_eps``, ``bias_eps``): saved with the network, so a resumed
run continues with the very noise it stopped with, and resampled only by ``resample_noise`` from
a generator the caller owns (and checkpoints). In eval mode (``module.eval()``) a layer uses its
mean weights ``mu``: evaluation and the recorded videos show the learned policy without the
exploration noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NoisyLinear", "resample_noise"]


def _signed_sqrt(x: torch.Tensor) -> torch.Tensor:
    return x.sign() * x.abs().sqrt()


class NoisyLinear(nn.Module):
    """y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b, factorised noise; eval mode: y = mu_w x + mu_b."""

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma0 * bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma0 * bound))
        self.register_buffer("weight_eps", torch.zeros(out_features, in_features))
        self.register_buffer("bias_eps", torch.zeros(out_features))

    @torch.no_grad()
    def resample(self, generator: torch.Generator | None = None) -> None:
        """Draws new factorised noise (on the CPU generator given, then moved to the layer's device)."""
        e_in = _signed_sqrt(torch.randn(self.in_features, generator=generator))
        e_out = _signed_sqrt(torch.randn(self.out_features, generator=generator))
        self.weight_eps.copy_(torch.outer(e_out, e_in))
        self.bias_eps.copy_(e_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.weight_mu, self.bias_mu)
        return F.linear(
            x, self.weight_mu + self.weight_sigma * self.weight_eps, self.bias_mu + self.bias_sigma * self.bias_eps
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def resample_noise(module: nn.Module, generator: torch.Generator | None = None) -> int:
    """Resamples every NoisyLinear in ``module`` (in module order, so a seeded generator gives the same
    noise on every run); returns how many layers it resampled (0: the network has no noisy layer)."""
    layers = [m for m in module.modules() if isinstance(m, NoisyLinear)]
    for layer in layers:
        layer.resample(generator)
    return len(layers)
