"""One training run: set up, loop, final evaluation. No Hydra here (``dqnfast.cli.train`` is the CLI).

Run outputs (the run dir): ``metrics.csv``, ``checkpoint.pt`` (the newest of
``checkpoints/step_*.pt``, see ``dqnfast.checkpoint``), ``replay_*.npz`` (``replay.save``),
``eval.json``, ``eval_scores.png``, ``learning_curve.png``; ``wandb/`` and ``tensorboard/``
with those loggers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from dqnfast.config import Config, ConfigError
from dqnfast.config.resolve import Resolved, resolve
from dqnfast.config.schema import plain
from dqnfast.envs import EnvCreationError
from dqnfast.training.components import Run, build, check_config
from dqnfast.training.expectations import cpu_note
from dqnfast.training.loop import run_loop
from dqnfast.training.resume import ResumePlan, plan_resume
from dqnfast.training.state import LoopState, restore
from dqnfast.training.stop import GracefulStop

__all__ = ["objective", "train"]

log = logging.getLogger("dqnfast.train")


def objective(summary: Mapping[str, Any]) -> float:
    """What a sweep optimizes: the final evaluation's mean score, else the last training score."""
    mean = (summary.get("eval") or {}).get("mean")
    if isinstance(mean, (int, float)) and math.isfinite(mean):
        return float(mean)
    return float(summary.get("score_mean", math.nan))


def _set_up_process(cfg: Config, r: Resolved, plan: ResumePlan) -> None:
    """Seeds a fresh run's global RNGs (a resumed run restores them later), picks the GPU, sizes torch's threads."""
    import torch

    if not plan.ck:
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
    if r.device.type == "cuda" and r.device.index is not None:
        torch.cuda.set_device(r.device)  # streams, events and graphs default to the current device
    if r.torch_threads:
        torch.set_num_threads(r.torch_threads)


def _loop_state(run: Run) -> LoopState:
    """A fresh loop state, or the checkpoint's (networks, optimizer, counters, RNGs) restored into the run."""
    lg, a, plan = run.cfg.logger, run.cfg.algo, run.plan
    st = LoopState(
        run.spec.num_envs,
        lg.score_window,
        resumes=plan.resumes,
        next_log=lg.log_every,
        next_ckpt=lg.checkpoint_every or math.inf,
    )
    if not plan.ck:
        return st
    try:
        run.learner.load_state_dict(plan.ck)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConfigError(
            "resume", f"the checkpoint's weights do not fit this network ({' '.join(str(e).split())[:200]})"
        ) from None
    restore(run, st, plan.ck, envs_too=plan.replay_envs, ring_too=run.replay_file is not None)
    if run.replay_file is None:
        st.refill_left = a.learning_starts
    log.info(
        "resume %s from %s at %d agent steps (%d updates, %d games, eps %.4f); resume #%d",
        run.name,
        plan.ck.get("_path", "the checkpoint"),
        st.env_steps,
        run.learner.num_updates,
        st.episodes,
        st.epsilon,
        plan.resumes,
    )
    if run.replay_file is not None:
        log.info("replay: reloaded %s (%d stored steps, sampler state restored)", run.replay_file.name, len(run.ring))
    else:
        saved = (plan.ck.get("replay") or {}).get("file")
        log.info(
            "replay: %s, so the ring starts empty and is refilled with algo.learning_starts=%d "
            "agent steps of the agent's epsilon-greedy policy at eps %.4g before learning resumes "
            "(not counted in env_steps)",
            "not saved with the checkpoint" if not saved else "replay.save=false",
            a.learning_starts,
            st.epsilon,
        )
    return st


def open_loggers(run: Run, st: LoopState, tracking: Mapping[str, Any] | None) -> Any:
    """Console, metrics.csv (kept up to the checkpoint on resume), W&B / TensorBoard if asked.

    run: anything with run_dir, name, spec.task_id, config_dict, cfg and plan (DQN's Run,
    REINFORCE's run), so both learners log the same way.
    """
    from dqnfast.loggers import RunInfo, RunLoggers

    tracking = dict(tracking or {})
    extra = {"hydra": tracking["hydra"]} if tracking.get("hydra") else {}
    info = RunInfo(
        run.run_dir,
        run.name,
        game=run.spec.task_id,
        config={**run.config_dict, **extra},
        group=tracking.get("group"),
        tags=[run.cfg.exp_name, *tracking.get("tags", ())],
        resume=bool(run.plan.ck),
    )
    return RunLoggers(
        run.cfg.logger, info, total_steps=run.cfg.algo.total_steps, start_step=st.env_steps, desc=run.spec.task_id
    )


@contextmanager
def _failed_run_closes(loggers: Any) -> Iterator[None]:
    """On an error the loggers close with the run's exit code (W&B marks it failed; 130: interrupted)."""
    try:
        yield
    except BaseException as e:
        loggers.close(exit_code=130 if isinstance(e, KeyboardInterrupt) else 1)
        raise


