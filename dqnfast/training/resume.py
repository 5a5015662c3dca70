"""Continuing a run from its checkpoint: what comes back, and the checks that refuse a misfit.

envpool's emulator state cannot be saved, so the envs come back either re-seeded
(``envs.resume=reseed``: seed + ``ENV_RESEED_STRIDE`` * resumes) or by re-playing every
action sent since the run started from the same seed (``replay``: exact). The replay ring
is reloaded when it was saved beside the checkpoint: always with ``replay.save``, and also
without it when the checkpoint was written while the ring was filling (the random warm-up
before ``algo.learning_starts``, or a resume's refill), since that ring is all of the run's
progress since it started or resumed (``saved_ring``). Otherwise the ring is refilled by what
is missing: as many agent steps as it held at the checkpoint, up to ``algo.learning_starts``
(``refill_steps``), played by the agent's epsilon-greedy policy and not counted.

A run whose steps are all done but whose final evaluation did not finish (eval.json is
missing, or is from an earlier segment) resumes into that evaluation only: no envs for
training, no ring, no checkpoint written (``eval_only``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dqnfast.checkpoint import CheckpointError, check_compatible, find_checkpoint, run_dir_of
from dqnfast.config import Config, ConfigError
from dqnfast.config.schema import EnvResume, LearnerName
from dqnfast.replay import ReplayFileError, ReplayRing

__all__ = [
    "ENV_RESEED_STRIDE",
    "ResumePlan",
    "check_resumable",
    "evaluation_pending",
    "load_ring",
    "plan_resume",
    "refill_steps",
    "ring_capacity",
    "run_name",
    "saved_ring",
]

log = logging.getLogger("dqnfast.train")

ENV_RESEED_STRIDE = 1_000_000  # a resumed run's envs (envs.resume=reseed) are seeded seed + stride * resumes


def run_name(cfg: Config) -> str:
    """CleanRL-style ``{game}__{exp_name}__{seed}__{unix time}``."""
    return f"{cfg.game}__{cfg.exp_name}__{cfg.seed}__{int(time.time())}"


@dataclass
class ResumePlan:
    """How a run starts: fresh (``ck`` None) or from a checkpoint.

    resumes: how many times the run has been resumed, this one included. env_mode:
    ``envs.resume``. replay_envs: the envs are restored exactly from the action log
    (REINFORCE: from the per-env reset counts).
    env_seed: the seed the envs are made with. name: the run's name (kept across resumes).
    source: the checkpoint file (None: a fresh run, or a loaded dict of unknown origin).
    eval_only: the steps are done and only the final evaluation is left.
    """

    ck: dict | None
    resumes: int
    env_mode: EnvResume
    replay_envs: bool
    env_seed: int
    name: str
    counters: dict = field(default_factory=dict)
    source: Path | None = None
    eval_only: bool = False

    @property
    def ring_seed_offset(self) -> int:
        return ENV_RESEED_STRIDE * self.resumes if self.ck else 0


def evaluation_pending(ck: dict, run_dir: Path) -> bool:
    """The checkpoint's final evaluation has no eval.json in ``run_dir`` (none, or one of other steps or another run)."""
    try:
        done = json.loads((run_dir / "eval.json").read_text())
    except (OSError, ValueError):
        return True
    return not (
        isinstance(done, dict)
        and done.get("env_steps") == int(ck["counters"]["env_steps"])
        and done.get("run_name") == ck.get("run_name")
    )


