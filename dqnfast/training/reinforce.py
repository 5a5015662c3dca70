"""The REINFORCE run: collect whole episodes from all envs at once, one policy update per batch.

Per iteration (synchronous envpool, ``envs.num_envs`` = E envs):

    reset -> every env plays until its episode ends (terminated or truncated); steps after
             an env's end are stepped (envpool steps all envs together) but masked out
    learn -> one Adam step on the E episodes (``dqnfast.agent.reinforce.PolicyLearner``)
    log   -> a metrics.csv row every ``logger.log_every`` agent steps

Units: ``env_steps`` count only the masked-in agent steps, summed over envs, so they
compare with DQN's. Run outputs are DQN's: metrics.csv (``epsilon`` and ``q_mean`` are
empty: the policy explores by sampling; ``q_mean`` holds V's mean with a value baseline),
checkpoint.pt, eval.json and the plots from ``dqnfast.evaluate.final_evaluation`` (greedy
= argmax of the logits). Resume is refused at start-up (``config.validate``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections import deque
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dqnfast.config import Config
from dqnfast.config.schema import plain

__all__ = ["collect_episodes", "train_reinforce"]

log = logging.getLogger("dqnfast.train")


def collect_episodes(env: Any, learner: Any, generator: Any, max_steps: int) -> dict[str, np.ndarray]:
    """Plays one episode in every env of a synchronous envpool ``env`` (reset first).

    Returns obs float32[T, E, d], actions int64[T, E], rewards float32[T, E],
    dones bool[T, E] (true at each env's last step), mask bool[T, E] (steps inside the
    episode); T is the longest episode (at most ``max_steps``; a longer one is cut there).
    """
    obs, _ = env.reset()
    e = obs.shape[0]
    alive = np.ones(e, bool)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "actions", "rewards", "dones", "mask")}
    for _ in range(max_steps):
        actions = learner.act(obs, generator)
        nxt, reward, terminated, truncated, _ = env.step(actions.astype(np.int32))
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
    return out


def train_reinforce(
    cfg: Config,
    run_dir: str | Path,
    *,
    config_dict: dict | None = None,
    tracking: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs REINFORCE into ``run_dir``; returns the same summary dict as ``dqnfast.training.train``.

    cfg: a validated Config with ``learner=reinforce`` (classic control only). ``run_dir`` is
    locked for the run and refused when it holds another run (``dqnfast.training.rundir``).
    """
    from dqnfast.training.rundir import claim

    with claim(Path(run_dir), source=None, ck=None, replay=False):
        return _train_reinforce(cfg, Path(run_dir), config_dict=config_dict, tracking=tracking)


