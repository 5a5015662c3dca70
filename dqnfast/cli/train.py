"""``python -m dqnfast.train``: the Hydra command line of a training run.

Composes the config (``conf/``, typed by ``dqnfast.config.Config``), checks overrides
in one line before Hydra runs, merges a resumed run's saved config with this command
line (its checkpoint read and verified once), sizes a multirun job's threads to its share
of the machine, checks the config once and hands it, as plain dataclasses, to
``dqnfast.training.train``.

Sweeps (``-m``): every job of a Hydra multirun is one call of ``main``, which returns
the objective for sweepers such as Optuna (the final evaluation's mean score). Before
Hydra launches any job, every job's config is composed and checked (``_check_sweep``): a
bad value or combination in one job refuses the whole sweep in one line, and nothing is
written. A job that fails while running (it diverged, a crash) is recorded in its folder
(``failed.json``, with its one line) and the sweep goes on with the other jobs; the sweep
then exits with 1, naming the failed jobs (``SweepOutcome``). Jobs that
share a machine (joblib) or get a slice of one (Ray ``num_cpus``, SLURM
``cpus_per_task``) size their envpool, sampler and torch threads to their share of the
cores (``dqnfast.config.resolve.job_cores``); W&B groups a sweep's jobs under the sweep's name.
"""

from __future__ import annotations

import copy
import errno
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dqnfast.atomic import DiskFullError
from dqnfast.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    find_checkpoint,
    newest_steps,
    run_dir_of,
)
from dqnfast.cli import CONF_DIR
from dqnfast.cli.help import print_help, wants_help
from dqnfast.cli.hydra_dirs import begin_command, discard_refused_output, note_existing
from dqnfast.cli.overrides import check_overrides, plain_value, quote, quote_paths, sweep_jobs
from dqnfast.cli.sweep_resume import check_job_folder, continue_job, hand_over_signal
from dqnfast.config import Config, ConfigError
from dqnfast.config.keys import summary
from dqnfast.config.resolve import available_cores, job_cores, share_cores
from dqnfast.envs import EnvCreationError
from dqnfast.failure import FAILED_NAME, read_failure, write_failure
from dqnfast.loggers import flatten
from dqnfast.training import check_config, objective, train
from dqnfast.training.loop import TrainingDiverged
from dqnfast.training.rundir import LOCK_NAME, precheck, release_all
from dqnfast.training.stop import StopRequested, nothing_saved, raise_on_signals, reached

log = logging.getLogger("dqnfast.train")

GROUPS = ("envs", "algo", "network", "replay", "optim", "explore", "logger", "reinforce", "preset")


def _fail(err: ConfigError) -> None:
    release_all()  # the run dir's lock first: it is the last file of a folder this command made
    discard_refused_output()  # a refused run leaves no outputs/DATE/TIME folder
    msg = " ".join(str(err).split())  # one line, whatever the message held
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def to_config(cfg: Any) -> Config:
    """A Hydra DictConfig (typed by the Config schema) -> Config dataclasses."""
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, Config):  # composed without the schema: type it now
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))
    return obj


def _register_configs() -> None:
    """Types the composed config: ``config_schema`` comes first in conf/config.yaml's defaults."""
    ConfigStore.instance().store(name="config_schema", node=Config)


_register_configs()


def _preflight(argv: list[str]) -> None:
    """One-line errors, before Hydra, for overrides Hydra would report in many lines.

    Unknown config-group options (``network=foo``), unknown keys and values of the
    wrong type (``optim.lr=abc``), every value of a sweep; values are checked by
    ``config.validate`` once the run starts.
    """
    try:
        check_overrides(argv, Config, hint="see python -m dqnfast.train --cfg job", groups=GROUPS, conf_dir=CONF_DIR)
    except ConfigError as e:
        _fail(e)


