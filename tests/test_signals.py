"""Signals through the real command: one true line and status 128 + N at every moment of a run.

Start-up (nothing to checkpoint yet) is stopped at named moments: the test runs ``python -m
dqnfast.train`` in a subprocess that first asks ``dqnfast.training.stop.signal_at`` for a
signal at that moment, so it lands there on every machine, busy or not. A run in its loop is
signalled once it has printed a line of that loop; SIGHUP comes from closing the run's real
terminal (a pseudo-terminal), as a closed window or a lost SSH session sends it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from dqnfast.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
TINY = [
    "preset=cartpole",
    "algo.learning_starts=500",
    "envs.eval.episodes=2",
    "torch_threads=1",
    "logger.progress=false",
]

# python -m dqnfast.train, with a signal asked for at a named moment of its start-up
SIGNAL_AT = (
    "import runpy, sys\n"
    "from dqnfast.training.stop import signal_at\n"
    "signal_at(sys.argv[1], int(sys.argv[2]))\n"
    "sys.argv = ['dqnfast.train', *sys.argv[3:]]\n"
    "runpy.run_module('dqnfast.train', run_name='__main__', alter_sys=True)\n"
)


def start_signalled(point: str, sig: signal.Signals, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SIGNAL_AT, point, str(int(sig)), *args],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_line(p: subprocess.Popen, sig: signal.Signals) -> str:
    """Waits for ``p``; asserts status 128 + sig and exactly one line on stderr, which it returns."""
    _, err = p.communicate(timeout=600)
    assert p.returncode == 128 + sig and "Traceback" not in err, err[-3000:]
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize(
    "point, sig, learner, held",
    [
        ("imports", signal.SIGINT, "dqn", None),  # before Hydra, numpy or torch is imported
        ("run dir", signal.SIGHUP, "dqn", ".hydra, train.log"),  # Hydra has made the run dir
        ("envs", signal.SIGTERM, "reinforce", ".hydra, train.log"),  # torch is loaded, the envs are made
        ("loggers", signal.SIGINT, "dqn", ".hydra, metrics.csv, train.log"),  # the last moment before the loop
    ],
)
def test_a_signal_during_start_up_ends_in_one_true_line(tmp_path, point, sig, learner, held):
    run = tmp_path / "run"
    preset = ["preset=reinforce", "logger.progress=false"] if learner == "reinforce" else TINY
    line = one_line(start_signalled(point, sig, *preset, f"hydra.run.dir={run}", cwd=tmp_path), sig)
    head = f"{sig.name} during start-up, before the training began: nothing was saved"
    if held is None:
        assert line == f"{head} or written" and not run.exists()
    else:
        assert line == f"{head}; {run} holds no checkpoint, only {held}; start the run again with the same command"
    assert not (run / "checkpoint.pt").exists()


def _read_until(fd: int, text: bytes, p: subprocess.Popen) -> bytes:
    """What the terminal ``fd`` shows until ``text`` appears (a wait for the run, not a speed check)."""
    seen, deadline = b"", time.time() + 600
    while text not in seen:
        assert time.time() < deadline and p.poll() is None, seen.decode(errors="replace")[-3000:]
        if select.select([fd], [], [], 1.0)[0]:
            seen += os.read(fd, 1 << 16)
    return seen


def test_sighup_from_a_closed_terminal_checkpoints_and_the_run_resumes(tmp_path):
    """The terminal closes while the run learns: SIGHUP writes a checkpoint (status 129). Its
    resume restores it (and a signal at that moment keeps it as it was)."""
    run = tmp_path / "run"
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))

    def own_terminal() -> None:  # a session of its own whose controlling terminal is the pseudo-terminal
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dqnfast.train",
            *TINY,
            "logger.progress=true",
            "algo.total_steps=100000000",
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
        env=ENV,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        preexec_fn=own_terminal,
    )
    os.close(terminal)
    try:
        _read_until(master, b"phase=learning", p)  # the progress bar, drawn once the first updates ran
    finally:
        os.close(master)  # the terminal goes away: the kernel sends SIGHUP to the run
    assert p.wait(timeout=600) == 128 + signal.SIGHUP
    said = [x for x in (run / "train.log").read_text().splitlines() if "SIGHUP" in x]
    ck = load_checkpoint(run / "checkpoint.pt")
    steps = ck["counters"]["env_steps"]
    assert ck["counters"]["updates"] > 0 and steps >= 500
    assert said and said[0].endswith(
        f"SIGHUP: stopped at {steps} agent steps; checkpoint {run / 'checkpoint.pt'}; "
        f"continue with: python -m dqnfast.train resume={run}"
    )
    assert len(said) == 1, said

    before = (run / "checkpoint.pt").read_bytes()
    resumed = start_signalled("loggers", signal.SIGTERM, f"resume={run}", "logger.progress=false", cwd=tmp_path)
    line = one_line(resumed, signal.SIGTERM)
    assert line == (
        f"SIGTERM during start-up, before the training resumed: nothing new was saved; the checkpoint "
        f"{run / 'checkpoint.pt'} ({steps} agent steps) is unchanged; continue with: python -m dqnfast.train "
        f"resume={run}"
    )
    assert f"from {run / 'checkpoint.pt'} at {steps} agent steps" in (run / "train.log").read_text()
    assert (run / "checkpoint.pt").read_bytes() == before


def test_a_run_stopped_in_its_loop_says_so_in_one_line(tmp_path):
    """The console gets one line about the stop (and the handler's note that it heard the signal)."""
    run = tmp_path / "run"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dqnfast.train",
            *TINY,
            "algo.total_steps=100000000",
            "algo.learning_starts=100000000",  # random play: the cheapest loop there is
            "logger.log_every=1000",
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out = ""
    for line in p.stdout:  # wait for the loop's first metric row
        out += line
        if "steps/s" in line:
            break
    p.send_signal(signal.SIGINT)
    rest, err = p.communicate(timeout=600)
    out += rest
    assert p.returncode == 128 + signal.SIGINT and "Traceback" not in err, err[-3000:]
    about_it = [x for x in (out + err).splitlines() if f"resume={run}" in x]
    assert len(about_it) == 1 and "SIGINT: stopped at" in about_it[0], out + err
    assert err.strip() == "SIGINT: writing a checkpoint, then stopping (SIGINT again exits at once)"
