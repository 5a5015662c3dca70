"""Building a run's parts from its config: env, replay ring, networks, learner, actor.

Each part gets only its own config section and the concrete values of
``dqnfast.config.resolve``. What is opened here is closed by the caller's ExitStack.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dqnfast.agent.actor import Actor, EpsilonSchedule
from dqnfast.agent.dqn import Learner, make_optimizer
from dqnfast.agent.networks import HeadOptions, NetworkSpec, make_network, spec_for
from dqnfast.config import Config, ConfigError
from dqnfast.config.resolve import Resolved, available_cores, check_thread_counts, resolve
from dqnfast.config.schema import ChannelsLast, Distributional, EnvResume, check_learning_starts
from dqnfast.envs import ActionLog, EnvSpec
from dqnfast.loggers import check_logger_config
from dqnfast.replay import Prefetcher, ReplayRing
from dqnfast.replay.batch import Batch
from dqnfast.training.limits import check_resume_seed, check_run_memory, check_seed
from dqnfast.training.resume import ResumePlan, check_resumable, load_ring, ring_capacity
from dqnfast.training.stop import reached

if TYPE_CHECKING:  # envpool's env protocol, for the annotation only: envpool is imported where envs are made
    from envpool.python.protocol import EnvPool

log = logging.getLogger("dqnfast.train")

__all__ = ["Run", "build", "check_config"]


def check_config(cfg: Config) -> Resolved:
    """All start-up checks that need no allocation; returns the run's resolved settings.

    Raises ConfigError naming the key: value checks (``config.validate``), thread counts
    against the cores, the seed against the range the run derives from it
    (``training.limits``), then what ``config.resolve.resolve`` makes concrete: the game
    name (with close matches), the observation kind for the game, the network's fit, the
    device, the replay storage; then the loggers. (The memory budget is checked by
    ``build``, first: it depends on what the machine has free when the run starts.)
    """
    from dqnfast.config import validate  # looked up at each call: tests replace it on its module

    validate(cfg)
    check_thread_counts(cfg, available_cores())
    check_seed(cfg)
    r = resolve(cfg)
    check_logger_config(cfg.logger)
    return r


@dataclass
class Run:
    """A run's parts and identity; the loop's changing state is ``state.LoopState``."""

    cfg: Config
    resolved: Resolved
    plan: ResumePlan
    run_dir: Path
    config_dict: dict
    env: EnvPool
    spec: EnvSpec
    net_spec: NetworkSpec
    ring: ReplayRing
    replay_file: Path | None  # the ring file the newest checkpoint refers to
    learner: Learner
    actor: Actor
    schedule: EpsilonSchedule
    batches: Prefetcher  # double-buffered batches on the learner's device
    actions_log: ActionLog | None  # None: the envs are not re-played on resume (or run asynchronously)
    last_batch: Batch | None = None  # the batch of the last update: a checkpoint checks the network's Q-values on it

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def device(self) -> torch.device:
        return self.resolved.device

    @property
    def env_mode(self) -> str:
        return self.plan.env_mode

    @property
    def env_seed(self) -> int:
        return self.plan.env_seed


def _make_env(cfg: Config, r: Resolved, plan: ResumePlan, stack: ExitStack) -> tuple[EnvPool, EnvSpec, NetworkSpec]:
    """The training envs (closed by ``stack``) and the network's spec for them."""
    from dqnfast.envs import make_env  # looked up at each call: tests replace it on its module

    if plan.ck and r.task_id != plan.ck.get("game"):  # the cheap check first
        raise ConfigError("resume", f"checkpoint is for {plan.ck.get('game')}, this run is {r.task_id}")
    if plan.ck:
        check_resume_seed(plan.env_seed, cfg.envs.num_envs, plan.resumes)
    envs = dataclasses.replace(cfg.envs, num_threads=r.env_threads)
    env, spec = make_env(cfg.game, cfg.obs, envs, cfg.envs.train, seed=plan.env_seed, task=r.game)
    stack.callback(env.close)
    n = cfg.network
    net_spec = spec_for(
        r.network,
        spec.obs_kind,
        spec.obs_shape,
        spec.frame_dtype.name,
        spec.num_actions,
        cnn_hidden=n.cnn_hidden,
        mlp_hidden=tuple(n.mlp_hidden),
        head=head_options(cfg),
    )
    return env, spec, net_spec