def _check_sweep(argv: list[str]) -> None:
    """``-m``: composes and checks every job of the sweep before Hydra launches any.

    A value or a combination that one job gets wrong (``algo.total_steps=3000
    algo.learning_starts=1000,5000``) refuses the sweep in one line naming that job's swept
    overrides; nothing is written. Hydra's compose API builds the config of each distinct
    set of config-group choices once (composing is what costs); each job's plain
    ``key=value`` overrides are then applied as Hydra applies them after composing
    (``OmegaConf.update``). A sweeper that picks its jobs as it goes (Optuna) cannot be
    listed beforehand: each of its jobs is checked when it starts, and one refused then is
    recorded as a failed job (``main``). A job that resumes a run is checked against its
    checkpoint's config when it starts.
    """
    if not {"-m", "--multirun"} & set(argv) or any(
        a.split("=", 1)[0] in _NO_RUN_DIR - {"-m", "--multirun"} for a in argv
    ):
        return
    args = [a for a in argv if not a.startswith("-") and "=" in a]
    parser = OverridesParser.create()
    try:
        fixed = [a for a, o in zip(args, parser.parse_overrides(args)) if not o.is_sweep_override()]
    except Exception:  # Hydra's parser error says it best
        return
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="train"):
        try:
            sweeper = compose("config", overrides=fixed, return_hydra_config=True).hydra.sweeper
        except Exception:  # a composition error: Hydra reports it when it composes the sweep
            return
        if not str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
            return
        params = OmegaConf.to_container(sweeper.params) if sweeper.get("params") else None
        listed = sweep_jobs(args, params)
        if listed is None:
            return
        jobs, swept = listed
        composed: dict[tuple[str, ...], DictConfig] = {}
        for num, job in enumerate(jobs):
            overrides = parser.parse_overrides(job)
            groups = tuple(
                a
                for a, o in zip(job, overrides)
                if o.key_or_group in GROUPS or "/" in o.key_or_group or o.is_add() or o.is_delete() or o.package
            )
            try:
                if groups not in composed:
                    composed[groups] = compose("config", overrides=list(groups))
                cfg = copy.deepcopy(composed[groups])
                for a, o in zip(job, overrides):
                    if a not in groups:
                        OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
            except Exception:  # Hydra reports what it cannot compose when it gets to this job
                continue
            try:
                conf = to_config(cfg)
                if not conf.resume:
                    check_config(conf)
                    check_job_folder(argv, num, cfg)  # its folder of an earlier run of the sweep: the same config
            except ConfigError as e:
                label = " ".join(a for a in job if a.split("=", 1)[0] in swept)
                where = f"sweep job {num} of {len(jobs)}" + (f": {label}" if label else "")
                _fail(ConfigError(e.key, f"{e.message} ({where}); no job of the sweep was run"))
            except Exception:  # a value Hydra types when it composes this job: reported then
                continue


def resume_config(cfg: DictConfig, saved: dict, overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """The config of a resumed run: the checkpoint's config, then this command line's overrides.

    cfg: what Hydra composed from this command line; saved: the checkpoint's config
    (a plain dict); overrides: this command line's overrides (``key=value`` strings).
    Each overridden key takes its value from ``cfg`` (so Hydra has typed it); a group
    option (``optim=rmsprop``) replaces its section; a preset sets the keys it names.
    Returns (config, ["key: old -> new", ...]).
    """
    base = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(saved))
    before = OmegaConf.to_container(base, resolve=True, enum_to_str=True)
    keys: list[str] = []
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if key == "preset" and o.value():
            preset = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "preset" / f"{o.value()}.yaml"))
            for d in preset.pop("defaults", None) or []:  # "override /optim: rmsprop"
                keys += [str(k).split("/")[-1] for k in (d if isinstance(d, dict) else {})]
            keys += list(flatten(preset))
            continue
        if key in ("resume", "preset") or key.startswith("hydra") or o.is_delete():
            continue
        keys.append(key)
    for key in sorted(set(keys), key=lambda k: (k.count("."), k)):  # sections first, then single keys
        value = OmegaConf.select(cfg, key)
        if isinstance(value, DictConfig):  # a whole section: every key of it is set
            value = OmegaConf.to_container(value)
        OmegaConf.update(base, key, value, merge=True)
    after = OmegaConf.to_container(base, resolve=True, enum_to_str=True)
    fb, fa = flatten(before), flatten(after)
    changes = [f"{k}: {fb.get(k)!r} -> {fa[k]!r}" for k in sorted(fa) if k != "resume" and fb.get(k) != fa[k]]
    return base, changes


# The checkpoints ``_resume_preflight`` read (checksum verified), by file, for the run that resumes one
# (``_resume_run``): a resume reads its checkpoint once. Taken, not kept: each job of a sweep that
# resumes the same file reads it anew, so no two runs share one dict.
_preloaded: dict[Path, dict] = {}


