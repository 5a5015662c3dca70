"""DQN's part of a run (``dqnfast.training.run.Learning``): its parts, what its resume restores, its
start-up lines. Its loop body is ``dqnfast.training.loop``; its checkpoint layout ``dqnfast.training.state``.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from dqnfast.agent.networks import DEAD_UNIT_LAYERS, dead_units
from dqnfast.config import Config
from dqnfast.config.resolve import Resolved
from dqnfast.training import loop
from dqnfast.training.components import Run, build
from dqnfast.training.expectations import cpu_learning_sps, cpu_note
from dqnfast.training.resume import ResumePlan, refill_steps
from dqnfast.training.run import log_place
from dqnfast.training.state import LoopState, restore
from dqnfast.training.stop import GracefulStop

__all__ = ["DQN"]

log = logging.getLogger("dqnfast.train")


class DQN:
    """Double DQN from a replay ring (``components.build``: env, ring, networks, learner, actor)."""

    epsilon = 1.0  # the schedule's start; the loop sets it every step

    def build(
        self, cfg: Config, r: Resolved, plan: ResumePlan, run_dir: Path, config_dict: dict, stack: ExitStack
    ) -> Run:
        return build(cfg, r, plan, run_dir, config_dict, stack)

    def restore(self, run: Run, st: LoopState) -> None:
        """Counters, loop state, RNGs, and the ring with its sampler when it was saved; without it, the
        agent steps of the refill (``resume.refill_steps``)."""
        plan = run.plan
        restore(run, st, plan.ck, envs_too=plan.replay_envs, ring_too=run.replay_file is not None)
        if run.replay_file is None:
            st.refill_left = refill_steps(run.cfg, st.env_steps)
        st.refill_total = st.refill_left

    def log_start(self, run: Run, st: LoopState, r: Resolved) -> None:
        if run.plan.ck:
            _log_ring(run, st)
        s, cfg = run.spec, run.cfg
        log.info(
            "run %s: %s (%s, %s obs %s, %d actions) on %s, %d envs%s; network %s%s; replay %d x %s %s",
            run.name,
            s.task_id,
            s.family,
            s.obs_kind,
            s.obs_shape,
            s.num_actions,
            r.device,
            s.num_envs,
            f" async batch {s.batch_size}" if s.is_async else "",
            run.net_spec.kind,
            " dueling" if run.net_spec.dueling else "",
            run.ring.capacity,
            s.frame_shape,
            s.frame_dtype,
        )
        if r.cpu_line:  # the CPU, and the threads, precision, compile mode and layout chosen for it
            log.info(r.cpu_line)
        if _cpu_pixels(run, r):
            log.info(cpu_note(cfg.algo.total_steps, cfg.algo.learning_starts, cfg.algo.replay_ratio))
        log_place(run.run_dir, r)

    def estimate(self, run: Run, r: Resolved) -> tuple[int, float | None]:
        """The random warm-up, then the learning speed measured for pixel runs on CPU (``training.expectations``)."""
        a = run.cfg.algo
        return a.learning_starts, cpu_learning_sps(a.replay_ratio) if _cpu_pixels(run, r) else None

    def start(self, run: Run, st: LoopState, loggers: Any, stop: GracefulStop) -> None:
        loop.start_envs(run, stop)
        loop.finish_interrupted_burst(self, run, st, loggers, stop)

    def step(self, run: Run, st: LoopState, loggers: Any, stop: GracefulStop) -> bool:
        return loop.step(run, st, loggers, stop)

    def row_columns(self, run: Run) -> dict[str, float]:
        """The dead ReLU units of the online network on the last update's batch (``networks.dead_units``):
        one forward of one batch per metric row; nan before the first update."""
        batch = run.last_batch
        if batch is None:
            return {f"dead_{k}": float("nan") for k in DEAD_UNIT_LAYERS}
        obs = torch.as_tensor(batch.obs).to(run.device)
        return {f"dead_{k}": v for k, v in dead_units(run.learner.online, obs).items()}

    def value_name(self, run: Run) -> str:
        return "Q-value"

    def save(self, run: Run, st: LoopState) -> Path:
        return loop.write_checkpoint(run, st)


def _cpu_pixels(run: Run, r: Resolved) -> bool:
    """A pixel-observation run on CPU: the case ``training.expectations`` has measured speeds for."""
    return r.device.type == "cpu" and run.spec.obs_kind == "pixels"


def _log_ring(run: Run, st: LoopState) -> None:
    """A resumed run's ring: reloaded from its file, or refilled (and how)."""
    a = run.cfg.algo
    then = "learning resumes" if st.env_steps >= a.learning_starts else "the warm-up goes on"
    if run.replay_file is not None:
        log.info(
            "replay: reloaded %s (%d stored steps, sampler state restored)%s",
            run.replay_file.name,
            len(run.ring),
            f"; its refill goes on: {st.refill_left} agent steps left before {then}" if st.refill_left else "",
        )
        return
    saved = (run.plan.ck.get("replay") or {}).get("file")
    log.info(
        "replay: %s, so the ring starts empty and is refilled with %d agent steps (what it held at the "
        "checkpoint, up to algo.learning_starts=%d) of the agent's epsilon-greedy policy at eps %.4g before "
        "%s (not counted in env_steps)",
        "not saved with the checkpoint" if not saved else "replay.save=false",
        st.refill_left,
        a.learning_starts,
        st.epsilon,
        then,
    )