def _make_ring(
    cfg: Config, r: Resolved, plan: ResumePlan, spec: EnvSpec, run_dir: Path
) -> tuple[ReplayRing, Path | None]:
    """The replay ring: reloaded from the checkpoint's file, or new and empty."""
    frames_device = r.device if r.frames_on_device else None
    try:
        if plan.ck:
            ring, path = load_ring(plan, cfg, spec, run_dir, num_threads=r.sampler_threads, frames_device=frames_device)
            if ring is not None:
                return ring, path
        capacity = ring_capacity(cfg.replay.capacity, spec.num_envs)  # whole per-env segments only
        if capacity != cfg.replay.capacity:
            log.info(
                "replay.capacity %d is not a multiple of %d envs: the ring holds %d (%d steps per env)",
                cfg.replay.capacity,
                spec.num_envs,
                capacity,
                capacity // spec.num_envs,
            )
        ring = ReplayRing(
            capacity,
            spec.num_envs,
            spec.frame_shape,
            spec.frame_dtype,
            stack=spec.stack,
            n_step=cfg.replay.n_step,
            gamma=cfg.algo.gamma,
            seed=cfg.seed + plan.ring_seed_offset,
            num_threads=r.sampler_threads,
            # host memory: build's run budget covered the ring (before the envs took theirs);
            # with storage=cuda the ring still checks its frames against the GPU's free memory
            check_memory=cfg.replay.check_memory and frames_device is not None,
            frames_device=frames_device,
            num_actions=spec.num_actions,
            prioritized=cfg.replay.prioritized,
            alpha=cfg.replay.alpha,
            priority_eps=cfg.replay.priority_eps,
        )
    except MemoryError as e:
        raise ConfigError("replay.capacity", str(e)) from None
    return ring, None


# The noisy layers' generator is seeded apart from torch's global one (which initialises the weights)
# and from the actor's, so adding noise changes no other random stream of a run.
NOISE_SEED_OFFSET = 7_919


def _make_learner(cfg: Config, r: Resolved, net_spec: NetworkSpec) -> Learner:
    """Online and target networks (the target a copy of the online one), optimizer, Learner."""
    a, device = cfg.algo, r.device
    online = make_network(net_spec).to(device)
    target = make_network(net_spec).to(device)
    if r.channels_last == ChannelsLast.true:
        online, target = online.to(memory_format=torch.channels_last), target.to(memory_format=torch.channels_last)
    target.load_state_dict(online.state_dict())
    optimizer = make_optimizer(online.parameters(), cfg.optim, device=device, compile_mode=r.compile_mode)
    return Learner(
        online,
        target,
        optimizer,
        double=a.double,
        loss=a.loss,
        max_grad_norm=a.max_grad_norm,
        target_update_period=a.target_update_period,
        tau=a.tau,
        device=device,
        compile=r.compile_mode,
        amp_dtype=r.amp_dtype,
        nograd_amp_dtype=r.nograd_amp_dtype,
        channels_last=r.channels_last == ChannelsLast.train,
        noise_seed=cfg.seed + NOISE_SEED_OFFSET,
    )


def head_options(cfg: Config) -> HeadOptions:
    """The head the config asks for: plain, dueling, C51's distributional head, noisy or not."""
    a, n = cfg.algo, cfg.network
    return HeadOptions(
        dueling=bool(n.dueling),
        atoms=int(a.atoms) if a.distributional == Distributional.c51 else 0,
        v_min=float(a.v_min),
        v_max=float(a.v_max),
        noisy=bool(n.noisy),
        sigma0=float(n.noisy_sigma0),
    )


def build(cfg: Config, r: Resolved, plan: ResumePlan, run_dir: Path, config_dict: dict, stack: ExitStack) -> Run:
    """Every part of a run, in the order that fixes the RNG streams (env, ring, networks, actor).

    Raises ConfigError for a run whose memory budget does not fit (checked first, before
    anything is allocated: ``training.limits.check_run_memory``; the key named is the
    biggest item's), a checkpoint that does not fit (``resume``). Whatever was opened is
    closed by ``stack``.
    """
    if cfg.replay.check_memory:
        check_run_memory(cfg, r.task_id, r.family, on_cpu=r.device.type == "cpu")

    env, spec, net_spec = _make_env(cfg, r, plan, stack)
    reached("envs")
    if plan.ck:
        check_resumable(plan, cfg, spec, net_spec)
        check_learning_starts(cfg)
    ring, replay_file = _make_ring(cfg, r, plan, spec, run_dir)
    learner = _make_learner(cfg, r, net_spec)
    actor = Actor(
        learner.online,
        spec.num_actions,
        r.device,
        seed=cfg.seed,
        amp_dtype=r.nograd_amp_dtype,
        compile_mode=r.compile_mode,
    )
    schedule = epsilon_schedule(cfg)
    batches = ring.prefetcher(
        cfg.algo.batch_size,
        r.device,
        pin_memory=r.pin_memory,
        beta0=cfg.replay.beta0,  # prioritized replay: beta annealed from beta0 to 1 over the run
        beta_steps=cfg.algo.total_steps,
    )
    record = plan.env_mode == EnvResume.replay and not spec.is_async
    return Run(
        cfg,
        r,
        plan,
        run_dir,
        config_dict,
        env,
        spec,
        net_spec,
        ring,
        replay_file,
        learner,
        actor,
        schedule,
        batches,
        ActionLog(spec.num_envs) if record else None,
    )


def epsilon_schedule(cfg: Config) -> EpsilonSchedule:
    """The run's epsilon schedule; its decay counts from ``algo.learning_starts``, or from the first agent step
    with ``explore.from_start``."""
    x = cfg.explore
    offset = 0 if x.from_start else cfg.algo.learning_starts
    return EpsilonSchedule(x.schedule, x.start, x.end, x.decay_steps, offset, x.eval_epsilon)
