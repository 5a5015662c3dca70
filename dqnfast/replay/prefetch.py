"""Batches for the learner, double-buffered so that sampling overlaps the device's work.

    ring.sample(B, out=buffers[i]) ──► host batch (pinned) ──► .to(device, non_blocking)
         ▲ waits for the event recorded behind buffer i's last copy ──┘  records an event

Two reusable batches are filled in turn: while the device copies (and learns from) one, the
ring's threads sample into the other. With pinned host memory on CUDA the host-to-device copy
is asynchronous, so a buffer is refilled only after the CUDA event recorded behind its last
copy has completed (``BatchBuffers.wait``); elsewhere copies complete before ``to`` returns.
Frames kept on a device need no copy of frames at all: their batches already live there, and
their staging carries its own event.

Prioritized replay closes the loop without a host sync per update:

    learner.update(batch k) ──► |TD errors| on the device ──► report(td_abs):
        copied into a small pinned buffer behind a CUDA event (non-blocking), queued;
        the report of update k - 1 is applied then: its event waited for (that update
        finished long ago: update k was queued after it), ring.update_priorities(...)

So batch k + 1 is drawn with the priorities of every update up to k - 1: one update late,
always exactly one, on CPU and CUDA alike, so a run is deterministic; the one report still
queued is part of ``state_dict`` (a checkpoint), so a resumed run applies it where an
uninterrupted one would. Each report carries the generations the batch was drawn with, and
the ring drops the rows whose slot was overwritten meanwhile.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dqnfast.replay.batch import Batch

__all__ = ["NonFinitePriority", "Prefetcher"]


class NonFinitePriority(ValueError):
    """A reported |TD error| is not finite (the learner diverged); the ring was not changed."""


class Prefetcher:
    """Hands out batches on ``device``, sampled from ``ring`` into two buffers used in turn.

    Made by ``ReplayRing.prefetcher``. pin_memory: host buffers in page-locked memory, so
    the copy to a CUDA device runs asynchronously (ignored for frames kept on a device,
    whose staging is pinned whenever the device is CUDA). beta0, beta_steps: prioritized
    replay's importance-sampling exponent, annealed linearly from beta0 at step 0 to 1 at
    ``beta_steps`` (the run's length in agent steps; see ``beta``).
    """

    def __init__(
        self,
        ring: Any,
        batch_size: int,
        device: torch.device | str,
        *,
        pin_memory: bool,
        beta0: float = 1.0,
        beta_steps: int = 1,
    ) -> None:
        self.ring, self.batch_size, self.device = ring, batch_size, torch.device(device)
        self.buffers = [ring.make_batch(batch_size, pin_memory=pin_memory) for _ in range(2)]
        self._pinned = pin_memory and self.device.type == "cuda"
        self._turn = 0
        self.beta0, self.beta_steps = float(beta0), max(1, int(beta_steps))
        # prioritized replay: (index, generation) of the batch handed out last, and the reports
        # not applied yet (index, generation, |TD| on the host, event or None), oldest first
        self._drawn: tuple[np.ndarray, np.ndarray] | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray, torch.Tensor, Any]] = []
        self._td_host = (
            [torch.empty(batch_size, dtype=torch.float32, pin_memory=True) for _ in range(2)]
            if ring.prioritized and self.device.type == "cuda"
            else None
        )
        self._td_turn = 0

    def beta(self, step: int) -> float:
        """beta0 + (1 - beta0) * min(1, step / beta_steps): 1 at the end of the run."""
        return self.beta0 + (1.0 - self.beta0) * min(1.0, max(0, step) / self.beta_steps)

    def next(self, step: int = 0) -> Batch:
        """The next batch, on the device (its tensors are valid until the call after next).

        step: agent steps so far, for the annealed importance-sampling exponent (prioritized
        replay; ignored otherwise).
        """
        out = self.buffers[self._turn]
        self._turn ^= 1
        batch = self.ring.sample(self.batch_size, out=out, beta=self.beta(step))
        if self.ring.prioritized:  # host copies: the buffer is refilled two batches later
            meta = out.buffers.meta
            self._drawn = (meta["index"].copy(), meta["generation"].copy())
        if out.buffers.window is not None:  # frames kept on the device: the batch is already there
            return batch
        moved = batch.to(self.device)
        if self._pinned:  # the copy reads the pinned buffer asynchronously: refill it only after it is done
            out.buffers.record(self.device)
        return moved

    def report(self, td_abs: torch.Tensor) -> None:
        """|TD error| per row (float32[B], any device) of the batch ``next`` returned last.

        Queued without waiting for the device; the report before it is applied to the ring now
        (see the module docstring). A uniform ring ignores reports. Raises NonFinitePriority
        when the report applied now holds a NaN or infinite |TD error| (nothing is applied).
        """
        if not self.ring.prioritized:
            return
        if self._drawn is None:
            raise ValueError("report() needs a batch from next() first")
        td = td_abs.detach()
        if self._td_host is not None and td.device.type == "cuda":
            host = self._td_host[self._td_turn]
            self._td_turn ^= 1
            host.copy_(td, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(td.device))
        else:
            host, event = td.to("cpu", torch.float32, copy=True), None
        self._pending.append((*self._drawn, host, event))
        self._drawn = None
        while len(self._pending) > 1:
            self._apply(self._pending.pop(0))

    def _apply(self, entry: tuple) -> None:
        index, generation, host, event = entry
        if event is not None:
            event.synchronize()
        td = host.numpy()
        bad = ~np.isfinite(td)
        if bad.any():  # a diverged update, not a caller's mistake: its own type, so the loop can say so
            row = int(np.flatnonzero(bad)[0])
            raise NonFinitePriority(f"|TD error| {td[row]} in row {row} of the batch")
        self.ring.update_priorities(index, td, generation)

    def state_dict(self) -> dict[str, Any]:
        """The reports not applied yet (at most one), as CPU tensors: part of a checkpoint."""
        pending = []
        for index, generation, host, event in self._pending:
            if event is not None:
                event.synchronize()
            pending.append(
                {
                    "index": torch.from_numpy(index.copy()),
                    "generation": torch.from_numpy(generation.copy()),
                    "priority": host.detach().to("cpu", copy=True),
                }
            )
        return {"pending": pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Queues the reports of ``state_dict`` again, to be applied as they would have been."""
        self._pending = [
            (p["index"].numpy().copy(), p["generation"].numpy().copy(), p["priority"].to(torch.float32), None)
            for p in state.get("pending", [])
        ]