def _file_key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _resume_run(cfg: DictConfig, conf: Config) -> tuple[Config, dict, dict, Path]:
    """``resume=<run dir or checkpoint>``: (config, config dict, checkpoint, run dir). Raises ConfigError("resume").

    The checkpoint is the one ``_resume_preflight`` read, when it is the same file.
    """
    from dqnfast.checkpoint import load_checkpoint  # looked up at each call: tests replace it on its module

    try:
        path = find_checkpoint(conf.resume)
        ck = _preloaded.pop(_file_key(path), None) or load_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError("resume", str(e)) from None
    ck["_path"] = str(path)
    saved = dict(ck.get("config") or {})
    saved.pop("resume", None)
    try:
        merged, changes = resume_config(cfg, saved, list(HydraConfig.get().overrides.task))
    except Exception as e:  # a config from another dqnfast version
        raise ConfigError("resume", f"cannot use the checkpoint's config ({' '.join(str(e).split())})") from None
    merged.resume = str(path)
    for c in changes:
        log.info("resume: changed %s", c)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if run_dir.resolve() != run_dir_of(path):
        log.info("resume: writing to %s (the checkpoint's run is %s)", run_dir, run_dir_of(path))
    return to_config(merged), OmegaConf.to_container(merged, resolve=True, enum_to_str=True), ck, run_dir


def _tracking(conf: Config, config_dict: dict) -> dict[str, Any]:
    """The Hydra job as the loggers see it; in a multirun also sizes the job's threads.

    Returns ``train``'s ``tracking``: W&B group = the sweep (``DATE_TIME`` of
    ``multirun/DATE/TIME``) in a multirun, tags, and the overrides / sweep dir / job
    number for the W&B run config.
    """
    hc = HydraConfig.get()
    hydra_info: dict[str, Any] = {"overrides": list(hc.overrides.task)}
    tracking: dict[str, Any] = {"group": None, "tags": [], "hydra": hydra_info}
    if hc.mode != RunMode.MULTIRUN:
        return tracking
    sweep = Path(str(hc.sweep.dir))
    tracking["group"] = f"{sweep.parent.name}_{sweep.name}" if sweep.parent.name else sweep.name
    tracking["tags"] = ["multirun"]
    hydra_info.update(sweep_dir=str(sweep), job_num=int(hc.job.num))
    launcher = OmegaConf.to_container(hc.launcher, resolve=False) if hc.get("launcher") else None
    total = available_cores()
    cores = job_cores(launcher, total)
    if cores is not None:
        threads = share_cores(conf, config_dict, cores)
        n = launcher.get("n_jobs") if str(launcher.get("_target_", "")).endswith("JoblibLauncher") else None
        where = f"{total} cores, {n} jobs at once" if n is not None else f"{total} cores here"
        log.info("threads: %d core(s) for this job (%s): %s", cores, where, threads)
    return tracking


def _job_failed(err: BaseException | str, code: int, run_dir: Any) -> float:
    """A multirun job that failed: its one line on stderr and in ``<run dir>/failed.json``; the sweep goes on.

    code: 1 for a job that failed while running (its folder is its own), 2 for a job
    refused when it started: its record is written only where the folder holds no run
    (no checkpoint.pt, no eval.json), since the refusal may be that the folder is another
    run's. Returns the objective of a failed job, NaN (Optuna records the trial as failed).
    """
    release_all()  # this job's run dir lock: the next job of an in-process launcher starts clean
    hc = HydraConfig.get()
    msg = " ".join(str(err).split())
    theirs = code == 2 and any((Path(run_dir) / n).exists() for n in (CHECKPOINT_NAME, "eval.json"))
    path = None if theirs else write_failure(run_dir, msg, code)
    where = f" (recorded in {path})" if path else ""
    print(f"error: sweep job {hc.job.num} failed{where}: {msg}", file=sys.stderr)
    _FAILED_HERE.append(Path(run_dir).resolve())
    return math.nan