def _train_reinforce(
    cfg: Config, run_dir: Path, *, config_dict: dict | None, tracking: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``train_reinforce`` in its locked run dir: set up, train, checkpoint, evaluate (one flow, read top to bottom)."""
    import torch

    from dqnfast.agent.reinforce import PolicyLearner, PolicyNetwork
    from dqnfast.checkpoint import save_run_checkpoint
    from dqnfast.config.resolve import resolve
    from dqnfast.envs import make_env
    from dqnfast.evaluate import final_evaluation
    from dqnfast.loggers import RunInfo, RunLoggers, eval_media
    from dqnfast.training.resume import run_name
    from dqnfast.training.stop import GracefulStop

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_dict = plain(config_dict if config_dict is not None else dataclasses.asdict(cfg))
    r = resolve(cfg)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if r.torch_threads:
        torch.set_num_threads(r.torch_threads)
    rc, a, lg = cfg.reinforce, cfg.algo, cfg.logger

    # env setup
    env, spec = make_env(cfg.game, cfg.obs, cfg.envs, cfg.envs.train, seed=cfg.seed, batch_size=cfg.envs.num_envs)
    max_steps = int(env.config.get("max_episode_steps", 500))
    hidden = [] if rc.policy == "linear" else list(cfg.network.mlp_hidden)
    net = PolicyNetwork(spec.obs_shape[0], spec.num_actions, hidden, value=rc.baseline == "value")
    learner = PolicyLearner(
        net,
        lr=cfg.optim.lr,
        eps=cfg.optim.eps,
        gamma=a.gamma,
        baseline=str(rc.baseline),
        value_coef=rc.value_coef,
        device=r.device,
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    name = run_name(cfg)
    log.info(
        "run %s: REINFORCE on %s (%d actions), %d envs, %s policy %s, baseline %s, on %s",
        name,
        spec.task_id,
        spec.num_actions,
        spec.num_envs,
        rc.policy,
        hidden or "(linear)",
        rc.baseline,
        r.device,
    )
    tracking = dict(tracking or {})
    extra = {"hydra": tracking["hydra"]} if tracking.get("hydra") else {}
    info = RunInfo(
        run_dir,
        name,
        game=spec.task_id,
        config={**config_dict, **extra},
        group=tracking.get("group"),
        tags=[cfg.exp_name, *tracking.get("tags", ())],
    )
    loggers = RunLoggers(lg, info, total_steps=a.total_steps, desc=spec.task_id)
    scores: deque = deque(maxlen=lg.score_window)
    lengths: deque = deque(maxlen=lg.score_window)
    env_steps = episodes = 0
    next_log, next_ckpt = lg.log_every, lg.checkpoint_every or math.inf
    sums = {"loss": 0.0, "value": 0.0, "n": 0}
    start = last_time = time.perf_counter()
    last_steps = 0

    def row() -> dict[str, Any]:
        nonlocal last_time, last_steps
        now = time.perf_counter()
        n = sums["n"]
        out = {
            "env_steps": env_steps,
            "frames": env_steps,
            "episodes": episodes,
            "score_mean": float(np.mean(scores)) if scores else math.nan,
            "score_median": float(np.median(scores)) if scores else math.nan,
            "episode_length_mean": float(np.mean(lengths)) if lengths else math.nan,
            "loss": sums["loss"] / n if n else math.nan,
            "q_mean": sums["value"] / n if n and rc.baseline == "value" else math.nan,
            "epsilon": math.nan,
            "sps": (env_steps - last_steps) / max(now - last_time, 1e-9),
            "time": now - start,
            "updates": learner.num_updates,
        }
        sums.update(loss=0.0, value=0.0, n=0)
        last_time, last_steps = now, env_steps
        return out

    def checkpoint() -> Path:
        payload = {
            "learner": "reinforce",
            "config": config_dict,
            "run_name": name,
            "counters": {"env_steps": env_steps, "episodes": episodes, "updates": learner.num_updates},
            **learner.state_dict(),
        }
        return save_run_checkpoint(run_dir, payload, env_steps=env_steps, keep=lg.keep_checkpoints)

    try:
        with GracefulStop() as stop:
            while env_steps < a.total_steps and not stop.signum:
                # act: one whole episode per env
                b = collect_episodes(env, learner, gen, max_steps)
                # learn
                m = learner.update(b["obs"], b["actions"], b["rewards"], b["dones"], b["mask"])
                sums["loss"] += m["loss"]
                sums["value"] += m["value_mean"]
                sums["n"] += 1
                ep_len = b["mask"].sum(0)
                for s, n in zip(b["rewards"].sum(0), ep_len):
                    scores.append(float(s))
                    lengths.append(int(n))
                k = int(ep_len.sum())
                env_steps += k
                episodes += len(ep_len)
                loggers.progress(k)
                # log
                if env_steps >= next_log:
                    loggers.log_metrics(row())
                    while next_log <= env_steps:
                        next_log += lg.log_every
                if env_steps >= next_ckpt:
                    checkpoint()
                    while next_ckpt <= env_steps:
                        next_ckpt += lg.checkpoint_every
            if sums["n"]:
                loggers.log_metrics(row())
            ckpt = checkpoint()
        train_time = time.perf_counter() - start
        loggers.console.close()
        summary: dict[str, Any] = {
            "run_name": name,
            "env_steps": env_steps,
            "updates": learner.num_updates,
            "episodes": episodes,
            "train_time": train_time,
            "score_mean": float(np.mean(scores)) if scores else math.nan,
            "eval": None,
            "interrupted": stop.name or None,
            "metrics": str(run_dir / "metrics.csv"),
            "checkpoint": str(ckpt),
        }
        log.info(
            "trained %d agent steps, %d updates, %d episodes in %.1f s; last %d episodes: mean score %.2f",
            env_steps,
            learner.num_updates,
            episodes,
            train_time,
            len(scores),
            summary["score_mean"],
        )
        if stop.signum:
            loggers.close(exit_code=128 + stop.signum)
            return summary
        # evaluate: greedy (argmax of the logits) at explore.eval_epsilon, the DQN protocol
        result = final_evaluation(
            cfg,
            learner.online,
            r.device,
            run_dir,
            task_id=spec.task_id,
            run_name=name,
            env_steps=env_steps,
            frame_skip=1,
            updates=learner.num_updates,
            checkpoint=run_dir / "checkpoint.pt",
        )
        log.info(
            "evaluation: %d games, epsilon %.3f: mean score %.2f, median %.2f",
            len(result["scores"]),
            result["epsilon"],
            result["mean"],
            result["median"],
        )
        loggers.log_eval(result, step=env_steps, media=eval_media(run_dir))
        summary["eval"] = result
    except BaseException as e:
        loggers.close(exit_code=130 if isinstance(e, KeyboardInterrupt) else 1)
        raise
    finally:
        env.close()
    loggers.close()
    return summary
