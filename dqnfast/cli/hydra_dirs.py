"""What Hydra writes before a command can check its values, and taking it away when the command is refused.

Hydra creates the run (or sweep) dir, its ``.hydra/`` and the job's log before ``cli.train`` or
``cli.evaluate`` can check a value. ``NoteExistingFolders`` (the Hydra callback of
conf/config.yaml and conf/evaluate.yaml) and ``note_existing`` record what existed before;
``discard_refused_output`` removes what a refused command wrote, and only that.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dqnfast.folders import deepest_existing, remove_made_dirs

# What existed before this command wrote anything: the deepest existing folder on the path of
# its run (or sweep) dir, and that folder's entries then. None: not noted, so not known.
_found: tuple[Path, frozenset[str]] | None = None


def begin_command() -> None:
    """Forgets what an earlier command of this process noted: each command line notes its own folders."""
    global _found
    _found = None


def note_existing(path: str | os.PathLike) -> None:
    """Notes, before anything is created on ``path``, which folder of it exists and what it holds.

    The first note of a command counts (``begin_command`` starts one): the command line notes the
    run dir before its lock file creates it, and Hydra's later note of the same dir is then ignored.
    """
    global _found
    if _found is not None:
        return
    d = deepest_existing(Path(path))
    try:
        names = frozenset(os.listdir(d)) if d.is_dir() else frozenset()
    except OSError:
        names = frozenset()
    _found = (d, names)


class NoteExistingFolders(Callback):
    """Hydra callback (conf/config.yaml, conf/evaluate.yaml): notes what exists before Hydra makes the run dir.

    Hydra creates the run dir, its ``.hydra/`` and the job's log before a command can check its
    values; what was there before tells a refusal which folders are its own to remove.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        note_existing(str(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        note_existing(str(config.hydra.sweep.dir))


def discard_refused_output() -> None:
    """Removes what Hydra wrote for a command that is being refused, and only that.

    Hydra creates the run dir, its ``.hydra/`` and the job's log before the command can
    check values. Only what this invocation wrote goes: in a resumed run's dir its
    ``.hydra/resume-*``; in a folder that existed before the command, the ``.hydra/`` and log it
    added; elsewhere, when the dir holds nothing but ``.hydra/`` and the log, the dir itself and
    the parents this command made (``note_existing``), never a folder that was there before. A dir
    that holds anything else (results, earlier evaluations) is left as it is; where what existed
    before is not known (a sweep's job in another process), every folder stays. Does nothing
    outside a Hydra run.
    """
    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    run_dir = Path(os.path.abspath(hc.runtime.output_dir))
    if not run_dir.is_dir():
        return
    log_file = run_dir / f"{hc.job.name}.log"
    parts = Path(str(hc.output_subdir or ".hydra")).parts
    if len(parts) > 1:  # a resumed run's dir: only this invocation's record goes
        shutil.rmtree(run_dir.joinpath(*parts), ignore_errors=True)
        return
    record = run_dir / parts[0]
    lock = run_dir / ".dqnfast.lock"  # dqnfast.training.rundir.LOCK_NAME: not a result
    if any(p not in (log_file, record, lock) for p in run_dir.iterdir()):
        return  # the command got far enough to write results: keep the record of it
    if _found is None:
        return
    existing, names = _found
    if run_dir == existing:  # the user's folder: take out only what this command put in it
        if record.name not in names:
            shutil.rmtree(record, ignore_errors=True)
        if log_file.name not in names:
            log_file.unlink(missing_ok=True)
        return
    shutil.rmtree(record, ignore_errors=True)
    log_file.unlink(missing_ok=True)
    remove_made_dirs(run_dir, existing)
