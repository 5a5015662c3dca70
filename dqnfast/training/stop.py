"""Signals: the first SIGINT/SIGTERM asks the loop to checkpoint and stop; a second exits at once."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

__all__ = ["GracefulStop", "StopRequested"]


def _say(line: str) -> None:
    """One line to stderr from a signal handler; a closed stderr (the terminal went away) is no error."""
    try:
        os.write(2, line.encode())
    except OSError:
        pass


class StopRequested(BaseException):
    """A signal stopped a phase that has nothing to checkpoint (the final evaluation).

    A BaseException, so that the ``except Exception`` of the code it interrupts lets it through.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class GracefulStop:
    """SIGINT / SIGTERM: the first asks the loop to checkpoint and stop; a second exits at once.

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

    def announce(self, env_steps: int, checkpoint: Any, run_dir: Any) -> None:
        """The one log line of a run stopped by a signal: where its checkpoint is, how to continue."""
        import logging

        logging.getLogger("dqnfast.train").warning(
            "%s at %d agent steps: checkpoint written to %s; continue with: python -m dqnfast.train resume=%s",
            self.name,
            env_steps,
            checkpoint,
            run_dir,
        )

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            _say(f"\n{name} again: exiting now, without a checkpoint\n")
            os._exit(128 + signum)
        self.signum = signum
        if self._raise:
            _say(f"\n{name}: stopping the final evaluation ({name} again exits at once)\n")
            raise StopRequested(signum)
        _say(f"\n{name}: writing a checkpoint, then stopping ({name} again exits at once)\n")

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self._old:
            for s in (signal.SIGINT, signal.SIGTERM):
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