def _run_failed(err: BaseException, run_dir: Any) -> None:
    """A single run that failed while running: one line, exit 1; the folder stays, with ``failed.json``."""
    msg = " ".join(str(err).split())
    write_failure(run_dir, msg, 1)
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def _disk_full_error(e: OSError) -> DiskFullError | None:
    """A full disk or quota as a one-line ``DiskFullError``; None for any other OSError."""
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = e.filename or "a file of the run"
    msg = f"disk full writing {where} ({e.strerror}); the run's checkpoints are complete"
    return DiskFullError(e.errno, msg, str(where), 0)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """``python -m dqnfast.train [overrides]``: Hydra CLI (``--cfg job``, ``-m``; ``cli`` answers ``--help``).

    Returns the run's objective for sweepers (``objective``: the final evaluation's
    mean score). ``resume=<run dir>`` continues that run (see ``train``); SIGINT/SIGTERM/SIGHUP
    write a checkpoint and exit with status 128 + the signal number (130, 143, 129). Bad config
    values exit with 2; a run that diverged (non-finite loss, Q-values or weights), a full
    disk and envs that cannot be created exit with 1, and leave ``failed.json`` in the run
    dir; each with one line on stderr. In a sweep (``-m``) a job that fails, for any of
    these reasons or a crash, is recorded the same way and returns NaN, so that the
    sweep's other jobs still run; a signal stops the whole sweep.
    """
    run_dir = HydraConfig.get().runtime.output_dir
    sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    _where.run_dir, _where.finished = Path(run_dir), False
    reached("run dir")
    try:
        conf = to_config(cfg)
        ck = None
        config_dict = None
        if sweep and not conf.resume:  # its own run in its folder: continued, or skipped when finished
            conf, done = continue_job(cfg, conf, run_dir)
            if done is not None:
                _where.finished = True
                return done
        if conf.resume:
            conf, config_dict, ck, run_dir = _resume_run(cfg, conf)
        resolved = check_config(conf)  # the run's one check and resolution of its config, handed to train()
        if config_dict is None:
            config_dict = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        tracking = _tracking(conf, config_dict)
        summary = train(conf, run_dir, config_dict=config_dict, resume=ck, tracking=tracking, checked=resolved)
    except ConfigError as e:
        if sweep:  # checked before the sweep began where it could be: what is left is this job's alone
            return _job_failed(e, 2, run_dir)
        _fail(e)
    except (EnvCreationError, TrainingDiverged, DiskFullError) as e:  # not the config: one line, the folder stays
        if sweep:
            return _job_failed(e, 1, run_dir)
        _run_failed(e, run_dir)
    except OSError as e:
        full = _disk_full_error(e)
        if sweep:
            if full is None:
                _traceback_to_log_file(e)
            return _job_failed(full or _crash_line(e), 1, run_dir)
        if full is None:
            raise
        _run_failed(full, run_dir)
    except Exception as e:
        if not sweep:
            raise  # a bug: its traceback is the report
        _traceback_to_log_file(e)
        return _job_failed(_crash_line(e), 1, run_dir)
    _where.finished = True
    if summary.get("interrupted"):  # the run logged its one line: what is saved, how to go on
        not_requeued = hand_over_signal(summary["interrupted"], run_dir) if sweep else None  # submitit requeues
        if not_requeued:
            return _job_failed(not_requeued, 1, run_dir)
        sys.exit(128 + int(signal.Signals[summary["interrupted"]]))
    return objective(summary)


def _traceback_to_log_file(e: BaseException) -> None:
    """A crashed sweep job's traceback, to the job's log file only (Hydra's ``train.log``): the console gets one line."""
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "sweep job crashed", (), (type(e), e, e.__traceback__)
    )
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


def _crash_line(e: BaseException) -> str:
    """``crashed: Type: first line`` of an unexpected exception in a sweep job (the traceback is in its log)."""
    first = (str(e).strip().splitlines() or [""])[0]
    what = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return f"crashed: {what} (traceback in the job's log)"


