"""One training run, the same for every learner: lock, resume plan, seeding, loggers, signals, the loop's
metric rows and checkpoints, the summary, the final evaluation. No Hydra here (``dqnfast.cli.train``).

    train(cfg, run_dir)
      check_config (unless the caller did) -> plan_resume -> claim run_dir (locked until the run ends)
      -> resolve -> the final evaluation only (a run whose steps are done), or:
      seed -> build -> loop state (fresh, or the checkpoint's) -> start-up lines -> loggers -> signals
      -> start -> step, step, ... (each followed by the metric row and checkpoint due: ``marks``)
      -> the end of the training (``end_training``) -> summary -> final evaluation, or the stop line

A learner plugs in with a ``Learning``: its parts (``build``), what its checkpoint restores
besides the weights (``restore``), its start-up lines, one iteration of its loop (``step``)
and its checkpoint (``save``). ``LEARNERS`` names the one of each ``learner=``: DQN's in
``training.dqn`` (its loop in ``training.loop``), REINFORCE's in ``training.reinforce``.

Run outputs (the run dir, locked while the run lasts: ``dqnfast.training.rundir``): ``metrics.csv``,
``checkpoint.pt`` (the newest of ``checkpoints/step_*.pt``, see ``dqnfast.checkpoint``), ``replay_*.npz``
(DQN: ``replay.save``), ``eval.json``, ``eval_scores.png``, ``learning_curve.png``; ``wandb/`` and
``tensorboard/`` with those loggers.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import random
import signal
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

import numpy as np
import torch

from dqnfast.checkpoint import run_dir_of
from dqnfast.config import Config, ConfigError
from dqnfast.config.resolve import Resolved
from dqnfast.config.schema import EnvResume, LearnerName, plain
from dqnfast.envs import EnvCreationError
from dqnfast.evaluation import final_evaluation
from dqnfast.evaluation.agents import load_agent
from dqnfast.loggers import RunInfo, RunLoggers, eval_media
from dqnfast.training.components import check_config
from dqnfast.training.divergence import check_row
from dqnfast.training.resume import ResumePlan, plan_resume, saved_ring
from dqnfast.training.rundir import claim
from dqnfast.training.state import LoopState, next_mark
from dqnfast.training.stop import GracefulStop, StopRequested, reached

__all__ = [
    "LEARNERS",
    "Learning",
    "end_training",
    "envs_restored",
    "learning_for",
    "log_place",
    "marks",
    "objective",
    "train",
]

log = logging.getLogger("dqnfast.train")


class Learning(Protocol):
    """A learner's part of a run; ``run`` below is what its ``build`` returns.

    A run has ``cfg``, ``run_dir``, ``plan`` (the ``ResumePlan``), ``name``, ``spec`` (the
    training envs' ``EnvSpec``), ``device`` and ``learner``: ``online`` (the network the final
    evaluation plays), ``num_updates`` and ``load_state_dict(checkpoint)``.
    """

    epsilon: float  # metrics.csv's epsilon until the loop sets one (nan: the learner explores otherwise)

    def build(
        self, cfg: Config, r: Resolved, plan: ResumePlan, run_dir: Path, config_dict: dict, stack: ExitStack
    ) -> Any:
        """The run's parts (envs made from ``plan.env_seed``), what they open closed by ``stack``; a
        checkpoint that does not fit them is refused here (ConfigError("resume"))."""
        ...

    def restore(self, run: Any, st: LoopState) -> None:
        """Reads the checkpoint (``run.plan.ck``) into ``run`` and ``st``: all but the weights, loaded already."""
        ...

    def log_start(self, run: Any, st: LoopState, r: Resolved) -> None:
        """The start-up lines: what runs where, ending with ``log_place``'s."""
        ...

    def estimate(self, run: Any, r: Resolved) -> tuple[int, float | None]:
        """The console's time estimate: agent steps before learning starts, and the learning speed
        (agent steps/s) expected until it is measured (None: not known)."""
        ...

    def start(self, run: Any, st: LoopState, loggers: Any, stop: GracefulStop) -> None:
        """Before the first step: the envs (an exact resume restores them: ``envs_restored``) and
        whatever the checkpoint owes."""
        ...

    def step(self, run: Any, st: LoopState, loggers: Any, stop: GracefulStop) -> bool:
        """One iteration of the loop (act, store, learn; ``st.env_steps`` counts the agent steps);
        False when a signal stopped it halfway: what is owed goes into the checkpoint."""
        ...

    def value_name(self, run: Any) -> str | None:
        """What metrics.csv's ``q_mean`` holds, for the divergence guard (None: nothing, nan by design)."""
        ...

    def row_columns(self, run: Any) -> dict[str, float]:
        """The metric row's columns this learner fills beyond ``LoopState.row``'s (none: {})."""
        ...

    def save(self, run: Any, st: LoopState) -> Path:
        """Writes the checkpoint at ``st``; raises TrainingDiverged (nothing written) for a network that blew up."""
        ...


