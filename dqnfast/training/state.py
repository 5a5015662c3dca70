"""The training loop's state and its checkpoint payload, in one place.

``LoopState`` holds what the loop changes as it runs: counters, the update budget, the
metric sums since the last row, the next log/checkpoint steps, the score windows, the
game tracker, the last actions sent. ``record`` writes the keys every learner's checkpoint
holds (counters, loop state, the run's identity, its envs); ``LoopState.restore`` reads the
loop state back. DQN's ``payload`` adds what the objects that own their state hold (learner,
actor, replay sampler) and ``restore`` reads the same keys back, so a field added to one is
added to the other beside it.

DQN's checkpoint layout (``dqnfast.checkpoint`` adds format, version and checksum)::

    online, target, optimizer        Learner.state_dict() (and noise_rng: the noisy layers' generator)
    counters  env_steps, frames, updates, episodes, seed, syncs, resumes, refill_steps
    epsilon   the schedule's last value
    loop      update_budget, can_sample, n_metrics, loss_sum, q_sum, n_grad, grad_sum, grad_max,
              next_log, next_ckpt, checkpoint_every, refill_left, time, scores, lengths, last_action,
              tracker_{score,length,started}
    rng       python, numpy, torch, actor_numpy, actor_torch, replay (, torch_cuda)
    envs      mode, seed, num_envs, actions (the action log, or None)
    replay    file (the ring saved beside the checkpoint, or None), filling (saved because the
              ring was filling, without replay.save), prefetch (prioritized replay's priority
              report not applied yet: Prefetcher.state_dict)
    config, game, obs, num_actions, network, run_name
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dqnfast.envs import GameTracker

__all__ = ["LoopState", "next_mark", "payload", "record", "restore", "rng_state", "set_rng_state"]


def _mean(xs) -> float:
    return float(statistics.fmean(xs)) if len(xs) else float("nan")


def _median(xs) -> float:
    return float(statistics.median(xs)) if len(xs) else float("nan")


def next_mark(step: int, mark: float, every: int) -> float:
    """The first multiple of ``every`` past ``mark`` that is beyond ``step``."""
    while mark <= step:
        mark += every
    return mark


@dataclass
class LoopState:
    """What the loop changes as it runs (counters in agent steps summed over envs).

    update_budget: updates owed (replay_ratio / batch_size per agent step).
    loss_sum, q_sum: 0-d device tensors summed over ``n_metrics`` updates since the
    last metric row (read on the host only when a row is logged); grad_sum, grad_max: the
    sum and max of the pre-clipping gradient norm over ``n_grad`` of them (learners that
    report one; a checkpoint written before these were kept resumes with n_grad 0). elapsed0: training
    seconds before this segment of a resumed run. refill_left: agent steps still to store
    after a resume without a saved ring, before learning (or the warm-up) goes on (not
    counted in env_steps); refill_total: what this segment's refill started with.
    """

    num_envs: int
    score_window: int
    env_steps: int = 0
    episodes: int = 0
    refill_steps: int = 0
    resumes: int = 0
    update_budget: float = 0.0
    can_sample: bool = False
    loss_sum: Any = None
    q_sum: Any = None
    n_metrics: int = 0
    grad_sum: Any = None
    grad_max: Any = None
    n_grad: int = 0
    next_log: float = 0
    next_ckpt: float = math.inf
    elapsed0: float = 0.0
    epsilon: float = 1.0
    refill_left: int = 0
    refill_total: int = 0
    saved_at: int = -1  # env_steps of the newest checkpoint this segment wrote (not saved in it)
    scores: deque = field(init=False)
    lengths: deque = field(init=False)
    tracker: GameTracker = field(init=False)
    last_action: np.ndarray = field(init=False)
    start: float = field(init=False, default=0.0)  # perf_counter at the start of this segment
    last_time: float = field(init=False, default=0.0)  # and at the last metric row
    last_steps: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.scores = deque(maxlen=self.score_window)
        self.lengths = deque(maxlen=self.score_window)
        self.tracker = GameTracker(self.num_envs)
        self.last_action = np.zeros(self.num_envs, np.int64)

    def started(self) -> None:
        """Marks the start of this segment's clock (training time and steps/s count from here)."""
        self.start = self.last_time = time.perf_counter()
        self.last_steps = self.env_steps

    def filling(self, learning_starts: int) -> bool:
        """The ring is filling (the warm-up before ``learning_starts``, or a resume's refill): it
        is then all of the run's progress since it started or resumed, so a checkpoint keeps it."""
        return self.refill_left > 0 or self.env_steps < learning_starts

    def elapsed(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.start

    def game_ended(self, score: float, length: int) -> None:
        self.scores.append(score)
        self.lengths.append(length)
        self.episodes += 1

    def add_metrics(self, metrics: dict[str, Any]) -> None:
        """Sums an update's device metrics (no host sync)."""
        self.loss_sum = metrics["loss"] if self.loss_sum is None else self.loss_sum + metrics["loss"]
        self.q_sum = metrics["q_mean"] if self.q_sum is None else self.q_sum + metrics["q_mean"]
        self.n_metrics += 1
        g = metrics.get("grad_norm")
        if g is not None:
            self.grad_sum = g if self.grad_sum is None else self.grad_sum + g
            self.grad_max = g if self.grad_max is None else self.grad_max.maximum(g)
            self.n_grad += 1

    def row(self, *, frame_skip: int, updates: int) -> dict[str, Any]:
        """The metric row (metrics.csv's columns) now; resets the sums and the steps/s clock."""
        now = time.perf_counter()
        n = self.n_metrics
        row = {
            "env_steps": self.env_steps,
            "frames": self.env_steps * frame_skip,
            "episodes": self.episodes,
            "score_mean": _mean(self.scores),
            "score_median": _median(self.scores),
            "episode_length_mean": _mean(self.lengths),
            # host sync: only here, at log time
            "loss": (self.loss_sum / n).item() if n else float("nan"),
            "q_mean": (self.q_sum / n).item() if n else float("nan"),
            "epsilon": self.epsilon,
            "sps": (self.env_steps - self.last_steps) / max(now - self.last_time, 1e-9),
            "time": self.elapsed0 + now - self.start,
            "updates": updates,
            "grad_norm": (self.grad_sum / self.n_grad).item() if self.n_grad else float("nan"),
            "grad_norm_max": self.grad_max.item() if self.n_grad else float("nan"),
        }
        self.loss_sum = self.q_sum = self.grad_sum = self.grad_max = None
        self.n_metrics = self.n_grad = 0
        self.last_time, self.last_steps = now, self.env_steps
        return row

    def score_mean(self) -> float:
        return _mean(self.scores)

    # ------------------------------------------------------- checkpoint payload
    def state_dict(self, *, checkpoint_every: int) -> dict[str, Any]:
        """The ``loop`` section of a checkpoint (CPU tensors and plain types)."""

        def cpu(t):
            return t.detach().cpu() if t is not None else None

        return {
            "update_budget": self.update_budget,
            "can_sample": self.can_sample,
            "n_metrics": self.n_metrics,
            "loss_sum": cpu(self.loss_sum),
            "q_sum": cpu(self.q_sum),
            "n_grad": self.n_grad,
            "grad_sum": cpu(self.grad_sum),
            "grad_max": cpu(self.grad_max),
            "next_log": int(self.next_log),
            "next_ckpt": None if self.next_ckpt == math.inf else int(self.next_ckpt),
            "checkpoint_every": checkpoint_every,
            "refill_left": max(self.refill_left, 0),
            "time": self.elapsed(),
            "scores": list(self.scores),
            "lengths": list(self.lengths),
            "last_action": torch.from_numpy(self.last_action.copy()),
            **{f"tracker_{k}": torch.from_numpy(v) for k, v in self.tracker.state_dict().items()},
        }

    def load_state_dict(
        self,
        loop: dict[str, Any],
        counters: dict[str, Any],
        *,
        device: Any,
        log_every: int,
        checkpoint_every: int,
        envs_too: bool,
    ) -> None:
        """Restores ``state_dict()``'s ``loop`` and the counters.

        A changed ``logger.log_every`` / ``checkpoint_every`` takes effect from now on.
        envs_too: the envs continue exactly (replayed), so the games in progress and the
        last actions are restored too; otherwise they start afresh.
        """
        self.env_steps, self.episodes = int(counters["env_steps"]), int(counters["episodes"])
        self.refill_steps = int(counters.get("refill_steps", 0))
        self.update_budget, self.can_sample = float(loop["update_budget"]), bool(loop["can_sample"])
        self.n_metrics = int(loop["n_metrics"])
        if self.n_metrics:
            self.loss_sum, self.q_sum = loop["loss_sum"].to(device), loop["q_sum"].to(device)
        self.n_grad = int(loop.get("n_grad", 0))
        if self.n_grad:
            self.grad_sum, self.grad_max = loop["grad_sum"].to(device), loop["grad_max"].to(device)
        self.next_log = next_mark(self.env_steps, int(loop["next_log"]), log_every)
        # A periodic checkpoint is written before the loop moves next_ckpt past it: restored as
        # saved, the first step after a resume would write the same checkpoint again.
        self.next_ckpt = self.env_steps + checkpoint_every if checkpoint_every else math.inf
        if checkpoint_every and loop.get("next_ckpt") is not None and checkpoint_every == int(loop["checkpoint_every"]):
            self.next_ckpt = next_mark(self.env_steps, int(loop["next_ckpt"]), checkpoint_every)
        self.elapsed0 = float(loop["time"])
        self.refill_left = int(loop.get("refill_left", 0))  # goes on only with the ring it was filling
        self.scores.extend(float(s) for s in loop["scores"])
        self.lengths.extend(int(n) for n in loop["lengths"])
        if envs_too:
            self.last_action[:] = loop["last_action"].numpy()
            self.tracker.load_state_dict({k: loop[f"tracker_{k}"].numpy() for k in ("score", "length", "started")})

    def restore(self, ck: dict[str, Any], logger: Any, *, device: Any, envs_too: bool) -> None:
        """Restores a checkpoint's ``loop`` and ``counters`` (``load_state_dict``) under this run's
        ``logger`` section; device: where the metric sums live."""
        self.load_state_dict(
            ck["loop"],
            ck["counters"],
            device=device,
            log_every=logger.log_every,
            checkpoint_every=logger.checkpoint_every,
            envs_too=envs_too,
        )


def rng_state(actor: Any | None, ring: Any | None, device: Any) -> dict[str, Any]:
    """Every RNG the run draws from: python, numpy, torch (and CUDA), the actor's, the replay sampler's.

    actor, ring: None for a learner without them (REINFORCE); their entries are left out.
    """
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if actor is not None:
        actor_state = actor.state_dict()
        state.update(actor_numpy=actor_state["numpy"], actor_torch=actor_state["torch"])
    if ring is not None:
        state["replay"] = int(ring.rng_state)
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], actor: Any | None, ring: Any | None, device: Any, *, ring_too: bool) -> None:
    """Restores ``rng_state``'s output; the sampler's only when the ring itself was restored."""
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if actor is not None:
        actor.load_state_dict({"numpy": state["actor_numpy"], "torch": state["actor_torch"]})
    if ring_too and ring is not None:
        ring.rng_state = int(state["replay"])
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def record(run: Any, st: LoopState, *, updates: int, envs: dict[str, Any]) -> dict[str, Any]:
    """The keys of every learner's checkpoint: counters, the run's identity, the loop state, its envs.

    run: a run with ``cfg``, ``plan``, ``spec``, ``config_dict``, ``net_spec`` and ``name``;
    updates: the learner's count; envs: what restores the envs exactly (the action log, reset
    counts), beside their mode, seed and number.
    """
    spec, plan = run.spec, run.plan
    return {
        "counters": {
            "env_steps": st.env_steps,
            "frames": st.env_steps * spec.frame_skip,
            "updates": updates,
            "episodes": st.episodes,
            "seed": run.cfg.seed,
            "resumes": st.resumes,
        },
        "config": run.config_dict,
        "game": spec.task_id,
        "obs": {"kind": spec.obs_kind, "shape": list(spec.obs_shape), "dtype": spec.frame_dtype.name},
        "num_actions": spec.num_actions,
        "network": run.net_spec.to_dict(),
        "run_name": run.name,
        "loop": st.state_dict(checkpoint_every=run.cfg.logger.checkpoint_every),
        "envs": {"mode": plan.env_mode.value, "seed": plan.env_seed, "num_envs": spec.num_envs, **envs},
    }


