"""``python -m dqnfast.evaluate run=<run dir or checkpoint>``: the Hydra command line (conf/evaluate.yaml).

The evaluation itself is ``dqnfast.evaluation.evaluate`` (no Hydra).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from dqnfast.checkpoint import CHECKPOINT_NAME, CheckpointError, find_checkpoint, numbered_checkpoints
from dqnfast.cli import CONF_DIR
from dqnfast.cli.help import print_help, wants_help
from dqnfast.cli.hydra_dirs import begin_command, discard_refused_output
from dqnfast.cli.overrides import check_overrides, is_hydra_key, quote_paths, sweep_jobs
from dqnfast.config import ConfigError
from dqnfast.envs import EnvCreationError, ReplayDivergedError
from dqnfast.evaluation import EvalConfig, check_evaluation, default_out, evaluate
from dqnfast.evaluation.video import VideoError


def _fail(err: Exception, code: int = 2) -> None:
    discard_refused_output()  # a refused evaluation leaves no output folder
    print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
    sys.exit(code)


def _eval_dir(run: str, out: Any = None) -> str:
    """Hydra's run dir for an evaluation (resolver ``dqnfast_eval_dir``): ``out`` or the default."""
    if out not in (None, "", "None", "null"):
        return str(out)
    try:
        return str(default_out(find_checkpoint(run)))
    except Exception:  # checked, with a clear message, before Hydra runs
        return str(Path("outputs") / "eval")


def _runs_inside(folder: Path, limit: int = 5) -> tuple[list[Path], int]:
    """Run dirs with a checkpoint below ``folder`` (a sweep's jobs, ``multirun/DATE/TIME/N``): (the first ``limit``, how many)."""
    found = set()
    for depth in ("*", "*/*", "*/*/*"):  # a sweep dir, a day of sweeps, the whole multirun/ folder
        found |= {p.parent for p in folder.glob(f"{depth}/{CHECKPOINT_NAME}") if p.is_file()}
        found |= {p for p in folder.glob(depth) if p.is_dir() and p not in found and numbered_checkpoints(p)}
    runs = sorted(found, key=lambda p: [(0, int(x), "") if x.isdigit() else (1, 0, x) for x in p.parts])
    return runs[:limit], len(runs)


def _check_run(run: str) -> None:
    """``run=``: a usable checkpoint, or a one-line refusal; a folder of runs (a sweep) gets the runs it holds."""
    from dqnfast.checkpoint import load_checkpoint  # looked up at each call: tests replace it on its module

    try:
        load_checkpoint(find_checkpoint(run))
    except CheckpointError as e:
        folder = Path(run).expanduser()
        runs, n = _runs_inside(folder) if folder.is_dir() else ([], 0)
        if not runs:
            _fail(ConfigError("run", str(e)))
        more = f" and {n - len(runs)} more" if n > len(runs) else ""
        _fail(
            ConfigError(
                "run",
                f"{folder} is a folder of runs, not a run (no checkpoint of its own); the {n} run(s) in it with a "
                f"checkpoint: {', '.join(map(str, runs))}{more}; evaluate one with: "
                f"python -m dqnfast.evaluate run={runs[0]}",
            )
        )


def _job_overrides(argv: list[str]) -> list[list[str]] | None:
    """The overrides of every evaluation this command line runs (one; each job of a ``-m`` sweep); None if unknown."""
    args = [a for a in argv if not a.startswith("-") and "=" in a]
    if "-m" in argv or "--multirun" in argv:
        listed = sweep_jobs(args)
        return listed[0] if listed else None
    return [[a for a in args if not is_hydra_key(a.lstrip("+~").split("=", 1)[0])]]


def _check_evaluations(argv: list[str]) -> None:
    """Composes each evaluation's config (Hydra's compose API) and runs its checks before Hydra writes anything.

    Hydra writes the output folder's ``.hydra/`` before ``main`` runs: an evaluation refused
    only then would replace the record of the evaluation already in that folder.
    """
    jobs = _job_overrides(argv)
    if not jobs:
        return
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="evaluate"):
        for overrides in jobs:
            try:
                cfg = OmegaConf.to_object(compose("evaluate", overrides=overrides))
            except Exception:  # Hydra reports what it cannot compose, in its own words
                return
            try:
                check_evaluation(cfg)
            except ConfigError as e:
                _fail(e)
            except EnvCreationError:  # the machine, not the command: ``main`` reports it when it plays
                return


def _preflight(argv: list[str]) -> None:
    """One-line errors before Hydra creates any folder: no ``run=``, an unusable checkpoint, a bad key, type or value."""
    if any(
        a in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c", "--resolve")
        or a.startswith("--cfg")
        or a.startswith("--info")
        for a in argv
    ):
        return

    try:
        runs = [
            str(r)
            for r in check_overrides(argv, EvalConfig, hint="see python -m dqnfast.evaluate --help").get("run", [])
        ]
    except ConfigError as e:
        _fail(e)
    if not runs:
        _fail(
            ConfigError(
                "run", "give the run dir or checkpoint to evaluate: python -m dqnfast.evaluate run=outputs/DATE/TIME"
            )
        )
    for r in runs:
        _check_run(r)
    _check_evaluations(argv)


def _register() -> None:
    """The ``dqnfast_eval_dir`` resolver and the typed schema, for Hydra's app and for ``_check_evaluations``."""
    if not OmegaConf.has_resolver("dqnfast_eval_dir"):
        OmegaConf.register_new_resolver("dqnfast_eval_dir", _eval_dir)
    ConfigStore.instance().store(name="evaluate_schema", node=EvalConfig)


# Overrides whose values are paths: quoted for Hydra when its grammar cannot take them as typed (run=runé)
PATH_KEYS = ("run", "out", "hydra.run.dir")


def cli() -> None:
    """``python -m dqnfast.evaluate run=<run dir or checkpoint> [key=value ...]`` (Hydra app, conf/evaluate.yaml)."""
    begin_command()
    sys.argv = sys.argv[:1] + quote_paths(sys.argv[1:], PATH_KEYS)
    _register()
    _preflight(sys.argv[1:])
    if wants_help(sys.argv[1:]):
        print_help(sys.argv[1:], app="dqnfast.evaluate", config_name="evaluate", schema=EvalConfig)

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
    def main(dcfg) -> None:
        try:
            cfg = OmegaConf.to_object(dcfg)
            evaluate(cfg, HydraConfig.get().runtime.output_dir)
        except ConfigError as e:
            _fail(e)
        except Exception as e:  # VideoError, ReplayDivergedError: one line, no traceback
            if isinstance(e, (EnvCreationError, VideoError, ReplayDivergedError)):  # the machine, not the command
                _fail(e, 1)
            raise

    main()