# learner= -> the module and class of its Learning, imported when a run asks for it
LEARNERS = {
    LearnerName.dqn: ("dqnfast.training.dqn", "DQN"),
    LearnerName.reinforce: ("dqnfast.training.reinforce", "Reinforce"),
}


def learning_for(cfg: Config) -> Learning:
    """The ``Learning`` of ``cfg.learner``."""
    where, name = LEARNERS[LearnerName.of(cfg.learner)]
    return getattr(importlib.import_module(where), name)()


def objective(summary: Mapping[str, Any]) -> float:
    """What a sweep optimizes: the final evaluation's mean score, else the last training score."""
    mean = (summary.get("eval") or {}).get("mean")
    if isinstance(mean, (int, float)) and math.isfinite(mean):
        return float(mean)
    return float(summary.get("score_mean", math.nan))


def train(
    cfg: Config,
    run_dir: str | os.PathLike,
    *,
    config_dict: dict | None = None,
    resume: str | os.PathLike | dict | None = None,
    tracking: Mapping[str, Any] | None = None,
    checked: Resolved | None = None,
) -> dict[str, Any]:
    """Runs one training run of ``cfg.learner`` into ``run_dir``; returns a summary dict.

    cfg: a Config (dataclasses), checked here (``check_config``) unless ``checked`` is what
    ``check_config`` returned for this very Config: its resolved settings, so a run is
    validated and resolved once (the CLI checks before Hydra writes). config_dict: the
    config as saved in the checkpoint (default: ``dataclasses.asdict(cfg)``). tracking: what
    the loggers get besides the config: ``group`` and ``tags`` (W&B) and ``hydra`` (a dict
    added to the W&B run config). resume: a checkpoint (a run dir or file, or a loaded dict,
    which is not read again; see ``dqnfast.training.resume``) to continue from. A checkpoint
    of another run dir forks that run into ``run_dir`` (``dqnfast.training.rundir``); a
    loaded dict without its ``_path`` is taken as a checkpoint of ``run_dir``. A run whose
    steps are done but whose final evaluation is not runs that evaluation only.

    ``run_dir`` is locked for the whole run (``dqnfast.training.rundir``). Raises
    ConfigError("resume", ...) for a checkpoint of another learner, game, observation type,
    action count or network, or of a finished run; ConfigError for a run dir that another
    process holds or that holds another run.

    The summary holds run_name, env_steps, updates, episodes, train_time, score_mean
    (the last ``logger.score_window`` training games), eval (see
    ``dqnfast.evaluation``; None when interrupted), interrupted (None, or the signal's
    name: SIGINT/SIGTERM stopped the run early), stopped_in (``training``: a checkpoint
    was written, resume continues the training; ``evaluation``: the training is complete,
    resume runs the final evaluation), metrics, checkpoint.
    """
    run_dir = Path(run_dir)
    r = checked if checked is not None else check_config(cfg)
    learning = learning_for(cfg)
    config_dict = plain(config_dict if config_dict is not None else dataclasses.asdict(cfg))
    plan = plan_resume(cfg, resume, run_dir)
    with claim(run_dir, source=plan.source, ck=plan.ck, replay=_fork_carries_ring(cfg, plan)):
        if plan.eval_only:  # stopped between its last step and the end of its final evaluation
            return evaluate_only(cfg, r, plan, run_dir, config_dict, tracking)
        _set_up_process(cfg, r, plan)
        return _train(learning, cfg, r, plan, run_dir, config_dict, tracking)


def _fork_carries_ring(cfg: Config, plan: ResumePlan) -> bool:
    """Whether a fork of ``plan``'s checkpoint carries its ring file: the one its resume reloads
    (``saved_ring``; a checkpoint without a ring has none). A ring saved while filling comes
    along when it is there; without it the fork refills (a ring asked for with ``replay.save``
    must be there: the fork is refused)."""
    ring = saved_ring(plan.ck, cfg) if plan.ck and not plan.eval_only else None
    if ring is None:
        return False
    return cfg.replay.save or (plan.source is not None and (run_dir_of(plan.source) / ring).is_file())


def _set_up_process(cfg: Config, r: Resolved, plan: ResumePlan) -> None:
    """Seeds a fresh run's global RNGs (a resumed run restores them later), picks the GPU, sizes torch's threads."""
    if not plan.ck:
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
    if r.device.type == "cuda" and r.device.index is not None:
        torch.cuda.set_device(r.device)  # streams, events and graphs default to the current device
    if r.torch_threads:
        torch.set_num_threads(r.torch_threads)


