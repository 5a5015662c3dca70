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
checkpoint.pt, eval.json and the plots from ``dqnfast.evaluate.final_evaluation`` (greedy
= argmax of the logits).

Resume reuses DQN's pieces: ``LoopState`` (counters, metric sums, score windows, next
log/checkpoint step, training time), ``rng_state``, ``plan_resume`` / ``check_resumable``
and ``save_run_checkpoint``. A checkpoint is written only between batches, where no
episode is in progress, so of the envs only their seed and each env's reset count are
kept: envpool's classic-control envs draw random numbers only when they reset, so envs
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
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dqnfast.config import Config, ConfigError
from dqnfast.config.schema import plain
from dqnfast.training.divergence import check_network, check_row
from dqnfast.training.resume import ResumePlan
from dqnfast.training.state import LoopState, next_mark
from dqnfast.training.stop import GracefulStop, reached

__all__ = ["collect_episodes", "replay_resets", "train_reinforce"]

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


def _build(cfg: Config, r: Any, plan: ResumePlan, run_dir: Path, config_dict: dict) -> _Run:
    """Checks the run's memory budget, seeds the process, makes the envs (from ``plan.env_seed``), the policy
    and its learner.

    A resumed run's checkpoint is checked against them here (one-line ConfigError) and
    its RNG states replace the seeding later (``_restore``).
    """
    import torch

    from dqnfast.agent.reinforce import PolicyLearner, PolicyNetwork
    from dqnfast.envs import make_env, resolve_game
    from dqnfast.training.limits import check_resume_seed, check_run_memory

    if cfg.replay.check_memory:  # the envs' share of the run budget, before any is made
        check_run_memory(cfg, *resolve_game(cfg.game), on_cpu=r.device.type == "cpu")
    if plan.ck:
        check_resume_seed(plan.env_seed, cfg.envs.num_envs, plan.resumes)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if r.torch_threads:
        torch.set_num_threads(r.torch_threads)
    rc, n = cfg.reinforce, cfg.envs.num_envs
    envs = dataclasses.replace(cfg.envs, num_threads=r.env_threads)  # the threads the start-up line names
    env, spec = make_env(cfg.game, cfg.obs, envs, cfg.envs.train, seed=plan.env_seed, batch_size=n)
    try:
        reached("envs")
        hidden = [] if rc.policy == "linear" else list(cfg.network.mlp_hidden)
        net = PolicyNetwork(spec.obs_shape[0], spec.num_actions, hidden, value=rc.baseline == "value")
        if plan.ck:
            _check_resumable(plan, cfg, spec, net.spec)
        learner = PolicyLearner(
            net,
            lr=cfg.optim.lr,
            eps=cfg.optim.eps,
            gamma=cfg.algo.gamma,
            baseline=str(rc.baseline),
            value_coef=rc.value_coef,
            device=r.device,
        )
    except BaseException:
        env.close()
        raise
    gen = torch.Generator().manual_seed(cfg.seed)
    max_steps = int(env.config.get("max_episode_steps", 500))
    return _Run(
        cfg, run_dir, config_dict, plan, r.device, env, spec, learner, gen, max_steps, np.zeros(spec.num_envs, np.int64)
    )


def _check_resumable(plan: ResumePlan, cfg: Config, spec: Any, policy: Any) -> None:
    """A checkpoint without loop state is refused, then DQN's checks: game, observations, actions, network, steps."""
    from dqnfast.training.resume import check_resumable

    if not all(k in plan.ck for k in ("loop", "rng", "envs", "game")):
        raise ConfigError(
            "resume",
            "the checkpoint has no training-loop state (an older or hand-made checkpoint): "
            "it cannot be resumed; start a new run",
        )
    check_resumable(plan, cfg, spec, policy)


def _payload(run: _Run, st: LoopState) -> dict[str, Any]:
    """The whole checkpoint of ``run`` at loop state ``st`` (the layout in the module docstring)."""
    import torch

    from dqnfast.training.state import rng_state

    spec, learner, plan = run.spec, run.learner, run.plan
    rng = rng_state(None, None, run.device)
    rng["sampler"] = run.gen.get_state()
    return {
        "learner": "reinforce",
        **learner.state_dict(),
        "counters": {
            "env_steps": st.env_steps,
            "frames": st.env_steps,
            "updates": learner.num_updates,
            "episodes": st.episodes,
            "seed": run.cfg.seed,
            "resumes": st.resumes,
        },
        "config": run.config_dict,
        "game": spec.task_id,
        "obs": {"kind": spec.obs_kind, "shape": list(spec.obs_shape), "dtype": spec.frame_dtype.name},
        "num_actions": spec.num_actions,
        "network": learner.online.spec.to_dict(),
        "run_name": run.name,
        "loop": st.state_dict(checkpoint_every=run.cfg.logger.checkpoint_every),
        "rng": rng,
        "envs": {
            "mode": plan.env_mode,
            "seed": plan.env_seed,
            "num_envs": spec.num_envs,
            "resets": torch.from_numpy(run.resets.copy()),
        },
    }