def plan_resume(
    cfg: Config, resume: str | os.PathLike | dict | None, run_dir: str | os.PathLike | None = None
) -> ResumePlan:
    """Loads the checkpoint (a path, or a loaded dict) and decides how the envs come back.

    A dict from the CLI carries its file as ``_path``. run_dir: where the run writes (where
    a dict of unknown origin looks for its eval.json). Raises ConfigError("resume") for a
    checkpoint that cannot be read or that another learner wrote, and for a run that is
    finished: steps done, final evaluation written.
    """
    from dqnfast.checkpoint import load_checkpoint  # looked up at each call: tests replace it on its module

    ck: dict | None = None
    source: Path | None = None
    if resume is not None:
        try:
            if isinstance(resume, dict):
                ck = resume
            else:
                path = find_checkpoint(resume)
                ck = load_checkpoint(path)
                ck["_path"] = str(path)
        except CheckpointError as e:
            raise ConfigError("resume", str(e)) from None
        source = Path(ck["_path"]) if ck.get("_path") else None
        was = str(ck.get("learner", LearnerName.dqn.value))  # DQN checkpoints carry no learner key
        if was != cfg.learner.value:
            raise ConfigError(
                "resume",
                f"the checkpoint is from a learner={was} run, this run is learner={cfg.learner}; "
                f"resume with learner={was}, or start a new run",
            )
    counters = dict(ck["counters"]) if ck else {}
    resumes = int(counters.get("resumes", 0)) + (1 if ck else 0)
    env_mode = cfg.envs.resume
    ck_envs = (ck or {}).get("envs") or {}
    replay_envs = (
        bool(ck)
        and env_mode == EnvResume.replay
        and (ck_envs.get("actions") is not None or ck_envs.get("resets") is not None)  # DQN's / REINFORCE's
        and int(ck_envs.get("num_envs", -1)) == cfg.envs.num_envs
    )
    if not ck:
        env_seed = cfg.seed
    elif replay_envs:
        env_seed = int(ck_envs["seed"])
    else:
        env_seed = cfg.seed + ENV_RESEED_STRIDE * resumes
    name = str(ck.get("run_name")) if ck and ck.get("run_name") else run_name(cfg)
    eval_only = False
    if ck and training_done(ck, cfg):
        where = run_dir_of(source) if source is not None else Path(run_dir or ".")
        eval_only = evaluation_pending(ck, where)
        if not eval_only:
            raise ConfigError("resume", _finished(counters, cfg))
    return ResumePlan(ck, resumes, env_mode, replay_envs, env_seed, name, counters, source, eval_only)


def training_done(ck: dict, cfg: Config) -> bool:
    """The checkpoint's steps reach ``algo.total_steps`` and no update of its last burst is owed
    (a signal inside the last burst leaves ``update_budget >= 1``: the resume trains it)."""
    owed = float((ck.get("loop") or {}).get("update_budget", 0.0)) >= 1.0
    return cfg.algo.total_steps <= int(ck["counters"]["env_steps"]) and not owed


def _finished(counters: dict, cfg: Config) -> str:
    return (
        f"the run already has {counters['env_steps']} agent steps and its final evaluation, and "
        f"algo.total_steps={cfg.algo.total_steps}; set algo.total_steps higher to continue"
    )


def check_resumable(plan: ResumePlan, cfg: Config, spec: Any, net_spec: Any) -> None:
    """Refuses a checkpoint of another game, observation, action count or network, or one without loop state."""
    ck = plan.ck
    try:
        check_compatible(
            ck, game=spec.task_id, obs_kind=spec.obs_kind, num_actions=spec.num_actions, network=net_spec.to_dict()
        )
    except CheckpointError as e:
        raise ConfigError("resume", str(e)) from None
    if not all(k in ck for k in ("loop", "rng", "envs")):
        raise ConfigError(
            "resume",
            "the checkpoint has no training-loop state (an older or hand-made "
            "checkpoint): it can be evaluated, not resumed",
        )
    if training_done(ck, cfg):  # plan_resume refuses it first
        raise ConfigError("resume", _finished(plan.counters, cfg))
    was = str(((ck.get("config") or {}).get("optim") or {}).get("name", cfg.optim.name))
    if was != cfg.optim.name.value:
        raise ConfigError("resume", f"the checkpoint's optimizer is {was}, this run's is {cfg.optim.name}")