class SweepOutcome(Callback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``): a sweep whose jobs failed ends in one line, exit 1.

    Runs in the process that launched the sweep, whichever launcher ran the jobs: at the
    end it reads the jobs' ``failed.json`` records written since the sweep began (and the
    failures of jobs that ran in this process, recorded or not), prints
    one line naming the failed jobs and the report's command, and sets ``FAILED_JOBS``
    for ``cli``'s exit status.
    """

    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        since = self.started - 1.0  # file times are kept more coarsely than time.time()
        jobs = [p.parent.parent.resolve() for p in sweep.rglob(".hydra/overrides.yaml") if _mtime(p) >= since]
        failed = [j for j in jobs if _mtime(j / FAILED_NAME) >= since and read_failure(j)]
        failed += [j for j in _FAILED_HERE if j not in failed]  # in-process jobs whose record was not written
        FAILED_JOBS[:] = failed
        if failed:
            names = ", ".join(_job_name(j, sweep) for j in sorted(failed, key=_job_order))
            recorded = any(read_failure(j) for j in failed)
            print(
                f"error: {len(failed)} of {len(jobs)} sweep jobs failed ({names}: errors above"
                + (f", recorded in the jobs' {FAILED_NAME}" if recorded else "")
                + ")"
                + ("; the other jobs ran" if len(failed) < len(jobs) else "")
                + f"; report: python -m dqnfast.report {sweep}",
                file=sys.stderr,
            )


FAILED_JOBS: list[Path] = []  # the failed jobs of the sweep this process ran (``SweepOutcome``)
_FAILED_HERE: list[Path] = []  # run dirs of the sweep jobs that failed in this process (``_job_failed``)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return -math.inf


def _job_name(job: Path, sweep: Path) -> str:
    try:
        return str(job.relative_to(sweep.resolve()))
    except ValueError:
        return str(job)


def _job_order(p: Path) -> tuple:
    return (str(p.parent), int(p.name) if p.name.isdigit() else math.inf, p.name)


def _resume_preflight(argv: list[str]) -> tuple[list[str], Path | None]:
    """``resume=X``: checks X before Hydra creates any folder, and runs in X's run dir.

    Adds ``hydra.run.dir=<run dir>`` (unless given: a fork) and, in the run's own dir, keeps
    its ``.hydra/`` by writing this invocation's under ``.hydra/resume-<unix time>/``.
    Returns (argv, the checkpoint file or None).
    """
    from dqnfast.checkpoint import load_checkpoint  # looked up at each call: tests replace it on its module

    given = [a for a in argv if a.startswith("resume=")]
    if not given or given[-1].split("=", 1)[1] in ("", "null", "None"):
        return argv, None
    try:
        path = find_checkpoint(_path_value(given[-1]))
        _preloaded[_file_key(path)] = load_checkpoint(path)  # a corrupt file fails here, before Hydra writes
    except CheckpointError as e:
        _fail(ConfigError("resume", str(e)))
    extra = []
    run_dir = _given_run_dir(argv)
    if run_dir is None and not any(a.startswith("hydra.run.dir=") for a in argv):
        run_dir = run_dir_of(path)
        extra.append(_override("hydra.run.dir", str(run_dir)))
    in_place = run_dir is not None and run_dir.resolve() == run_dir_of(path)
    if in_place and not any(a.startswith("hydra.output_subdir=") for a in argv):
        extra.append(f"hydra.output_subdir=.hydra/resume-{int(time.time())}")
    return argv + extra, path


# Hydra flags of commands that write no run dir, or several (a multirun: each job's run is checked by ``train``)
_NO_RUN_DIR = {"-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "--resolve", "-p"}
_NO_RUN_DIR |= {"--package", "-sc", "--shell-completion", "-m", "--multirun", "--experimental-rerun"}


def _given_run_dir(argv: list[str]) -> Path | None:
    """The run dir a single run writes, when the command line names it plainly (``hydra.run.dir=...``)."""
    if any(a.split("=", 1)[0] in _NO_RUN_DIR for a in argv):
        return None
    given = [a for a in argv if a.startswith("hydra.run.dir=")]
    value = plain_value(given[-1]) if given else None
    if value is None or "${" in value:
        return None  # interpolated, or not one plain value: Hydra resolves it, ``train`` checks it
    return Path(value).expanduser()


def _path_value(arg: str) -> str:
    """A path override's value as Hydra will read it (``resume='runé'`` -> ``runé``); as typed if it does not parse."""
    value = plain_value(arg)
    return value if value is not None else arg.split("=", 1)[1]


def _override(key: str, value: str) -> str:
    """``key=value`` as an override that Hydra reads back as exactly ``value`` (quoted where its grammar needs it)."""
    arg = f"{key}={value}"
    if plain_value(arg) == value:
        return arg
    q = quote(value)
    if q is None:
        _fail(ConfigError(key, f"{value!r} cannot be written in Hydra's override grammar; choose another path"))
    return f"{key}={q}"