def train(
    cfg: Config,
    run_dir: str | os.PathLike,
    *,
    config_dict: dict | None = None,
    resume: str | os.PathLike | dict | None = None,
    tracking: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs one training run into ``run_dir``; returns a summary dict.

    cfg: a validated Config (dataclasses). config_dict: the config as saved in the
    checkpoint (default: ``dataclasses.asdict(cfg)``). tracking: what the loggers get
    besides the config: ``group`` and ``tags`` (W&B) and ``hydra`` (a dict added to the
    W&B run config). resume: a checkpoint (path or loaded dict) to continue from (see
    ``dqnfast.training.resume``). Raises ConfigError("resume", ...) for a checkpoint of
    another game, observation type, action count or network.

    The summary holds run_name, env_steps, updates, episodes, train_time, score_mean
    (the last ``logger.score_window`` training games), eval (see
    ``dqnfast.evaluation``; None when interrupted), interrupted (None, or the signal's
    name: SIGINT/SIGTERM wrote a checkpoint and stopped the run early), metrics, checkpoint.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.tmp*"):  # left by a run killed mid-write (the real files are intact)
        stale.unlink(missing_ok=True)
    check_config(cfg)
    config_dict = plain(config_dict if config_dict is not None else dataclasses.asdict(cfg))
    plan = plan_resume(cfg, resume)
    r = resolve(cfg)
    _set_up_process(cfg, r, plan)
    with ExitStack() as stack:
        run = build(cfg, r, plan, run_dir, config_dict, stack)
        st = _loop_state(run)
        s = run.spec
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
        if r.device.type == "cpu" and s.obs_kind == "pixels":
            log.info(cpu_note(cfg.algo.total_steps, cfg.algo.learning_starts, cfg.algo.replay_ratio))
        log.info("run dir %s", run_dir)
        log.info(
            "threads: %d core(s) here: envpool %d, sampler %d, torch %s",
            r.cores,
            r.env_threads,
            r.sampler_threads,
            r.torch_threads or "default",
        )
        loggers = open_loggers(run, st, tracking)
        stack.enter_context(_failed_run_closes(loggers))
        stack.callback(loggers.console.close)  # the bar ends with the loop; the others get the evaluation
        stop = stack.enter_context(GracefulStop())
        st.started()
        run_loop(run, st, loggers, stop)
    summary = {
        "run_name": run.name,
        "env_steps": st.env_steps,
        "updates": run.learner.num_updates,
        "episodes": st.episodes,
        "train_time": time.perf_counter() - st.start,
        "score_mean": st.score_mean(),
        "eval": None,
        "interrupted": stop.name or None,
        "metrics": str(run_dir / "metrics.csv"),
        "checkpoint": str(run_dir / "checkpoint.pt"),
    }
    if stop.signum:
        loggers.close(exit_code=128 + stop.signum)
        return summary
    with _failed_run_closes(loggers):
        try:
            summary["eval"] = _final_evaluation(run, st, loggers, summary)
        except Exception as e:
            # The training is done and its checkpoint complete: say so, and how to evaluate it.
            later = (
                f"the checkpoint {summary['checkpoint']} is complete; evaluate it later with: "
                f"python -m dqnfast.evaluate run={run_dir}"
            )
            if isinstance(e, EnvCreationError):
                raise EnvCreationError(f"final evaluation: {e}; {later}") from e
            log.error("final evaluation failed: %s", later)
            raise
    loggers.close()
    return summary


def _final_evaluation(run: Run, st: LoopState, loggers: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """Logs the training summary, evaluates (trained vs random), writes eval.json and the plots, tells the loggers."""
    from dqnfast.evaluate import final_evaluation
    from dqnfast.loggers import eval_media

    spec, env_steps, train_time = run.spec, st.env_steps, summary["train_time"]
    trained_steps = env_steps - run.plan.counters.get("env_steps", 0)
    log.info(
        "run total: %d agent steps (%d frames), %d updates, %d games; this %s: %d agent steps in %.1f s "
        "(%.0f steps/s); last %d games: mean score %.2f",
        env_steps,
        env_steps * spec.frame_skip,
        run.learner.num_updates,
        st.episodes,
        "segment" if run.plan.counters.get("env_steps") else "run",
        trained_steps,
        train_time,
        trained_steps / max(train_time, 1e-9),
        len(st.scores),
        st.score_mean(),
    )
    ckpt_path = Path(summary["checkpoint"])
    result = final_evaluation(
        run.cfg,
        run.learner.online,
        run.device,
        run.run_dir,
        task_id=spec.task_id,
        run_name=run.name,
        env_steps=env_steps,
        frame_skip=spec.frame_skip,
        updates=run.learner.num_updates,
        checkpoint=ckpt_path,
    )
    rnd = result.get("random") or {}
    log.info(
        "evaluation: %d games, epsilon %.3f: mean score %.2f, median %.2f (random agent: %.2f)",
        len(result["scores"]),
        result["epsilon"],
        result["mean"],
        result["median"],
        rnd.get("mean", math.nan),
    )
    loggers.log_eval(result, step=env_steps, media=eval_media(run.run_dir))
    mean = result.get("mean")
    meta = {
        "run_name": run.name,
        **({"eval_mean": mean} if isinstance(mean, (int, float)) and math.isfinite(mean) else {}),
    }
    loggers.log_checkpoint(ckpt_path, step=env_steps, metadata=meta)
    return result
