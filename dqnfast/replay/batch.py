"""Sampled batches and the buffers the C++ core writes them into.

A ``Batch`` is what a learner reads: torch tensors, on the host (pinned when asked for) or
on the frames' device. ``BatchBuffers`` is what the ring writes: the host memory the core
fills (numpy views, made once), and, for frames kept on a device, the pinned staging
tensors and the event that says when their last copy to the device has finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Batch", "BatchBuffers", "META_NAMES", "meta_tensors"]

# per-row outputs of every batch, in the order the core's bindings take them; a prioritized
# ring's batches also carry "weight" (float32[B]), passed after them
META_NAMES = ("action", "reward", "discount", "index", "generation")
_META_DTYPES = (torch.int64, torch.float32, torch.float32, torch.int64, torch.int64)


def meta_tensors(b: int, weight: bool = False, **kw) -> dict[str, torch.Tensor]:
    """Empty per-row tensors by name: action int64, reward float32, discount float32, index int64,
    generation int64 and, when ``weight``, weight float32."""
    out = {n: torch.empty(b, dtype=dt, **kw) for n, dt in zip(META_NAMES, _META_DTYPES)}
    if weight:
        out["weight"] = torch.empty(b, dtype=torch.float32, **kw)
    return out


@dataclass
class BatchBuffers:
    """The host side of a batch made by ``ReplayRing.make_batch``: what the core writes, and its guard.

    frames: the rows the core copies frames into -- obs, or with shared rows the window
    ``[B, (stack + 1) * frame]`` -- as a numpy view of the batch's own tensor (host frames),
    else None. next_obs: separate rows' next_obs view, else None.
    slots: frames on a device: int64[B, width] host staging for the slot of every frame the
    device gathers (width stack + 1 with shared rows, else 2 * stack); None for host frames.
    meta: numpy views of the per-row outputs the core writes (``META_NAMES``, and "weight" for
    a prioritized ring): the batch's own tensors for host frames, the host staging tensors for
    device frames.
    staging: device frames only: the host tensors behind ``slots`` and ``meta`` (pinned on
    CUDA), copied to the device after each fill. window: device frames only: the device
    tensor [B, width, *frame_shape] the gather writes into (obs and next_obs are views of it).
    copied: a CUDA event recorded on the device's stream after the last copy out of this host
    memory was queued, or None; the core writes here again only once it has completed
    (``wait``), so an asynchronous copy never reads a half-written batch.
    """

    shared: bool
    meta: dict[str, np.ndarray]
    frames: np.ndarray | None = None
    next_obs: np.ndarray | None = None
    slots: np.ndarray | None = None
    staging: dict[str, torch.Tensor] | None = None
    window: torch.Tensor | None = None
    copied: Any = None

    def wait(self) -> None:
        """Blocks until the last copy out of this host memory has finished (no-op when none is pending)."""
        if self.copied is not None:
            self.copied.synchronize()
            self.copied = None

    def record(self, device: torch.device) -> None:
        """Marks the copies just queued on ``device``'s current stream (CUDA only; elsewhere copies are done)."""
        if device.type == "cuda":
            self.copied = torch.cuda.Event()
            self.copied.record(torch.cuda.current_stream(device))  # that GPU's stream, not cuda:0's

    def meta_args(self) -> tuple[np.ndarray | None, ...]:
        """The per-row outputs in the bindings' order, the weights last (None: no weights)."""
        return (*(self.meta[n] for n in META_NAMES), self.meta.get("weight"))


@dataclass
class Batch:
    """A sampled batch, as torch tensors (CPU, pinned when asked for, or on the frames' device).

    obs, next_obs: frame_dtype[B, *obs_shape] (uint8[B, 4, 84, 84] for Atari);
    action: int64[B]; reward: float32[B] (n-step discounted return);
    discount: float32[B] (gamma^m, 0 after terminated); index: int64[B].
    generation: int64[B], the step each row's slot held when it was drawn (what
    ``ReplayRing.update_priorities`` needs to drop reports for slots overwritten since).
    weight: float32[B] importance-sampling weights of a prioritized ring (see
    ``ReplayRing.sample``), None for a uniform one.

    frames: with shared rows (``make_batch(shared=True)``, the default for stacked
    frames and n_step=1), the window uint8[B, stack + 1, ...] of steps t-3 .. t+1
    that ``obs = frames[:, :-1]`` and ``next_obs = frames[:, 1:]`` are views of: each
    transition's 5 distinct frames are gathered and copied to the GPU once, not 8
    (37.5% less memory traffic). The views are read-only in spirit: writing into
    obs changes next_obs. None with separate rows.

    buffers: the host memory the ring writes this batch into (``make_batch`` sets it);
    None on a copy made by ``to``, which cannot be passed to ``sample(out=...)``.
    """

    obs: torch.Tensor
    next_obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    index: torch.Tensor
    frames: torch.Tensor | None = None
    generation: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    buffers: BatchBuffers | None = field(default=None, repr=False, compare=False)

    @staticmethod
    def shared(frames: torch.Tensor, **meta: torch.Tensor | None) -> "Batch":
        """A batch whose obs and next_obs are views of one window tensor [B, stack + 1, ...]."""
        return Batch(frames[:, :-1], frames[:, 1:], frames=frames, **meta)

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "Batch":
        """Copies every tensor to ``device`` (asynchronously from pinned memory); shared rows stay shared."""
        names = (*META_NAMES, "weight")
        meta = {n: getattr(self, n) for n in names}
        meta = {n: None if t is None else t.to(device, non_blocking=non_blocking) for n, t in meta.items()}
        if self.frames is not None:
            return Batch.shared(self.frames.to(device, non_blocking=non_blocking), **meta)
        return Batch(
            self.obs.to(device, non_blocking=non_blocking), self.next_obs.to(device, non_blocking=non_blocking), **meta
        )

    def __len__(self) -> int:
        return self.action.shape[0]