def _claim_run_dir(argv: list[str], source: Path | None) -> None:
    """Locks the run dir and checks it before Hydra writes into it (``dqnfast.training.rundir``).

    Another process holding it, a folder with another run, or a fork of a run that is
    running: one line, exit 2, nothing written. The lock is held until the process ends.
    """
    run_dir = _given_run_dir(argv)
    if run_dir is None:
        return
    note_existing(run_dir)  # before the lock file creates it: a refusal removes only the folders it made
    try:
        precheck(run_dir, source=source)
    except ConfigError as e:
        _fail(e)


def _help_groups() -> dict[str, str]:
    """{group: what it is} for ``--help``: each section's docstring summary, then the presets."""
    conf = Config()
    groups = {g: summary(type(getattr(conf, g))) for g in GROUPS if g != "preset"}
    groups["preset"] = "overlays applied last, over the groups (none by default; docs/training.md lists them)"
    return groups


# Groups that only a ``+group=option`` override adds (they are in no defaults list).
OPTIONAL_GROUPS = {
    "sweep": "with -m, a hyperparameter search, e.g. python -m dqnfast.train -m +sweep=optuna "
    "(pip install -e '.[sweep]'; docs/sweeps.md)",
}


# Overrides whose values are paths: quoted for Hydra when its grammar cannot take them as typed
PATH_KEYS = ("resume", "hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir")


@dataclass
class _Where:
    """What the line of a signal outside the training loop tells: the run dir once known, whether the run ended."""

    run_dir: Path | None = None
    finished: bool = False


_where = _Where()


def stopped_outside_training(signum: int, run_dir: Path | None, *, finished: bool = False) -> str:
    """The one line of a signal that came before a run's loop began (or after the run ended).

    Nothing was saved: it says what the run dir holds, read from the disk (a resumed run's
    checkpoint is unchanged; a fresh run has none), and how to go on.
    """
    name = signal.Signals(signum).name
    if finished:
        return f"{name} after the run ended: its results in {run_dir} are complete"
    head = nothing_saved(signum)
    if run_dir is None:
        return f"{head} or written"
    if (run_dir / CHECKPOINT_NAME).is_file():
        steps = newest_steps(run_dir)
        at = f" ({steps} agent steps)" if steps is not None else ""
        return (
            f"{name} during start-up, before the training resumed: nothing new was saved; the checkpoint "
            f"{run_dir / CHECKPOINT_NAME}{at} is unchanged; continue with: python -m dqnfast.train resume={run_dir}"
        )
    if not run_dir.is_dir():
        return f"{head}; {run_dir} was not made"
    held = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
    state = f"holds no checkpoint, only {', '.join(held)}" if held else "is empty"
    return f"{head}; {run_dir} {state}; start the run again with the same command"


def _last_words(line: str) -> None:
    """The process's last line, to stderr; a terminal that has gone (SIGHUP) is no error."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def cli() -> None:
    """Console entry point: pre-flight checks, our ``--help``, the run dir's lock, then Hydra.

    From here until a run's loop starts (and again once it has ended) SIGINT, SIGTERM and
    SIGHUP stop the process at once with one line (``stopped_outside_training``) and status
    128 + the signal number: there is no training to checkpoint yet.
    """
    raise_on_signals()  # already so under python -m dqnfast.train; a caller of cli() gets it here
    try:
        begin_command()
        sys.argv = sys.argv[:1] + quote_paths(sys.argv[1:], PATH_KEYS)
        _preflight(sys.argv[1:])
        if wants_help(sys.argv[1:]):
            print_help(
                sys.argv[1:],
                app="dqnfast.train",
                config_name="config",
                schema=Config,
                groups=_help_groups(),
                optional_groups=OPTIONAL_GROUPS,
            )
        _check_sweep(sys.argv[1:])
        argv, source = _resume_preflight(sys.argv[1:])
        _where.run_dir = _given_run_dir(argv)
        _claim_run_dir(argv, source)
        sys.argv = sys.argv[:1] + argv
        main()
    except StopRequested as e:
        where = _where.run_dir.resolve() if _where.run_dir is not None else None
        _last_words(stopped_outside_training(e.signum, where, finished=_where.finished))
        sys.exit(128 + e.signum)
    if FAILED_JOBS:  # a sweep ran every job it could; its status says some failed (SweepOutcome printed which)
        sys.exit(1)