def _save(run: _Run, st: LoopState) -> Path:
    """Writes the checkpoint; raises TrainingDiverged (nothing written) for a diverged policy (DQN's guard)."""
    from dqnfast.checkpoint import save_run_checkpoint

    check_network(run, st.env_steps, run.last_obs, outputs="logits")
    return save_run_checkpoint(
        run.run_dir, _payload(run, st), env_steps=st.env_steps, keep=run.cfg.logger.keep_checkpoints
    )


def _restore(run: _Run, st: LoopState) -> None:
    """Reads ``_payload``'s keys back: weights and Adam state, counters, loop state, RNG states."""
    import torch

    from dqnfast.training.state import set_rng_state

    ck, lg = run.plan.ck, run.cfg.logger
    try:
        run.learner.load_state_dict(ck)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConfigError(
            "resume", f"the checkpoint's weights do not fit this network ({' '.join(str(e).split())[:200]})"
        ) from None
    st.load_state_dict(
        ck["loop"],
        ck["counters"],
        device=torch.device("cpu"),  # the metric sums are host tensors here
        log_every=lg.log_every,
        checkpoint_every=lg.checkpoint_every,
        envs_too=False,
    )
    set_rng_state(ck["rng"], None, None, run.device, ring_too=False)
    run.gen.set_state(ck["rng"]["sampler"])
    log.info(
        "resume %s from %s at %d agent steps (%d updates, %d episodes); resume #%d",
        run.name,
        ck.get("_path", "the checkpoint"),
        st.env_steps,
        run.learner.num_updates,
        st.episodes,
        run.plan.resumes,
    )


def _start_envs(run: _Run) -> None:
    """On an exact resume, resets each env as often as it had been: its RNG continues where it stopped."""
    plan = run.plan
    if plan.replay_envs:
        t0 = time.perf_counter()
        counts = plan.ck["envs"]["resets"].numpy().astype(np.int64)
        replay_resets(run.env, counts)
        run.resets[:] = counts
        log.info(
            "envs: restored by replaying %d resets of %d envs from seed %d in %.2f s",
            int(counts.sum()),
            len(counts),
            plan.env_seed,
            time.perf_counter() - t0,
        )
    elif plan.ck:
        log.info(
            "envs: re-created with seed %d (envs.resume=%s%s)",
            plan.env_seed,
            plan.env_mode,
            "" if plan.env_mode == "reseed" else ", but the checkpoint has no reset counts for these envs",
        )


def _train_loop(run: _Run, st: LoopState, loggers: Any, stop: Any) -> Path:
    """Trains until ``algo.total_steps`` agent steps or a signal; returns the last checkpoint (between batches)."""
    import torch

    lg, learner = run.cfg.logger, run.learner
    value = run.cfg.reinforce.baseline == "value"
    _start_envs(run)
    while st.env_steps < run.cfg.algo.total_steps and not stop.signum:
        # act: one whole episode per env
        b = collect_episodes(run.env, learner, run.gen, run.max_steps)
        run.resets += b["resets"]
        # learn
        m = learner.update(b["obs"], b["actions"], b["rewards"], b["dones"], b["mask"])
        run.last_obs = b["obs"][b["mask"]]
        st.add_metrics(
            {
                "loss": torch.tensor(m["loss"], dtype=torch.float64),
                "q_mean": torch.tensor(m["value_mean"] if value else math.nan, dtype=torch.float64),
            }
        )
        ep_len = b["mask"].sum(0)
        for score, n in zip(b["rewards"].sum(0), ep_len):
            st.game_ended(float(score), int(n))
        k = int(ep_len.sum())
        st.env_steps += k
        loggers.progress(k)
        # log, save
        if st.env_steps >= st.next_log:
            _log_row(run, st, loggers)
            st.next_log = next_mark(st.env_steps, st.next_log, lg.log_every)
        if st.env_steps >= st.next_ckpt:
            _save(run, st)
            st.next_ckpt = next_mark(st.env_steps, st.next_ckpt, lg.checkpoint_every)
    if stop.signum and st.env_steps < run.cfg.algo.total_steps:
        # no metrics row here: the partial sums go into the checkpoint, so a resumed
        # run writes exactly the rows an uninterrupted one would
        return _save(run, st)  # the caller says where it is, in the run's one line about the signal
    if st.n_metrics or st.last_steps != st.env_steps:
        _log_row(run, st, loggers)
    return _save(run, st)


def _log_row(run: _Run, st: LoopState, loggers: Any) -> None:
    """Writes a metric row; raises TrainingDiverged (after writing it) as DQN's does: a loss that is not
    finite, or a value head's mean beyond ``Q_LIMIT`` (without a value head the column is nan by design)."""
    n, since = st.n_metrics, st.last_steps
    row = st.row(frame_skip=1, updates=run.learner.num_updates)
    loggers.log_metrics(row)
    check_row(run, st.env_steps, row, n, since, value="value" if run.cfg.reinforce.baseline == "value" else None)