def saved_ring(ck: dict, cfg: Config) -> str | None:
    """The ring file a resume from ``ck`` reloads (None: the ring is refilled).

    The checkpoint's ring file with ``replay.save``; without it, the one a checkpoint saved
    while its ring was filling (``replay.filling``: the warm-up or a refill).
    """
    replay = ck.get("replay") or {}
    name = replay.get("file")
    return name if name and (cfg.replay.save or replay.get("filling")) else None


def refill_steps(cfg: Config, env_steps: int) -> int:
    """Agent steps a resume at ``env_steps`` refills an empty ring with before learning goes on.

    What the run's ring held at that step, up to ``algo.learning_starts``: after the warm-up
    that is ``learning_starts``; in it, the steps played so far (the warm-up then continues
    with the steps it has left, so learning starts with ``learning_starts`` steps stored, as
    it would have).
    """
    return min(cfg.algo.learning_starts, env_steps)


def load_ring(
    plan: ResumePlan, cfg: Config, spec: Any, run_dir: Path, *, num_threads: int, frames_device: Any
) -> tuple[Any, Path] | tuple[None, None]:
    """The ring saved with the checkpoint (``saved_ring``), or (None, None) when there is none to load.

    A ring the user asked for (``replay.save``) that cannot be used is refused (ConfigError);
    a ring saved while it was filling, without ``replay.save``, is refilled instead, with one
    warning line that says why.
    """
    saved = saved_ring(plan.ck, cfg)
    if not saved:
        return None, None
    try:
        return _load_ring(cfg, spec, run_dir / saved, num_threads=num_threads, frames_device=frames_device)
    except _RingMisfit as e:
        if cfg.replay.save:
            raise
        log.warning("replay: the ring saved while it was filling cannot be used (%s); it is refilled instead", e.why)
        return None, None


class _RingMisfit(ConfigError):
    """A saved ring that cannot be used; ``why`` without the advice that follows it for ``replay.save``."""

    def __init__(self, why: str, advice: str) -> None:
        super().__init__("resume", f"{why}; {advice}")
        self.why = why


def _load_ring(cfg: Config, spec: Any, path: Path, *, num_threads: int, frames_device: Any) -> tuple[Any, Path]:
    try:
        ring = ReplayRing.load(
            path,
            num_threads=num_threads,
            check_memory=cfg.replay.check_memory,
            frames_device=frames_device,
            num_actions=spec.num_actions,
            alpha=cfg.replay.alpha,
            priority_eps=cfg.replay.priority_eps,
        )
    except (ReplayFileError, FileNotFoundError, MemoryError) as e:
        raise _RingMisfit(str(e), "resume with replay.save=false to refill the ring instead") from None
    have = (ring.num_envs, ring.n_step, ring.stack, float(ring.gamma), ring.prioritized)
    want = (spec.num_envs, cfg.replay.n_step, spec.stack, float(cfg.algo.gamma), cfg.replay.prioritized)
    if have != want:
        raise _RingMisfit(
            f"the saved replay ring has (envs, n_step, stack, gamma, prioritized) = {have}, this run {want}",
            "keep them, or resume with replay.save=false",
        )
    # The config the checkpoints record must describe the ring the run uses: a changed capacity
    # is refused rather than logged as changed while the saved ring keeps its own size.
    capacity = ring_capacity(cfg.replay.capacity, spec.num_envs)
    if ring.capacity != capacity:
        raise ConfigError(
            "replay.capacity",
            f"the saved replay ring {path.name} holds {ring.capacity} steps, this run asks for {capacity}; keep "
            f"replay.capacity={ring.capacity}, or resume with replay.save=false to start a ring of {capacity} "
            "(refilled with algo.learning_starts agent steps)",
        )
    return ring, path


def ring_capacity(capacity: int, num_envs: int) -> int:
    """The ring a ``replay.capacity`` gives: whole per-env segments, at least one slot per env."""
    return max(num_envs, capacity // num_envs * num_envs)
