"""One training run: set up, loop, final evaluation. No Hydra here (``dqnfast.cli.train`` is the CLI).

Run outputs (the run dir, locked while the run lasts: ``dqnfast.training.rundir``): ``metrics.csv``, ``checkpoint.pt`` (the newest of
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
import signal
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from dqnfast.config import Config, ConfigError
from dqnfast.config.resolve import Resolved, resolve
from dqnfast.config.schema import plain
from dqnfast.envs import EnvCreationError
from dqnfast.training.components import Run, build, check_config
from dqnfast.training.expectations import cpu_learning_sps, cpu_note
from dqnfast.training.loop import run_loop
from dqnfast.training.resume import ResumePlan, plan_resume, refill_steps, saved_ring
from dqnfast.training.rundir import claim
from dqnfast.training.state import LoopState, restore
from dqnfast.training.stop import GracefulStop, StopRequested, reached

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
        st.refill_left = refill_steps(run.cfg, st.env_steps)
    st.refill_total = st.refill_left
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
    then = "learning resumes" if st.env_steps >= a.learning_starts else "the warm-up goes on"
    if run.replay_file is not None:
        log.info(
            "replay: reloaded %s (%d stored steps, sampler state restored)%s",
            run.replay_file.name,
            len(run.ring),
            f"; its refill goes on: {st.refill_left} agent steps left before {then}" if st.refill_left else "",
        )
    else:
        saved = (plan.ck.get("replay") or {}).get("file")
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
    return st


def open_loggers(
    cfg: Config,
    run_dir: Path,
    name: str,
    task_id: str,
    config_dict: dict,
    tracking: Mapping[str, Any] | None,
    *,
    resume: bool,
    start_step: int,
    learning_starts: int = 0,
    learning_sps: float | None = None,
) -> Any:
    """Console, metrics.csv (kept up to the checkpoint on resume), W&B / TensorBoard if asked.

    Both learners (DQN, REINFORCE) and an evaluation-only resume log through it the same way.
    learning_starts, learning_sps: the phases of the console's time estimate (DQN's random
    warm-up; the learning speed expected until it is measured, None: not known).
    """
    from dqnfast.loggers import RunInfo, RunLoggers

    tracking = dict(tracking or {})
    extra = {"hydra": tracking["hydra"]} if tracking.get("hydra") else {}
    info = RunInfo(
        run_dir,
        name,
        game=task_id,
        config={**config_dict, **extra},
        group=tracking.get("group"),
        tags=[cfg.exp_name, *tracking.get("tags", ())],
        resume=resume,
    )
    loggers = RunLoggers(
        cfg.logger,
        info,
        total_steps=cfg.algo.total_steps,
        start_step=start_step,
        desc=task_id,
        learning_starts=learning_starts,
        learning_sps=learning_sps,
    )
    try:
        reached("loggers")
    except StopRequested as e:  # a signal before the caller holds the loggers: close them here
        loggers.close(exit_code=128 + e.signum)
        raise
    return loggers


@contextmanager
def failed_run_closes(loggers: Any) -> Iterator[None]:
    """On an error the loggers close with the run's exit code (W&B marks it failed; 128 + N: signal N)."""
    try:
        yield
    except BaseException as e:
        if isinstance(e, StopRequested):
            loggers.close(exit_code=128 + e.signum)
        else:
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
    W&B run config). resume: a checkpoint (a run dir or file, or a loaded dict; see
    ``dqnfast.training.resume``) to continue from. A checkpoint of another run dir forks
    that run into ``run_dir`` (``dqnfast.training.rundir``); a loaded dict without its
    ``_path`` is taken as a checkpoint of ``run_dir``. A run whose steps are done but whose
    final evaluation is not runs that evaluation only.

    ``run_dir`` is locked for the whole run (``dqnfast.training.rundir``). Raises
    ConfigError("resume", ...) for a checkpoint of another game, observation type, action
    count or network, or of a finished run; ConfigError for a run dir that another process
    holds or that holds another run.

    The summary holds run_name, env_steps, updates, episodes, train_time, score_mean
    (the last ``logger.score_window`` training games), eval (see
    ``dqnfast.evaluation``; None when interrupted), interrupted (None, or the signal's
    name: SIGINT/SIGTERM stopped the run early), stopped_in (``training``: a checkpoint
    was written, resume continues the training; ``evaluation``: the training is complete,
    resume runs the final evaluation), metrics, checkpoint.
    """
    run_dir = Path(run_dir)
    check_config(cfg)
    config_dict = plain(config_dict if config_dict is not None else dataclasses.asdict(cfg))
    plan = plan_resume(cfg, resume, run_dir)
    with claim(run_dir, source=plan.source, ck=plan.ck, replay=_fork_carries_ring(cfg, plan)):
        r = resolve(cfg)
        if plan.eval_only:
            return evaluate_only(cfg, r, plan, run_dir, config_dict, tracking)
        _set_up_process(cfg, r, plan)
        return _train(cfg, r, plan, run_dir, config_dict, tracking)


def _fork_carries_ring(cfg: Config, plan: ResumePlan) -> bool:
    """Whether a fork of ``plan``'s checkpoint carries its ring file: the one its resume reloads
    (``saved_ring``). A ring saved while filling comes along when it is there; without it the
    fork refills (a ring asked for with ``replay.save`` must be there: the fork is refused)."""
    from dqnfast.checkpoint import run_dir_of

    ring = saved_ring(plan.ck, cfg) if plan.ck and not plan.eval_only else None
    if ring is None:
        return False
    return cfg.replay.save or (plan.source is not None and (run_dir_of(plan.source) / ring).is_file())


def _cpu_pixels(run: Run, r: Resolved) -> bool:
    """A pixel-observation run on CPU: the case ``training.expectations`` has measured speeds for."""
    return r.device.type == "cpu" and run.spec.obs_kind == "pixels"


def _expected_learning_sps(run: Run, r: Resolved) -> float | None:
    """The learning phase's speed the start-up line's estimate rests on (None: no estimate for this run)."""
    return cpu_learning_sps(run.cfg.algo.replay_ratio) if _cpu_pixels(run, r) else None


def _log_start(run: Run, r: Resolved) -> None:
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
    if _cpu_pixels(run, r):
        log.info(cpu_note(cfg.algo.total_steps, cfg.algo.learning_starts, cfg.algo.replay_ratio))
    log_place(run.run_dir, r)


def log_place(run_dir: Path, r: Resolved, *, sampler: bool = True) -> None:
    """The start-up lines every learner prints after its own first one: its run dir and its threads."""
    log.info("run dir %s", run_dir)
    log.info(
        "threads: %d core(s) here: envpool %d%s, torch %s",
        r.cores,
        r.env_threads,
        f", sampler {r.sampler_threads}" if sampler else "",
        r.torch_threads or "default",
    )


def _train(
    cfg: Config, r: Resolved, plan: ResumePlan, run_dir: Path, config_dict: dict, tracking: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Builds the run, trains it, evaluates it.

    The signal handlers are installed from the loop's start to the evaluation's end: a
    signal in training checkpoints and stops; one after the training stops the evaluation.
    """
    stop = GracefulStop(install=False)
    try:
        with ExitStack() as stack:
            run = build(cfg, r, plan, run_dir, config_dict, stack)
            st = _loop_state(run)
            _log_start(run, r)
            loggers = open_loggers(
                cfg,
                run_dir,
                run.name,
                run.spec.task_id,
                run.config_dict,
                tracking,
                resume=bool(plan.ck),
                start_step=st.env_steps,
                learning_starts=cfg.algo.learning_starts,
                learning_sps=_expected_learning_sps(run, r),
            )
            stack.enter_context(failed_run_closes(loggers))
            stack.callback(loggers.console.close)  # the bar ends with the loop; the others get the evaluation
            stop.install()
            st.started()
            trained = run_loop(run, st, loggers, stop)
        summary = {
            "run_name": run.name,
            "env_steps": st.env_steps,
            "updates": run.learner.num_updates,
            "episodes": st.episodes,
            "train_time": time.perf_counter() - st.start,
            "score_mean": st.score_mean(),
            "eval": None,
            "interrupted": None,
            "stopped_in": None,
            "metrics": str(run_dir / "metrics.csv"),
            "checkpoint": str(run_dir / "checkpoint.pt"),
        }
        if not trained:
            return stopped(summary, loggers, stop.signum, "training", run_dir)

        def totals() -> None:
            log_totals(run.spec.frame_skip, summary, st.scores, segment=plan.counters.get("env_steps", 0))

        return evaluate_and_close(
            cfg, run.learner.online, run.device, run_dir, run.spec, loggers, summary, stop, totals
        )
    finally:
        stop.restore()


