"""Batches for the learner, double-buffered so that sampling overlaps the device's work.

    ring.sample(B, out=buffers[i]) ──► host batch (pinned) ──► .to(device, non_blocking)
         ▲ waits for the event recorded behind buffer i's last copy ──┘  records an event

Two reusable batches are filled in turn: while the device copies (and learns from) one, the
ring's threads sample into the other. With pinned host memory on CUDA the host-to-device copy
is asynchronous, so a buffer is refilled only after the CUDA event recorded behind its last
copy has completed (``BatchBuffers.wait``); elsewhere copies complete before ``to`` returns.
Frames kept on a device need no copy of frames at all: their batches already live there, and
their staging carries its own event.
"""

from __future__ import annotations

from typing import Any

import torch

from dqnfast.replay.batch import Batch

__all__ = ["Prefetcher"]


class Prefetcher:
    """Hands out batches on ``device``, sampled from ``ring`` into two buffers used in turn.

    Made by ``ReplayRing.prefetcher``. pin_memory: host buffers in page-locked memory, so
    the copy to a CUDA device runs asynchronously (ignored for frames kept on a device,
    whose staging is pinned whenever the device is CUDA).
    """

    def __init__(self, ring: Any, batch_size: int, device: torch.device | str, *, pin_memory: bool) -> None:
        self.ring, self.batch_size, self.device = ring, batch_size, torch.device(device)
        self.buffers = [ring.make_batch(batch_size, pin_memory=pin_memory) for _ in range(2)]
        self._pinned = pin_memory and self.device.type == "cuda"
        self._turn = 0

    def next(self) -> Batch:
        """The next batch, on the device (its tensors are valid until the call after next)."""
        out = self.buffers[self._turn]
        self._turn ^= 1
        batch = self.ring.sample(self.batch_size, out=out)
        if out.buffers.window is not None:  # frames kept on the device: the batch is already there
            return batch
        moved = batch.to(self.device)
        if self._pinned:  # the copy reads the pinned buffer asynchronously: refill it only after it is done
            out.buffers.record(self.device)
        return moved
