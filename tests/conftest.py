"""Shared test helpers: the repository root, a runner for the real CLI, and per-test CPU times."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The environment of a CLI subprocess: the package is found through PYTHONPATH, so the CLI works
# from a source checkout as well as from an install.
CLI_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def pytest_addoption(parser):
    group = parser.getgroup("dqnfast")
    group.addoption(
        "--cpu-times",
        action="store_true",
        help="print each test's CPU time (user+sys of pytest and of the subprocesses it waited for), largest first",
    )
    group.addoption(
        "--cpu-times-file",
        metavar="PATH",
        help="also write the whole table, tab-separated, to PATH (implies --cpu-times)",
    )


def _cpu_seconds() -> float:
    """User+sys CPU time of this process (all its threads) and of its children that were waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


_CPU_TIMES: dict[str, float] = {}


def _cpu_times_wanted(config) -> bool:
    return bool(config.getoption("--cpu-times") or config.getoption("--cpu-times-file"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # Setup, call and teardown together: a module- or session-scoped fixture is charged to the
    # first test that uses it, so a shared fixture shows up once, where it is built.
    if not _cpu_times_wanted(item.config):
        yield
        return
    start = _cpu_seconds()
    yield
    _CPU_TIMES[item.nodeid] = _cpu_seconds() - start


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _cpu_times_wanted(config) or not _CPU_TIMES:
        return
    rows = sorted(_CPU_TIMES.items(), key=lambda kv: kv[1], reverse=True)
    total = sum(_CPU_TIMES.values())
    tr = terminalreporter
    tr.write_sep("=", f"CPU time per test (user+sys, with subprocesses): {total / 60:.2f} min in {len(rows)} tests")
    # From the start of the pytest process: collection and imports too.
    tr.write_line(f"whole session so far: {_cpu_seconds() / 60:.2f} min")
    for nodeid, seconds in rows[:25]:
        tr.write_line(f"{seconds:8.1f} s  {nodeid}")
    per_file: dict[str, float] = {}
    for nodeid, seconds in rows:
        per_file[nodeid.split("::")[0]] = per_file.get(nodeid.split("::")[0], 0.0) + seconds
    tr.write_sep("-", "per file")
    for path, seconds in sorted(per_file.items(), key=lambda kv: kv[1], reverse=True):
        tr.write_line(f"{seconds:8.1f} s  {path}")
    out = config.getoption("--cpu-times-file")
    if out:
        Path(out).write_text("".join(f"{seconds:.2f}\t{nodeid}\n" for nodeid, seconds in rows))
        tr.write_line(f"whole table: {out}")


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
