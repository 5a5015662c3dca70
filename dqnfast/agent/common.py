"""Pieces the Q-networks' heads and their update steps share (DQN's and C51's)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["apply_gradients", "fp32_output"]


def fp32_output(stream: nn.Sequential, features: torch.Tensor) -> torch.Tensor:
    """stream[:-1] as autocast says, its last Linear in float32: bf16 keeps 8 significant bits, so
    early in training the actions' values would tie under it (see ``networks.QHead``)."""
    hidden = features
    for i in range(len(stream) - 1):
        hidden = stream[i](hidden)
    with torch.autocast(features.device.type, enabled=False):
        return stream[-1](hidden.float())


def apply_gradients(
    loss: torch.Tensor, online: nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float | None
) -> torch.Tensor:
    """One optimizer step on ``loss``: gradients, the global norm clipped to ``max_grad_norm`` (None: not
    clipped), the step. Returns the gradient norm before clipping (a detached 0-d tensor)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in online.parameters() if p.grad is not None]
    grad_norm = nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else float("inf"))
    optimizer.step()
    return grad_norm.detach()
