"""A sweep job that finds its own run in its folder continues it, or skips it once it is finished.

Every job of a sweep (``-m``) writes into its own folder, ``<sweep dir>/<job number>``. When
the same sweep runs again into the same ``hydra.sweep.dir`` (the command run again after a
stop, or a job that its scheduler requeued: submitit on SLURM), each job looks at its folder
before it trains (``continue_job``):

- no checkpoint there: the job starts (as before; ``train`` still refuses a folder that holds
  other results, such as a metrics.csv without a checkpoint);
- a checkpoint of this job's own config whose training or final evaluation is not done: the
  job continues from it, as ``resume=<folder>`` would, and says so in one line (also a job
  that failed before: it gets another try from its last checkpoint);
- a finished run of this job's own config (the checkpoint's steps done and its eval.json
  written): the job is skipped, with one line giving its final evaluation, and returns that
  evaluation's mean score to the sweeper; nothing in the folder is written;
- a run of another config: the job is refused in one line naming the keys that differ.

"Its own config": every key equal to the checkpoint's, except those that say how and where
the job runs, not what it learns (``RUN_KEYS``: threads, device, memory checks, logging).
Those are applied as a resume applies its command line's overrides. A single run (no
``-m``) is unchanged: a folder that holds a run is refused unless ``resume=`` names it.

After a signal, once the job's checkpoint is written, a job that submitit runs hands the
signal over to submitit's own handler for it (``hand_over_signal``): for SIGUSR2 (the time
limit is near, or the job is preempted) submitit requeues the job, and the requeued job
continues from the checkpoint by the rules above.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dqnfast.checkpoint import CheckpointError, find_checkpoint
from dqnfast.cli.overrides import plain_value
from dqnfast.config import Config, ConfigError
from dqnfast.config.schema import plain
from dqnfast.failure import read_failure
from dqnfast.loggers import flatten
from dqnfast.training import objective
from dqnfast.training.resume import evaluation_pending, training_done

__all__ = ["RUN_KEYS", "check_job_folder", "config_changes", "continue_job", "hand_over_signal"]

log = logging.getLogger("dqnfast.train")

# Keys that say how and where a run executes, not what it learns: a job whose checkpoint differs
# from its config only in these is still the same job. The thread counts are among them because
# a job given a share of a machine records the counts it was given (``share_cores``). A key
# ending in "." stands for its whole section.
RUN_KEYS = (
    "resume",
    "device",
    "torch_threads",
    "envs.num_threads",
    "replay.num_threads",
    "replay.pin_memory",
    "replay.check_memory",
    "logger.",
)

_ABSENT = object()


def _is_run_key(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RUN_KEYS)


def config_changes(saved: dict, now: dict) -> list[str]:
    """``["optim.lr: 0.001 -> 0.0003", ...]``: the keys outside ``RUN_KEYS`` where two plain configs differ."""
    a, b = flatten(saved), flatten(now)
    changes = []
    for key in sorted(set(a) | set(b)):
        was, is_ = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if _is_run_key(key) or _same(was, is_):
            continue
        changes.append(f"{key}: {_show(was)} -> {_show(is_)}")
    return changes


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b) or (_number(a) and _number(b) and a == b)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _show(x: Any) -> str:
    return "(absent)" if x is _ABSENT else repr(x)


def _job_label() -> str:
    try:
        return f"sweep job {HydraConfig.get().job.num}"
    except ValueError:  # outside a Hydra job
        return "sweep job"


def _sweep_dir(run_dir: Path) -> Path:
    try:
        return Path(str(HydraConfig.get().sweep.dir))
    except ValueError:  # outside a Hydra job: a job's folder is <sweep dir>/<job number>
        return run_dir.parent


def continue_job(cfg: DictConfig, conf: Config, run_dir: str | os.PathLike) -> tuple[Config, float | None]:
    """What a sweep job does with its folder: (config, None) to train, (config, objective) when finished.

    cfg: the job's config as Hydra composed it; conf: the same, typed (its ``resume`` unset).
    Returns ``conf`` with ``resume`` set to the folder's checkpoint when the job continues its
    own run; unchanged when the folder holds no checkpoint. For a finished run of this config,
    returns its objective (the final evaluation's mean score) after one line that says so.
    Raises ConfigError (one line) for a checkpoint of another config or one that cannot be read.
    """
    run_dir = Path(run_dir)
    found = _own_checkpoint(cfg, run_dir)
    if found is None:
        return conf, None
    path, ck = found
    job = _job_label()
    steps = int(ck["counters"]["env_steps"])
    done = training_done(ck, conf)
    if done and not evaluation_pending(ck, run_dir):
        result = json.loads((run_dir / "eval.json").read_text())
        log.info("%s: finished already in %s (%s); skipped, nothing rerun", job, run_dir, _summary(result, steps))
        return conf, _objective(result, ck)
    conf.resume = str(path)
    failure = read_failure(run_dir)
    left = "its final evaluation is left" if done else f"{steps} of {conf.algo.total_steps} agent steps done"
    log.info(
        "%s: continuing its own run in %s from %s (%s)%s",
        job,
        run_dir,
        path.name,
        left,
        f"; it failed before: {failure['error']}" if failure else "",
    )
    return conf, None


def _own_checkpoint(cfg: DictConfig, run_dir: Path) -> tuple[Path, dict] | None:
    """The checkpoint in a job's folder (its path and contents) when it is of the job's config; None: none there.

    Raises ConfigError (one line) for a checkpoint of another config, or one that cannot be read.
    """
    from dqnfast.checkpoint import load_checkpoint  # looked up at each call: tests replace it on its module

    if not ((run_dir / "checkpoint.pt").is_file() or (run_dir / "checkpoints").is_dir()):
        return None  # looked at without importing torch: the sweep's first run has nothing to load

    try:
        path = find_checkpoint(run_dir)
    except CheckpointError:
        return None
    todo = f"choose another hydra.sweep.dir for this sweep, or continue that run alone with resume={run_dir}"
    try:
        ck = load_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError(
            "hydra.sweep.dir", f"{run_dir} holds a checkpoint that cannot be read ({e}); {todo}"
        ) from None
    now = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    changes = config_changes(plain(dict(ck.get("config") or {})), now)
    if changes:
        shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
        raise ConfigError(
            "hydra.sweep.dir", f"{run_dir} holds a run of another config ({shown}), not this job's; {todo}"
        )
    return path, ck


def check_job_folder(argv: list[str], num: int, cfg: DictConfig) -> None:
    """Before a sweep is launched: refuses job ``num`` when its folder in the sweep dir holds a run of another config.

    argv: the sweep's command line; cfg: job ``num``'s composed config. Only a sweep dir
    given on the command line (``hydra.sweep.dir=...``, with the default job folders) can
    hold earlier runs: the default one is new for every command. Checked before Hydra
    writes into any job folder (its ``.hydra/`` record among them), so a refused sweep
    leaves every folder as it was. Raises ConfigError (one line) as ``continue_job`` does.
    """
    given = [a for a in argv if a.startswith(("hydra.sweep.dir=", "hydra.sweep.subdir="))]
    if not given or any(a.startswith("hydra.sweep.subdir=") for a in given):
        return
    sweep_dir = plain_value(given[-1])
    if sweep_dir is None or "${" in sweep_dir:
        return
    _own_checkpoint(cfg, Path(sweep_dir).expanduser() / str(num))


def _summary(result: dict, steps: int) -> str:
    """``CartPole-v1, 2000 agent steps; final evaluation: mean score 44.50 over 2 games (random agent 20.50)``."""
    n = len(result.get("scores") or [])
    rnd = (result.get("random") or {}).get("mean")
    line = f"{result.get('game', '?')}, {steps} agent steps; final evaluation: mean score {_num(result.get('mean'))} over {n} games"
    return line + (f" (random agent {_num(rnd)})" if rnd is not None else "")


def _num(x: Any) -> str:
    return f"{x:.2f}" if _number(x) else str(x)


def _objective(result: dict, ck: dict) -> float:
    """A finished job's objective, as its run returned it: the final evaluation's mean, else the last training score."""
    scores = [float(x) for x in (ck.get("loop") or {}).get("scores", [])]
    return objective({"eval": result, "score_mean": sum(scores) / len(scores) if scores else math.nan})


def hand_over_signal(signal_name: str, run_dir: str | os.PathLike) -> str | None:
    """A sweep job stopped by a signal, its checkpoint written: the job's scheduler gets the signal now.

    Where submitit runs the job, its own handler of that signal (installed before the job
    started, put back when the run ended) is called: for SIGUSR2 it requeues the job and ends
    the process; for SIGTERM it only logs. Returns None when the caller should exit as a
    stopped run does (no scheduler handler, or one that returned), or the one-line error when
    submitit did not requeue the job (it timed out too often): the caller records it as a
    failed job, whose checkpoint a later run of the sweep continues.
    """
    signum = signal.Signals[signal_name]
    handler = signal.getsignal(signum)
    owner = getattr(handler, "__self__", None)
    if owner is None or not type(owner).__module__.startswith("submitit."):
        log.warning(
            "%s: stopped by %s; run the same sweep command with hydra.sweep.dir=%s to continue it "
            "(finished jobs are skipped)",
            _job_label(),
            signal_name,
            _sweep_dir(Path(run_dir)),
        )
        return None
    log.info("%s: checkpoint written; submitit's handler of %s takes over", _job_label(), signal_name)
    try:
        handler(signum, None)
    except Exception as e:  # submitit: "Job not requeued because: timed-out too many times."
        why = " ".join(str(e).split())
        return (
            f"stopped by {signal_name} and not requeued ({why}); its checkpoint stays: run the sweep again "
            f"with hydra.sweep.dir={_sweep_dir(Path(run_dir))} to continue it"
        )
    return None
