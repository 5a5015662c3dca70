"""The REINFORCE run: collect whole episodes from all envs at once, one policy update per batch.

Per iteration (synchronous envpool, ``envs.num_envs`` = E envs):

    reset -> every env plays until its episode ends (terminated or truncated); steps after
             an env's end are stepped (envpool steps all envs together) but masked out
    learn -> one Adam step on the E episodes (``dqnfast.agent.reinforce.PolicyLearner``)
    log   -> a metrics.csv row every ``logger.log_every`` agent steps
    save  -> a checkpoint every ``logger.checkpoint_every`` agent steps, at the end, on SIGINT/SIGTERM

DQN's divergence guard (``dqnfast.training.divergence``) stops a run whose metric row has a
loss that is not finite, or whose policy's weights or logits on the last batch blew up,
before a checkpoint is written over the last good one (exit 1, one line).

Units: ``env_steps`` count only the masked-in agent steps, summed over envs, so they
compare with DQN's. Run outputs are DQN's: metrics.csv (``epsilon`` is nan: the policy
explores by sampling; ``q_mean`` holds V's mean with a value baseline, else is empty),
checkpoint.pt, eval.json and the plots from ``dqnfast.evaluation.final_evaluation`` (greedy
= argmax of the logits).

The run around the loop is every learner's (``dqnfast.training.run``: lock, resume plan,
seeding, loggers, signals, metric rows and checkpoints, summary, final evaluation); this
module is REINFORCE's ``Learning``. Resume reuses DQN's pieces: ``LoopState`` (counters,
metric sums, score windows, next log/checkpoint step, training time), ``rng_state``,
``check_resumable`` and ``save_run_checkpoint``. A checkpoint is written only between
batches, where no episode is in progress, so of the envs only their seed and each env's
reset count are kept: envpool's classic-control envs draw random numbers only when they reset, so envs
made from the same seed and reset as often continue exactly (``envs.resume=replay``);
``reseed`` makes new envs from ``seed + ENV_RESEED_STRIDE * resumes``.

Checkpoint layout (``dqnfast.checkpoint`` adds format, version and checksum)::

    learner   "reinforce"
    online, optimizer, updates   PolicyLearner.state_dict()
    counters  env_steps, frames, updates, episodes, seed, resumes
    loop      LoopState.state_dict()
    rng       python, numpy, torch (, torch_cuda), sampler (the actions' torch generator)
    envs      mode, seed, num_envs, resets (int64[E]: resets of each env since it was made from seed)
    config, game, obs, num_actions, network (PolicySpec.to_dict()), run_name
"""

from __future__ import annotations

import dataclasses
import logging
import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dqnfast.agent.reinforce import PolicyLearner, PolicyNetwork
from dqnfast.config import Config, ConfigError
from dqnfast.config.resolve import Resolved
from dqnfast.config.schema import Baseline, PolicyKind
from dqnfast.training.divergence import check_network
from dqnfast.training.limits import check_resume_seed, check_run_memory
from dqnfast.training.resume import ResumePlan, check_resumable
from dqnfast.training.run import envs_restored, log_place
from dqnfast.training.state import LoopState, record, rng_state, set_rng_state
from dqnfast.training.stop import GracefulStop, reached

__all__ = ["Reinforce", "collect_episodes", "replay_resets"]

log = logging.getLogger("dqnfast.train")


def collect_episodes(env: Any, learner: Any, generator: Any, max_steps: int) -> dict[str, np.ndarray]:
    """Plays one episode in every env of a synchronous envpool ``env`` (reset first).

    Returns obs float32[T, E, d], actions int64[T, E], rewards float32[T, E],
    dones bool[T, E] (true at each env's last step), mask bool[T, E] (steps inside the
    episode); T is the longest episode (at most ``max_steps``; a longer one is cut there).
    resets int64[E]: how many times each env reset (the first reset, and envpool's
    automatic ones when an env that has ended is stepped on).
    """
    obs, _ = env.reset()
    e = obs.shape[0]
    alive = np.ones(e, bool)
    resets = np.ones(e, np.int64)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "actions", "rewards", "dones", "mask")}
    for _ in range(max_steps):
        actions = learner.act(obs, generator)
        nxt, reward, terminated, truncated, info = env.step(actions.astype(np.int32))
        resets[info["env_id"][info["elapsed_step"] == 0]] += 1  # envpool reset these instead of stepping
        done = (terminated | truncated) & alive
        rows["obs"].append(obs.astype(np.float32))
        rows["actions"].append(actions)
        rows["rewards"].append(np.where(alive, reward, 0.0).astype(np.float32))
        rows["dones"].append(done)
        rows["mask"].append(alive.copy())
        alive &= ~done
        obs = nxt
        if not alive.any():
            break
    out = {k: np.stack(v) for k, v in rows.items()}
    out["dones"][-1] |= out["mask"][-1]  # an episode cut at max_steps ends there
    out["resets"] = resets
    return out


