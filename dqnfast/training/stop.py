"""Signals: the first SIGINT/SIGTERM asks the loop to checkpoint and stop; a second exits at once."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

__all__ = ["GracefulStop"]


class GracefulStop:
    """SIGINT / SIGTERM: the first asks the loop to checkpoint and stop; a second exits at once.

    ``signum`` is None until a signal arrives. Handlers are installed only in the main
    thread and the previous ones are restored on exit. The handler only sets a flag
    and writes one line with ``os.write`` (safe inside a signal handler).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

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
            os.write(2, f"\n{name} again: exiting now, without a checkpoint\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        os.write(2, f"\n{name}: writing a checkpoint, then stopping ({name} again exits at once)\n".encode())

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()