def _train(
    learning: Learning,
    cfg: Config,
    r: Resolved,
    plan: ResumePlan,
    run_dir: Path,
    config_dict: dict,
    tracking: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Builds the run, trains it, evaluates it.

    The signal handlers are installed from the loop's start to the evaluation's end: a
    signal in training checkpoints and stops; one after the training stops the evaluation.
    """
    stop = GracefulStop(install=False)
    try:
        with ExitStack() as stack:
            run = learning.build(cfg, r, plan, run_dir, config_dict, stack)
            st = _loop_state(learning, run)
            learning.log_start(run, st, r)
            learning_starts, learning_sps = learning.estimate(run, r)
            loggers = open_loggers(
                cfg,
                run_dir,
                run.name,
                run.spec.task_id,
                config_dict,
                tracking,
                resume=bool(plan.ck),
                start_step=st.env_steps,
                learning_starts=learning_starts,
                learning_sps=learning_sps,
            )
            stack.enter_context(failed_run_closes(loggers))
            stack.callback(loggers.console.close)  # the bar ends with the loop; the others get the evaluation
            stop.install()
            st.started()
            trained = _loop(learning, run, st, loggers, stop)
        summary = _summary(
            run_dir,
            run.name,
            st.env_steps,
            run.learner.num_updates,
            st.episodes,
            time.perf_counter() - st.start,
            st.score_mean(),
        )
        if not trained:
            return stopped(summary, loggers, stop.signum, "training", run_dir)

        def totals() -> None:
            log_totals(run.spec.frame_skip, summary, st.scores, segment=plan.counters.get("env_steps", 0))

        return evaluate_and_close(
            cfg, run.learner.online, run.device, run_dir, run.spec, loggers, summary, stop, totals
        )
    finally:
        stop.restore()


def _loop_state(learning: Learning, run: Any) -> LoopState:
    """A fresh loop state, or the checkpoint's (weights, optimizer, counters, RNGs) restored into the run."""
    lg, plan = run.cfg.logger, run.plan
    st = LoopState(
        run.spec.num_envs,
        lg.score_window,
        resumes=plan.resumes,
        next_log=lg.log_every,
        next_ckpt=lg.checkpoint_every or math.inf,
        epsilon=learning.epsilon,
    )
    if not plan.ck:
        return st
    try:
        run.learner.load_state_dict(plan.ck)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConfigError(
            "resume", f"the checkpoint's weights do not fit this network ({' '.join(str(e).split())[:200]})"
        ) from None
    learning.restore(run, st)
    log.info(
        "resume %s from %s at %d agent steps (%d updates, %d games%s); resume #%d",
        run.name,
        plan.ck.get("_path", "the checkpoint"),
        st.env_steps,
        run.learner.num_updates,
        st.episodes,
        f", eps {st.epsilon:.4f}" if math.isfinite(st.epsilon) else "",
        plan.resumes,
    )
    return st


# ------------------------------------------------------------------ the loop
def _loop(learning: Learning, run: Any, st: LoopState, loggers: Any, stop: GracefulStop) -> bool:
    """Trains until ``algo.total_steps`` agent steps or a signal; leaves the last checkpoint written.

    Returns ``end_training``'s answer. A step that counts no agent step (DQN's refill) meets
    no mark: every mark lies beyond the steps counted when it is set.
    """
    learning.start(run, st, loggers, stop)
    while st.env_steps < run.cfg.algo.total_steps and not stop.signum:
        if not learning.step(run, st, loggers, stop):
            break  # stopped halfway: the rest of the step, its row and checkpoint are owed to the resume
        marks(learning, run, st, loggers)
    return end_training(learning, run, st, loggers, stop)


def marks(learning: Learning, run: Any, st: LoopState, loggers: Any) -> None:
    """The metric row and the checkpoint that are due at ``st.env_steps``."""
    lg = run.cfg.logger
    if st.env_steps >= st.next_log:
        log_row(learning, run, st, loggers)
        st.next_log = next_mark(st.env_steps, st.next_log, lg.log_every)
    if st.env_steps >= st.next_ckpt:
        checkpoint(learning, run, st)
        st.next_ckpt = next_mark(st.env_steps, st.next_ckpt, lg.checkpoint_every)


def end_training(learning: Learning, run: Any, st: LoopState, loggers: Any, stop: GracefulStop) -> bool:
    """The last checkpoint of the loop: True when the training is complete, False when a signal stopped it.

    A signal in the last step, after its updates, still gets the final row and checkpoint.
    Updates owed (a signal inside DQN's last update burst) keep the training incomplete.
    """
    if stop.signum and (st.env_steps < run.cfg.algo.total_steps or st.update_budget >= 1.0):
        # no metrics row here: the partial sums go into the checkpoint, so a resumed
        # run writes exactly the rows an uninterrupted one would
        checkpoint(learning, run, st)  # the caller says where it is, in the run's one line about the signal
        return False
    if st.n_metrics or st.last_steps != st.env_steps:
        log_row(learning, run, st, loggers)
    elif st.saved_at == st.env_steps:
        return True  # the periodic checkpoint of this last step holds the same state: it is the final one
    checkpoint(learning, run, st)  # the final one, still under the signal handler: a Ctrl-C cannot cut it in half
    return True


def checkpoint(learning: Learning, run: Any, st: LoopState) -> Path:
    """The learner's checkpoint at ``st``; ``st.saved_at`` records its step."""
    path = learning.save(run, st)
    st.saved_at = st.env_steps
    return path


def log_row(learning: Learning, run: Any, st: LoopState, loggers: Any) -> None:
    """Writes a metric row; raises TrainingDiverged (after writing it) when its loss, or the mean of the
    learner's ``value_name``, is not finite or beyond ``Q_LIMIT`` (``divergence.check_row``)."""
    n, since = st.n_metrics, st.last_steps
    row = st.row(frame_skip=run.spec.frame_skip, updates=run.learner.num_updates)
    row.update(learning.row_columns(run))
    loggers.log_metrics(row)
    check_row(run, st.env_steps, row, n, since, value=learning.value_name(run))


def envs_restored(plan: ResumePlan, replay: Callable[[], str], *, missing: str, dropped: str = "") -> None:
    """A resumed run's envs, in one line: restored exactly by ``replay`` (``envs.resume=replay`` with
    what the checkpoint recorded; it returns what it replayed, in words), else re-created from
    ``plan.env_seed``. missing: what the checkpoint lacks when replay was asked for; dropped:
    what a re-created env loses, in words."""
    if plan.replay_envs:
        t0 = time.perf_counter()
        what = replay()
        log.info("envs: restored by replaying %s from seed %d in %.2f s", what, plan.env_seed, time.perf_counter() - t0)
    elif plan.ck:
        log.info(
            "envs: re-created with seed %d (envs.resume=%s%s)%s",
            plan.env_seed,
            plan.env_mode,
            "" if plan.env_mode == EnvResume.reseed else f", but the checkpoint has no {missing}",
            f"; {dropped}" if dropped else "",
        )


# ------------------------------------------------------------------ loggers
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

    Every learner and an evaluation-only resume log through it the same way.
    learning_starts, learning_sps: the phases of the console's time estimate (``Learning.estimate``).
    """
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


# ------------------------------------------------------------------ the end
def _summary(
    run_dir: Path, name: str, env_steps: int, updates: int, episodes: int, train_time: float, score_mean: float
) -> dict[str, Any]:
    """``train``'s summary before the final evaluation (eval None) or a signal (interrupted None)."""
    return {
        "run_name": name,
        "env_steps": env_steps,
        "updates": updates,
        "episodes": episodes,
        "train_time": train_time,
        "score_mean": score_mean,
        "eval": None,
        "interrupted": None,
        "stopped_in": None,
        "metrics": str(run_dir / "metrics.csv"),
        "checkpoint": str(run_dir / "checkpoint.pt"),
    }


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
    env_steps = summary["env_steps"]
    ckpt_path = Path(summary["checkpoint"])
    result = final_evaluation(
        cfg,
        network,
        device,
        run_dir,
        task_id=spec.task_id,
        task=(spec.task_id, spec.family),  # resolved already: the evaluation makes its envs from it
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


def evaluate_only(
    cfg: Config, r: Resolved, plan: ResumePlan, run_dir: Path, config_dict: dict, tracking: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A run whose steps are done but whose final evaluation is not: loads the online network and evaluates it.

    Any learner's (DQN's Q-network, REINFORCE's policy). Nothing of the training is built
    (no training envs, no ring) and no checkpoint is written.
    """
    ck, counters = plan.ck, plan.counters
    task_id = r.task_id
    if task_id != ck.get("game"):
        raise ConfigError("resume", f"checkpoint is for {ck.get('game')}, this run is {task_id}")
    try:
        net = load_agent(ck, game=task_id, envs=cfg.envs, protocol=cfg.envs.eval, task=r.game).network
    except ConfigError as e:
        raise ConfigError("resume", e.message) from None
    net.to(r.device).eval()
    if r.torch_threads:
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
    summary = _summary(
        run_dir,
        plan.name,
        env_steps,
        int(counters["updates"]),
        int(counters["episodes"]),
        float(loop.get("time", 0.0)),
        float(np.mean(scores)) if scores else math.nan,
    )
    spec = _EvalSpec(task_id, r.family, cfg.envs.frame_skip if r.family == "atari" else 1)
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
    family: str
    frame_skip: int