def evaluate_only(
    cfg: Config, r: Resolved, plan: ResumePlan, run_dir: Path, config_dict: dict, tracking: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A run whose steps are done but whose final evaluation is not: loads the online network and evaluates it.

    Either learner's (DQN's Q-network, REINFORCE's policy). Nothing of the training is built
    (no training envs, no ring) and no checkpoint is written.
    """
    from dqnfast.envs import resolve_game
    from dqnfast.evaluation.agents import load_agent

    ck, counters = plan.ck, plan.counters
    task_id, family = resolve_game(cfg.game)
    if task_id != ck.get("game"):
        raise ConfigError("resume", f"checkpoint is for {ck.get('game')}, this run is {task_id}")
    try:
        net = load_agent(ck, game=task_id, envs=cfg.envs, protocol=cfg.envs.eval).network
    except ConfigError as e:
        raise ConfigError("resume", e.message) from None
    net.to(r.device).eval()
    if r.torch_threads:
        import torch

        torch.set_num_threads(r.torch_threads)
    env_steps = int(counters["env_steps"])
    log.info(
        "resume %s from %s at %d agent steps: the training is complete, its final evaluation is not; "
        "evaluating only (no training, no replay ring, no checkpoint written)",
        plan.name,
        ck.get("_path", "the checkpoint"),
        env_steps,
    )
    loop = ck.get("loop") or {}
    scores = [float(x) for x in loop.get("scores", [])]
    loggers = open_loggers(cfg, run_dir, plan.name, task_id, config_dict, tracking, resume=True, start_step=env_steps)
    summary = {
        "run_name": plan.name,
        "env_steps": env_steps,
        "updates": int(counters["updates"]),
        "episodes": int(counters["episodes"]),
        "train_time": float(loop.get("time", 0.0)),
        "score_mean": float(np.mean(scores)) if scores else math.nan,
        "eval": None,
        "interrupted": None,
        "stopped_in": None,
        "metrics": str(run_dir / "metrics.csv"),
        "checkpoint": str(run_dir / "checkpoint.pt"),
    }
    spec = _EvalSpec(task_id, cfg.envs.frame_skip if family == "atari" else 1)
    loggers.console.close()
    with GracefulStop() as stop:
        return evaluate_and_close(
            cfg,
            net,
            r.device,
            run_dir,
            spec,
            loggers,
            summary,
            stop,
            lambda: log_totals(spec.frame_skip, summary, scores),
        )


@dataclasses.dataclass
class _EvalSpec:
    """What the final evaluation needs of the env spec when no training env was made."""

    task_id: str
    frame_skip: int


def stopped(summary: dict[str, Any], loggers: Any, signum: int, phase: str, run_dir: Path) -> dict[str, Any]:
    """A run stopped by a signal: the summary says where, one log line says what is saved and how to go
    on (the only line about it: ``python -m dqnfast.train`` adds none), the loggers close with 128 + signum."""
    summary.update(interrupted=signal.Signals(signum).name, stopped_in=phase)
    if phase == "evaluation":
        what = (
            f"stopped the final evaluation at {summary['env_steps']} agent steps (no eval.json); the training and "
            f"its checkpoint {summary['checkpoint']} are complete; finish the evaluation with"
        )
    else:
        what = f"stopped at {summary['env_steps']} agent steps; checkpoint {summary['checkpoint']}; continue with"
    log.warning("%s: %s: python -m dqnfast.train resume=%s", summary["interrupted"], what, run_dir)
    loggers.close(exit_code=128 + signum)
    return summary


def log_totals(frame_skip: int, summary: dict[str, Any], scores: Any, *, segment: int | None = None) -> None:
    """The run's totals; with ``segment`` (agent steps when this segment started) its steps and speed too."""
    env_steps = summary["env_steps"]
    totals = (
        f"run total: {env_steps} agent steps ({env_steps * frame_skip} frames), {summary['updates']} updates, "
        f"{summary['episodes']} games"
    )
    if segment is not None:
        trained, train_time = env_steps - segment, summary["train_time"]
        totals += (
            f"; this {'segment' if segment else 'run'}: {trained} agent steps in {train_time:.1f} s "
            f"({trained / max(train_time, 1e-9):.0f} steps/s)"
        )
    log.info("%s; last %d games: mean score %.2f", totals, len(scores), summary["score_mean"])


def evaluate_and_close(
    cfg: Config,
    network: Any,
    device: Any,
    run_dir: Path,
    spec: Any,
    loggers: Any,
    summary: dict[str, Any],
    stop: GracefulStop,
    totals: Callable[[], None],
) -> dict[str, Any]:
    """The final evaluation, then the loggers close; returns the summary.

    From here the checkpoint is complete, so a signal (one that came already, or one during
    the evaluation) stops the evaluation at once: see ``stopped``.
    """
    try:
        with failed_run_closes(loggers):
            stop.raise_from_now()  # a signal that came already stops here
            totals()
            try:
                summary["eval"] = _final_evaluation(cfg, network, device, run_dir, spec, loggers, summary)
            except Exception as e:
                # The training is done and its checkpoint complete: say so, and how to evaluate it.
                later = (
                    f"the checkpoint {summary['checkpoint']} is complete; evaluate it later with: "
                    f"python -m dqnfast.train resume={run_dir} (writes eval.json) or python -m dqnfast.evaluate "
                    f"run={run_dir}"
                )
                if isinstance(e, EnvCreationError):
                    raise EnvCreationError(f"final evaluation: {e}; {later}") from e
                log.error("final evaluation failed: %s", later)
                raise
    except StopRequested as e:
        return stopped(summary, loggers, e.signum, "evaluation", run_dir)
    loggers.close()
    return summary


def _final_evaluation(
    cfg: Config, network: Any, device: Any, run_dir: Path, spec: Any, loggers: Any, summary: dict[str, Any]
) -> dict[str, Any]:
    """Evaluates (trained vs random), writes eval.json and the plots, tells the loggers."""
    from dqnfast.evaluate import final_evaluation
    from dqnfast.loggers import eval_media

    env_steps = summary["env_steps"]
    ckpt_path = Path(summary["checkpoint"])
    result = final_evaluation(
        cfg,
        network,
        device,
        run_dir,
        task_id=spec.task_id,
        run_name=summary["run_name"],
        env_steps=env_steps,
        frame_skip=spec.frame_skip,
        updates=summary["updates"],
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
    loggers.log_eval(result, step=env_steps, media=eval_media(run_dir))
    mean = result.get("mean")
    meta = {
        "run_name": summary["run_name"],
        **({"eval_mean": mean} if isinstance(mean, (int, float)) and math.isfinite(mean) else {}),
    }
    loggers.log_checkpoint(ckpt_path, step=env_steps, metadata=meta)
    return result