def train_reinforce(
    cfg: Config,
    run_dir: str | Path,
    *,
    config_dict: dict | None = None,
    resume: str | Path | dict | None = None,
    tracking: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs REINFORCE into ``run_dir``; returns the same summary dict as ``dqnfast.training.train``.

    cfg: a validated Config with ``learner=reinforce`` (classic control only). resume: a
    checkpoint (path or loaded dict) of a REINFORCE run to continue; one of another
    learner, game or policy shape, or one already at ``algo.total_steps``, raises
    ConfigError("resume", ...). ``run_dir`` is locked for the run and refused when it holds
    another run; a resume into another, empty folder forks the run (``dqnfast.training.rundir``).
    """
    from dqnfast.config.resolve import resolve
    from dqnfast.training.resume import plan_resume
    from dqnfast.training.rundir import claim
    from dqnfast.training.trainer import evaluate_only

    run_dir = Path(run_dir)
    config_dict = plain(config_dict if config_dict is not None else dataclasses.asdict(cfg))
    plan = plan_resume(cfg, resume, run_dir)
    with claim(run_dir, source=plan.source, ck=plan.ck, replay=False):
        if plan.eval_only:  # stopped between its last batch and the end of its final evaluation
            return evaluate_only(cfg, resolve(cfg), plan, run_dir, config_dict, tracking)
        return _train_reinforce(cfg, run_dir, plan, config_dict, tracking)


def _train_reinforce(
    cfg: Config, run_dir: Path, plan: ResumePlan, config_dict: dict, tracking: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``train_reinforce`` in its locked run dir: build, train, checkpoint, evaluate.

    The console is DQN's (``dqnfast.training.trainer``): the run dir and threads lines, the
    progress bar, the totals line and the final evaluation with its random-agent baseline.
    The signal handlers are installed from the loop's start to the evaluation's end.
    """
    from dqnfast.config.resolve import resolve
    from dqnfast.training.trainer import (
        evaluate_and_close,
        failed_run_closes,
        log_place,
        log_totals,
        open_loggers,
        stopped,
    )

    r = resolve(cfg)
    run = _build(cfg, r, plan, run_dir, config_dict)
    stop = GracefulStop(install=False)
    try:
        try:
            lg, s, rc = cfg.logger, run.spec, cfg.reinforce
            st = LoopState(
                s.num_envs,
                lg.score_window,
                resumes=plan.resumes,
                next_log=lg.log_every,
                next_ckpt=lg.checkpoint_every or math.inf,
                epsilon=math.nan,  # the policy explores by sampling: metrics.csv's epsilon is nan
            )
            if plan.ck:
                _restore(run, st)
            hidden = list(run.learner.online.spec.hidden) or "(linear)"
            log.info(
                "run %s: REINFORCE on %s (%d actions), %d envs, %s policy %s, baseline %s, on %s",
                run.name,
                s.task_id,
                s.num_actions,
                s.num_envs,
                rc.policy,
                hidden,
                rc.baseline,
                r.device,
            )
            log_place(run_dir, r, sampler=False)
            loggers = open_loggers(
                cfg, run_dir, run.name, s.task_id, config_dict, tracking, resume=bool(plan.ck), start_step=st.env_steps
            )
            with failed_run_closes(loggers):
                stop.install()
                st.started()
                ckpt = _train_loop(run, st, loggers, stop)
                loggers.console.close()  # the bar ends with the loop; the others get the evaluation
        finally:
            run.env.close()
        summary = _summary(run, st, ckpt, stop.name)
        if stop.signum and st.env_steps < cfg.algo.total_steps:
            return stopped(summary, loggers, stop.signum, "training", run_dir)

        def totals() -> None:
            log_totals(s.frame_skip, summary, st.scores, segment=plan.counters.get("env_steps", 0))

        # after the last batch the final checkpoint is written: a signal stops the evaluation, resume= runs it
        return evaluate_and_close(cfg, run.learner.online, run.device, run_dir, s, loggers, summary, stop, totals)
    finally:
        stop.restore()


def _summary(run: _Run, st: LoopState, ckpt: Path, interrupted: str) -> dict[str, Any]:
    """``train``'s summary dict (eval still None)."""
    return {
        "run_name": run.name,
        "env_steps": st.env_steps,
        "updates": run.learner.num_updates,
        "episodes": st.episodes,
        "train_time": time.perf_counter() - st.start,
        "score_mean": st.score_mean(),
        "eval": None,
        "interrupted": interrupted or None,
        "stopped_in": None,
        "metrics": str(run.run_dir / "metrics.csv"),
        "checkpoint": str(ckpt),
    }
