"""Shared test helpers: the repository root, a runner for the real CLI, and per-test CPU times."""

from __future__ import annotations

import contextlib
import io
import logging
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


@pytest.fixture(scope="session")
def cartpole_learned(tmp_path_factory) -> Path:
    """``python -m dqnfast.train preset=cartpole seed=1`` as shipped (60k agent steps, the
    default run's largest training: about half a CPU minute), once per session: its run dir.

    Tests read it (tests/test_train.py: it learns; tests/test_evaluate.py: eval.json, plots and
    ``python -m dqnfast.evaluate`` of a trained agent). Only the evaluation writes into it, in
    its own ``eval/`` folder; a test that needs to change the run copies it first.
    """
    tmp = tmp_path_factory.mktemp("cartpole_learned")
    out = tmp / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "dqnfast.train", "preset=cartpole", "seed=1", "logger.progress=false"]
    proc = subprocess.run([*cmd, f"hydra.run.dir={out}"], cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def reinforce_finished(tmp_path_factory) -> Path:
    """A finished REINFORCE run on CartPole by the real CLI (3000 agent steps, 4 envs, a final
    evaluation of 4 games on 2 envs), once per session: its run dir, read by
    tests/test_evaluate.py and tests/test_reinforce.py; only the evaluation writes into it, in
    its own ``eval/`` folder."""
    tmp = tmp_path_factory.mktemp("reinforce_finished")
    out = tmp / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [
        sys.executable,
        "-m",
        "dqnfast.train",
        "preset=reinforce",
        "envs.num_envs=4",
        "algo.total_steps=3000",
        "logger.log_every=1000",
        "logger.progress=false",
        "envs.eval.episodes=4",
        "envs.eval.num_envs=2",
        "torch_threads=1",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


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


def _in_process(cli, prog: str, args: tuple[str, ...], cwd: Path) -> tuple[int, str]:
    from dqnfast.training.rundir import release_all

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as m, contextlib.redirect_stderr(err):
        m.chdir(cwd)
        m.setattr(sys, "argv", [prog, *args])
        try:
            cli()
            code = 0
        except SystemExit as e:
            code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        finally:
            release_all()
            for h in list(root.handlers):
                if h not in handlers:
                    root.removeHandler(h)
                    h.close()
            root.setLevel(level)
    return code, err.getvalue()


def _train_in_process(*args: str, cwd: Path) -> tuple[int, str]:
    from dqnfast.cli.train import cli

    return _in_process(cli, "dqnfast.train", args, cwd)


def _evaluate_in_process(*args: str, cwd: Path) -> tuple[int, str]:
    from dqnfast.cli.evaluate import cli

    return _in_process(cli, "dqnfast.evaluate", args, cwd)


@pytest.fixture(scope="session")
def train_in_process():
    """Runs the real ``python -m dqnfast.train`` entry point (``dqnfast.cli.train.cli``) in this
    process: ``run(*args, cwd=...)`` returns (exit status, stderr).

    It saves the 3-5 s of CPU that a fresh interpreter spends importing torch, envpool and
    Hydra. Each test that uses it keeps at least one command of its kind in a process of its
    own (a process that is killed or signalled always is one), where the one line on stderr
    and the exit status are those of a real process. Afterwards it does what the end of a
    process does: the run dir locks the command holds are released (as ``atexit`` would),
    and the handlers Hydra added to the root logger (the job's log file) are closed, so later
    tests do not write into that run dir.
    """
    return _train_in_process


@pytest.fixture(scope="session")
def evaluate_in_process():
    """``python -m dqnfast.evaluate``'s entry point in this process, as ``train_in_process``."""
    return _evaluate_in_process
