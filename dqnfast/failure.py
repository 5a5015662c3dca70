"""A run's failure record: ``<run dir>/failed.json``, the one-line error of a run that stopped on one.

A run that fails while running (it diverged, its envs could not be made, the disk filled,
or, in a sweep, a crash or a config a job refused) writes it beside what the run had
written, so that a sweep's other jobs can go on and ``python -m dqnfast.report`` can list
the job with its error. A later run in the same folder that finishes (a resume) writes an
``eval.json`` newer than the record, which then no longer counts (``read_failure``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from dqnfast.atomic import atomic_open

__all__ = ["FAILED_NAME", "read_failure", "write_failure"]

FAILED_NAME = "failed.json"


def write_failure(run_dir: str | os.PathLike, error: str, exit_code: int) -> Path | None:
    """Writes ``{"error", "exit_code", "time"}`` to ``run_dir/failed.json``; returns its path.

    error: the one line the command printed (without ``error:``). A record that cannot be
    written (the disk that stopped the run is full, the folder is gone) is skipped: the
    line on stderr stays the report of the failure. Returns None then.
    """
    path = Path(run_dir) / FAILED_NAME
    record = {"error": " ".join(str(error).split()), "exit_code": int(exit_code), "time": time.time()}
    try:
        with atomic_open(path, "w") as f:
            json.dump(record, f)
    except OSError:
        return None
    return path


def read_failure(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The failure record of ``run_dir`` that still stands, or None.

    None when there is none, or when the run dir's ``eval.json`` (a training run's final
    evaluation) is newer: a later run in the folder finished. A later ``python -m
    dqnfast.evaluate`` of one of its checkpoints (``eval/``) does not make the run finished. A record that cannot be read still says the run
    failed: ``{"error": "failed.json unreadable (...)"}``.
    """
    run_dir = Path(run_dir)
    path = run_dir / FAILED_NAME
    try:
        written = path.stat().st_mtime
    except OSError:
        return None
    try:
        if (run_dir / "eval.json").stat().st_mtime > written:
            return None
    except OSError:
        pass
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return {"error": f"{FAILED_NAME} unreadable ({type(e).__name__})", "exit_code": None}
    if not isinstance(record, dict):
        return {"error": f"{FAILED_NAME} is not a JSON object", "exit_code": None}
    return {"error": " ".join(str(record.get("error", "")).split()) or "?", "exit_code": record.get("exit_code")}
