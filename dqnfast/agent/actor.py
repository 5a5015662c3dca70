"""Epsilon schedules and batched epsilon-greedy action selection.

All step counts are agent steps summed over envs. The schedules start after
``learning_starts`` steps of uniform-random play (as in Nature DQN and Dopamine, the
decay does not tick during the warm-up):

    linear:       eps(t) = end + (start - end) * max(0, 1 - t / decay_steps)
    exponential:  eps(t) = end + (start - end) * exp(-t / decay_steps)

with t = step - learning_starts; before learning_starts eps is 1.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from dqnfast.config.resolve import uses_cudagraphs
from dqnfast.config.schema import Schedule

__all__ = ["Actor", "EpsilonSchedule", "exponential_epsilon", "linear_epsilon"]


def linear_epsilon(step: int, start: float, end: float, decay_steps: int, learning_starts: int = 0) -> float:
    """Linear decay from ``start`` to ``end`` over ``decay_steps`` after ``learning_starts`` (Nature, CleanRL)."""
    if step < learning_starts:
        return 1.0
    frac = min(1.0, (step - learning_starts) / max(1, decay_steps))
    return float(start + (end - start) * frac)


def exponential_epsilon(step: int, start: float, end: float, decay_steps: int, learning_starts: int = 0) -> float:
    """Exponential decay ``end + (start - end) * exp(-t / decay_steps)`` (the PyTorch DQN tutorial's form)."""
    if step < learning_starts:
        return 1.0
    return float(end + (start - end) * math.exp(-(step - learning_starts) / max(1, decay_steps)))


class EpsilonSchedule:
    """eps(step) for training, plus the fixed ``eval_epsilon``.

    kind: ``linear`` | ``exponential``; start, end in [0, 1]; decay_steps and
    learning_starts in agent steps.
    """

    def __init__(
        self,
        kind: Schedule | str = Schedule.linear,
        start: float = 1.0,
        end: float = 0.1,
        decay_steps: int = 1_000_000,
        learning_starts: int = 0,
        eval_epsilon: float = 0.05,
    ) -> None:
        self.kind = Schedule.of(kind)
        self._fn = {Schedule.linear: linear_epsilon, Schedule.exponential: exponential_epsilon}[self.kind]
        self.start, self.end, self.decay_steps = float(start), float(end), int(decay_steps)
        self.learning_starts = int(learning_starts)
        self.eval_epsilon = float(eval_epsilon)

    def __call__(self, step: int) -> float:
        return self._fn(step, self.start, self.end, self.decay_steps, self.learning_starts)


class Actor:
    """Batched epsilon-greedy: one forward pass over all envs' observations.

    network: the online Q-network (on ``device``); num_actions: discrete actions.
    ``act(obs, eps)`` takes the observations of K envs -- uint8[K, 4, 84, 84],
    uint8[K, 128] or float32[K, d], as envpool returns them -- and returns int32[K]
    actions. With eps >= 1 the network is skipped (uniform random on the host).
    amp_dtype: autocast dtype of the forward pass (torch.bfloat16) or None (fp32).
    compile_mode: None (eager) or a torch.compile mode for the forward pass
    (``reduce-overhead``: replayed as a CUDA graph, one per batch shape; the graph reads
    the network's weights in place, so it sees every update). A compiler error on the
    first call falls back to eager with one warning.
    Random draws come from seeded generators, so a run is repeatable on one device.
    """

    def __init__(
        self,
        network: nn.Module,
        num_actions: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        amp_dtype: torch.dtype | None = None,
        compile_mode: str | None = None,
    ) -> None:
        self.network = network
        self.amp_dtype = amp_dtype
        self.compile_mode = compile_mode
        self._forward = network if compile_mode is None else torch.compile(network, mode=compile_mode, dynamic=False)
        self._graphed = uses_cudagraphs(compile_mode) and torch.device(device).type == "cuda"
        self._guarded_calls = 0 if compile_mode is None else 3  # graph trees record on the 2nd call
        self.num_actions = int(num_actions)
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(seed))

    def state_dict(self) -> dict[str, Any]:
        """The exploration RNGs (numpy for uniform-random steps, torch for epsilon-greedy draws)."""
        return {"numpy": self.rng.bit_generator.state, "torch": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["numpy"]
        self.gen.set_state(state["torch"])

    @torch.no_grad()
    def q_values(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Q float32[K, A] on the actor's device."""
        x = torch.as_tensor(obs).to(self.device, non_blocking=True)
        if self._graphed:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None
        ):
            q = self._forward(x).float() if not self._guarded_calls else self._guarded(x)
        # a graph's output buffer is overwritten by its next replay: hand out a copy
        return q.clone() if self._graphed else q

    def _guarded(self, x: torch.Tensor) -> torch.Tensor:
        """One of the first compiled forwards; on a compiler error, one warning and eager from then on."""
        try:
            q = self._forward(x).float()
        except Exception as e:  # noqa: BLE001 - torch.compile raises many types
            logging.getLogger("dqnfast.agent.actor").warning(
                "torch.compile(mode=%r) of the actor failed (%s: %s); acting eagerly",
                self.compile_mode,
                type(e).__name__,
                " ".join(str(e).split())[:200],
            )
            self._forward, self.compile_mode, self._graphed = self.network, None, False
            self._guarded_calls = 0
            return self._forward(x).float()
        self._guarded_calls -= 1
        return q

    @torch.no_grad()
    def act(self, obs: np.ndarray | torch.Tensor, epsilon: float) -> np.ndarray:
        """Epsilon-greedy actions, int32[K]."""
        k = obs.shape[0]
        if epsilon >= 1.0:
            return self.rng.integers(0, self.num_actions, size=k, dtype=np.int32)
        greedy = self.q_values(obs).argmax(dim=1)
        if epsilon > 0.0:
            explore = torch.rand(k, device=self.device, generator=self.gen) < epsilon
            random = torch.randint(0, self.num_actions, (k,), device=self.device, generator=self.gen)
            greedy = torch.where(explore, random, greedy)
        return greedy.to(torch.int32).cpu().numpy()