def replay_resets(env: Any, counts: np.ndarray) -> None:
    """Resets env i of a fresh synchronous envpool ``env`` ``counts[i]`` times (its results are dropped).

    envpool's classic-control envs draw random numbers only when they reset (the first
    state), so envs made from a run's seed and reset as often as the run's had been
    (``collect_episodes``' ``resets``, summed) continue exactly where the run's stopped.
    """
    counts = np.asarray(counts, np.int64)
    for k in range(int(counts.max(initial=0))):
        env.reset(np.flatnonzero(counts > k).astype(np.int32))


@dataclass
class _Run:
    """The parts of one REINFORCE run, fresh or resumed (``plan.ck``)."""

    cfg: Config
    run_dir: Path
    config_dict: dict
    plan: ResumePlan
    device: Any
    env: Any
    spec: Any  # dqnfast.envs.EnvSpec
    learner: Any  # PolicyLearner
    gen: Any  # the torch.Generator actions are sampled with
    max_steps: int
    resets: np.ndarray  # int64[E]: resets of each env since it was made from plan.env_seed
    last_obs: Any = None  # the last batch's observations: a checkpoint checks the policy's logits on them

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def net_spec(self) -> Any:
        return self.learner.online.spec


class Reinforce:
    """REINFORCE: whole episodes from every env, one policy-gradient step per batch of them."""

    epsilon = math.nan  # the policy explores by sampling: metrics.csv's epsilon is nan

    def build(
        self, cfg: Config, r: Resolved, plan: ResumePlan, run_dir: Path, config_dict: dict, stack: ExitStack
    ) -> _Run:
        """Checks the run's memory budget, makes the envs (from ``plan.env_seed``; closed by ``stack``),
        the policy and its learner; a resumed run's checkpoint is checked against them (one-line ConfigError)."""
        from dqnfast.envs import make_env  # looked up at each call: tests replace it on its module

        if cfg.replay.check_memory:  # the envs' share of the run budget, before any is made
            check_run_memory(cfg, r.task_id, r.family, on_cpu=r.device.type == "cpu")
        if plan.ck:
            check_resume_seed(plan.env_seed, cfg.envs.num_envs, plan.resumes)
        rc, n = cfg.reinforce, cfg.envs.num_envs
        envs = dataclasses.replace(cfg.envs, num_threads=r.env_threads)  # the threads the start-up line names
        env, spec = make_env(cfg.game, cfg.obs, envs, cfg.envs.train, seed=plan.env_seed, batch_size=n, task=r.game)
        stack.callback(env.close)
        reached("envs")
        hidden = [] if rc.policy == PolicyKind.linear else list(cfg.network.mlp_hidden)
        net = PolicyNetwork(spec.obs_shape[0], spec.num_actions, hidden, value=rc.baseline == Baseline.value)
        if plan.ck:
            _check_resumable(plan, cfg, spec, net.spec)
        learner = PolicyLearner(
            net,
            lr=cfg.optim.lr,
            eps=cfg.optim.eps,
            gamma=cfg.algo.gamma,
            baseline=rc.baseline,
            value_coef=rc.value_coef,
            device=r.device,
        )
        gen = torch.Generator().manual_seed(cfg.seed)
        max_steps = int(env.config.get("max_episode_steps", 500))
        resets = np.zeros(spec.num_envs, np.int64)
        return _Run(cfg, run_dir, config_dict, plan, r.device, env, spec, learner, gen, max_steps, resets)

    def restore(self, run: _Run, st: LoopState) -> None:
        """``_payload``'s keys besides the weights and Adam state: counters, loop state, RNG states."""
        ck = run.plan.ck
        st.restore(ck, run.cfg.logger, device=torch.device("cpu"), envs_too=False)  # host metric sums
        set_rng_state(ck["rng"], None, None, run.device, ring_too=False)
        run.gen.set_state(ck["rng"]["sampler"])

    def log_start(self, run: _Run, st: LoopState, r: Resolved) -> None:
        s, rc = run.spec, run.cfg.reinforce
        log.info(
            "run %s: REINFORCE on %s (%d actions), %d envs, %s policy %s, baseline %s, on %s",
            run.name,
            s.task_id,
            s.num_actions,
            s.num_envs,
            rc.policy,
            list(run.net_spec.hidden) or "(linear)",
            rc.baseline,
            r.device,
        )
        log_place(run.run_dir, r, sampler=False)

    def estimate(self, run: _Run, r: Resolved) -> tuple[int, float | None]:
        return 0, None  # it learns from the first batch; no speed measured ahead

    def start(self, run: _Run, st: LoopState, loggers: Any, stop: GracefulStop) -> None:
        """On an exact resume, resets each env as often as it had been: its RNG continues where it stopped."""

        def replay() -> str:
            counts = run.plan.ck["envs"]["resets"].numpy().astype(np.int64)
            replay_resets(run.env, counts)
            run.resets[:] = counts
            return f"{int(counts.sum())} resets of {len(counts)} envs"

        envs_restored(run.plan, replay, missing="reset counts for these envs")

    def step(self, run: _Run, st: LoopState, loggers: Any, stop: GracefulStop) -> bool:
        """One batch: a whole episode per env, then one update. Never stopped halfway: a checkpoint
        falls between batches, where no episode is in progress."""
        # act: one whole episode per env
        b = collect_episodes(run.env, run.learner, run.gen, run.max_steps)
        run.resets += b["resets"]
        # learn
        m = run.learner.update(b["obs"], b["actions"], b["rewards"], b["dones"], b["mask"])
        run.last_obs = b["obs"][b["mask"]]
        value = m["value_mean"] if self.value_name(run) else math.nan
        st.add_metrics(
            {"loss": torch.tensor(m["loss"], dtype=torch.float64), "q_mean": torch.tensor(value, dtype=torch.float64)}
        )
        ep_len = b["mask"].sum(0)
        for score, n in zip(b["rewards"].sum(0), ep_len):
            st.game_ended(float(score), int(n))
        k = int(ep_len.sum())
        st.env_steps += k
        loggers.progress(k)
        return True

    def row_columns(self, run: _Run) -> dict[str, float]:
        return {}

    def value_name(self, run: _Run) -> str | None:
        """With a value baseline metrics.csv's ``q_mean`` is V's mean; without one it is nan by design."""
        return "value" if run.cfg.reinforce.baseline == Baseline.value else None

    def save(self, run: _Run, st: LoopState) -> Path:
        """Writes the checkpoint; raises TrainingDiverged (nothing written) for a diverged policy (DQN's guard)."""
        from dqnfast.checkpoint import save_run_checkpoint  # looked up at each call: tests replace it on its module

        check_network(run, st.env_steps, run.last_obs, outputs="logits")
        return save_run_checkpoint(
            run.run_dir, _payload(run, st), env_steps=st.env_steps, keep=run.cfg.logger.keep_checkpoints
        )


def _check_resumable(plan: ResumePlan, cfg: Config, spec: Any, policy: Any) -> None:
    """A checkpoint without loop state is refused, then DQN's checks: game, observations, actions, network, steps."""
    if not all(k in plan.ck for k in ("loop", "rng", "envs", "game")):
        raise ConfigError(
            "resume",
            "the checkpoint has no training-loop state (an older or hand-made checkpoint): "
            "it cannot be resumed; start a new run",
        )
    check_resumable(plan, cfg, spec, policy)


def _payload(run: _Run, st: LoopState) -> dict[str, Any]:
    """The whole checkpoint of ``run`` at loop state ``st`` (the layout in the module docstring)."""
    learned = run.learner.state_dict()
    rng = rng_state(None, None, run.device)
    rng["sampler"] = run.gen.get_state()
    return {
        "learner": "reinforce",
        **learned,
        **record(run, st, updates=run.learner.num_updates, envs={"resets": torch.from_numpy(run.resets.copy())}),
        "rng": rng,
    }