def payload(run: Any, st: LoopState, *, replay_file: str | None, filling: bool = False) -> dict[str, Any]:
    """The whole checkpoint of ``run`` (a ``components.Run``) at loop state ``st``."""
    learned, log = run.learner.state_dict(), run.actions_log
    body = record(
        run,
        st,
        updates=learned["num_updates"],
        envs={"actions": torch.from_numpy(log.rows.copy()) if log is not None else None},
    )
    body["counters"].update(syncs=learned["num_syncs"], refill_steps=st.refill_steps)
    return {
        "online": learned["online"],
        "target": learned["target"],
        "optimizer": learned["optimizer"],
        **({"noise_rng": learned["noise_rng"]} if "noise_rng" in learned else {}),  # noisy layers' generator
        **body,
        "epsilon": st.epsilon,
        "rng": rng_state(run.actor, run.ring, run.device),
        "replay": {"file": replay_file, "filling": filling, "prefetch": run.batches.state_dict()},
    }


def restore(run: Any, st: LoopState, ck: dict[str, Any], *, envs_too: bool, ring_too: bool) -> None:
    """Reads ``payload``'s keys back into ``run``'s objects and ``st`` (the networks are loaded by the caller)."""
    counters = ck["counters"]
    run.learner.num_updates, run.learner.num_syncs = int(counters["updates"]), int(counters.get("syncs", 0))
    st.restore(ck, run.cfg.logger, device=run.device, envs_too=envs_too)
    st.epsilon = float(ck.get("epsilon", 1.0))
    set_rng_state(ck["rng"], run.actor, run.ring, run.device, ring_too=ring_too)
    if ring_too:  # a pending priority report belongs to the restored ring's slots
        run.batches.load_state_dict((ck.get("replay") or {}).get("prefetch") or {})
