"""Shared test helpers: the repository root and a runner for the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The environment of a CLI subprocess: the package is found through PYTHONPATH, so the CLI works
# from a source checkout as well as from an install.
CLI_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def run_cli(tmp_path):
    """Runs ``python -m dqnfast.train *args`` in a subprocess with the run dir under tmp_path.

    Returns (CompletedProcess, run_dir). The package is found through PYTHONPATH, so the
    CLI works from a source checkout as well as from an install.
    """

    def run(*args: str, timeout: float = 300, run_dir: bool = True):
        out = tmp_path / "run"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, "-m", "dqnfast.train", *args]
        if run_dir:
            cmd.append(f"hydra.run.dir={out}")
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
        return proc, out

    return run
