"""Signals: SIGINT, SIGTERM and SIGHUP end a run in one line, with a checkpoint whenever the loop has run.

Three phases, one handler each:

- start-up (``raise_on_signals``, installed by ``python -m dqnfast.train`` before its imports):
  there is nothing to checkpoint yet, so the first signal raises ``StopRequested`` at once,
  wherever the process is (an import, Hydra, making the envs, opening the loggers); the CLI
  says in one line that nothing was saved and what the run dir holds.
- the training loop (``GracefulStop``): the first signal asks the loop to checkpoint and stop.
- the final evaluation (``GracefulStop.raise_from_now``): the training's checkpoint is
  complete, so the first signal raises ``StopRequested`` again.

In every phase a second signal exits at once (status 128 + its number). SIGHUP (a closed
terminal, a lost SSH session) is handled as SIGTERM is. Standard library only: this module
is imported before numpy, Hydra and torch.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

__all__ = [
    "CAUGHT",
    "STARTUP_POINTS",
    "GracefulStop",
    "StopRequested",
    "nothing_saved",
    "raise_on_signals",
    "reached",
    "signal_at",
]

# SIGUSR2: what SLURM (--signal) and submitit send before a job's time limit or at a preemption
CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)

# Named moments of a run's start-up (``reached``): before the CLI's imports, once Hydra has made the
# run dir, once the training envs exist, once the loggers are open (the last moment before the loop).
STARTUP_POINTS = ("imports", "run dir", "envs", "loggers")
_signal_at: dict[str, int] = {}


def signal_at(point: str, signum: int) -> None:
    """For tests: the process sends itself ``signum`` when its start-up reaches ``point`` (once).

    ``point`` is one of ``STARTUP_POINTS``. A test runs the real command in a subprocess that
    calls this first, so the signal lands at a known moment rather than after a guessed delay.
    """
    if point not in STARTUP_POINTS:
        raise ValueError(f"unknown start-up point {point!r}; one of {', '.join(STARTUP_POINTS)}")
    _signal_at[point] = signal.Signals(signum)


def reached(point: str) -> None:
    """Start-up passes ``point``: sends the signal ``signal_at`` asked for there, else does nothing."""
    signum = _signal_at.pop(point, None)
    if signum is not None:
        os.kill(os.getpid(), signum)  # the main thread's handler runs before the next line of Python


def nothing_saved(signum: int) -> str:
    """The head of the line of a signal during start-up (the CLI adds what the run dir holds)."""
    return f"{signal.Signals(signum).name} during start-up, before the training began: nothing was saved"


def _say(line: str) -> None:
    """One line to stderr from a signal handler; a closed stderr (the terminal went away) is no error."""
    try:
        os.write(2, line.encode())
    except OSError:
        pass


def _exit_now(signum: int) -> None:
    _say(f"\n{signal.Signals(signum).name} again: exiting now, without a checkpoint\n")
    os._exit(128 + signum)


class StopRequested(BaseException):
    """A signal stopped a phase that has nothing to checkpoint (start-up, the final evaluation).

    A BaseException, so that the ``except Exception`` of the code it interrupts lets it through.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _RaiseAtOnce:
    """The start-up handler: the first signal raises ``StopRequested``; a second exits at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # the first one's clean-up (closing envs, loggers) is under way
            _exit_now(signum)
        self.signum = signum
        raise StopRequested(signum)


def raise_on_signals() -> None:
    """Start-up handlers for ``CAUGHT``: the first signal raises ``StopRequested`` where the process is.

    For a command's process (``python -m dqnfast.train``), from its first line until a run's
    loop installs ``GracefulStop``, which puts these back when the run ends. Main thread only
    (elsewhere Python cannot install handlers: nothing is done).
    """
    if threading.current_thread() is threading.main_thread():
        handler = _RaiseAtOnce()
        for s in CAUGHT:
            signal.signal(s, handler)


class GracefulStop:
    """SIGINT / SIGTERM / SIGHUP: the first asks the loop to checkpoint and stop; a second exits at once.

    ``signum`` is None until a signal arrives. Handlers are installed only in the main
    thread (on ``__enter__``, or ``install()`` for ``GracefulStop(install=False)``) and the
    previous ones are restored on exit (``restore()``). The handler sets a flag and writes
    one line with ``os.write`` (safe inside a signal handler). After ``raise_from_now()``
    (the training is over and its checkpoint complete) the first signal raises
    ``StopRequested`` instead, so a long final evaluation stops at once.
    """

    def __init__(self, *, install: bool = True) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self._install_on_enter = install
        self._raise = False

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def raise_from_now(self) -> None:
        """From now on the first signal raises ``StopRequested`` (there is nothing left to checkpoint).

        A signal that came already raises it here, at once.
        """
        self._raise = True
        if self.signum:
            raise StopRequested(self.signum)

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            _exit_now(signum)
        self.signum = signum
        if self._raise:
            _say(f"\n{name}: stopping the final evaluation ({name} again exits at once)\n")
            raise StopRequested(signum)
        _say(f"\n{name}: writing a checkpoint, then stopping ({name} again exits at once)\n")

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self._old:
            for s in CAUGHT:
                self._old[s] = signal.signal(s, self._handle)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def __enter__(self) -> GracefulStop:
        if self._install_on_enter:
            self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()
