"""The command lines: the only modules that import Hydra or argparse.

``python -m dqnfast.train`` (``cli.train``), ``python -m dqnfast.evaluate``
(``cli.evaluate``), ``python -m dqnfast.report`` (``cli.report``); ``cli.overrides``
checks overrides in one line before Hydra runs; ``cli.help`` prints the ``--help`` pages.
"""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # a link to the repo's conf/, shipped in wheels


def discard_refused_output() -> None:
    """Removes what Hydra wrote for a command that is being refused, so it leaves no folder.

    Hydra creates the run dir, its ``.hydra/`` and the job's log before the command can
    check values. Only what this invocation wrote goes: in a resumed run's dir its
    ``.hydra/resume-*``; elsewhere, when the dir holds nothing but ``.hydra/`` and the
    log, the dir itself, then parents left empty below the working dir (``outputs/DATE``).
    A dir that holds anything else (results, earlier evaluations) is left as it is.
    Does nothing outside a Hydra run.
    """
    import shutil

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if not run_dir.is_dir():
        return
    log_file = run_dir / f"{hc.job.name}.log"
    parts = Path(str(hc.output_subdir or ".hydra")).parts
    if len(parts) > 1:  # a resumed run's dir: only this invocation's record goes
        shutil.rmtree(run_dir.joinpath(*parts), ignore_errors=True)
        return
    lock = run_dir / ".dqnfast.lock"  # dqnfast.training.rundir.LOCK_NAME: not a result
    if any(p not in (log_file, run_dir / parts[0], lock) for p in run_dir.iterdir()):
        return  # the command got far enough to write results: keep the record of it
    shutil.rmtree(run_dir / parts[0], ignore_errors=True)
    log_file.unlink(missing_ok=True)
    cwd = Path.cwd().resolve()
    d = run_dir.resolve()
    while d != cwd and cwd in d.parents and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent
