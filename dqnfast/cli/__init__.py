"""The command lines: the only modules that import Hydra or argparse.

``python -m dqnfast.train`` (``cli.train``), ``python -m dqnfast.evaluate`` (``cli.evaluate``),
``python -m dqnfast.report`` (``cli.report``), ``python -m dqnfast.tabular`` (``cli.tabular``):
each module's ``cli()`` is its console entry point, and ``run`` is how the ``python -m`` modules
call it. ``cli.overrides`` checks overrides in one line before Hydra runs; ``cli.help`` prints the
``--help`` pages; ``cli.hydra_dirs`` removes what Hydra wrote for a refused command.

Standard library only at import: ``run("train")`` installs the start-up signal handlers before
the command line's own imports (Hydra, numpy, torch), and importing this package shortens OpenMP's
spin-wait before torch is loaded (``dqnfast.openmp``: what lets a run on the CPU use every core).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from dqnfast.openmp import shorten_spin

shorten_spin()  # before any import of torch: libgomp reads its environment once, when torch loads

from dqnfast.training.stop import StopRequested, nothing_saved, raise_on_signals, reached  # noqa: E402

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # a link to the repo's conf/, shipped in wheels

# Commands whose start-up may be stopped by a signal with one line: a run's start-up, where a
# signal during the imports (most of a second) would otherwise end in a KeyboardInterrupt traceback.
SIGNALS_FROM_START = frozenset({"train"})


def run(name: str) -> None:
    """``python -m dqnfast.<name>``: imports the command line ``dqnfast.cli.<name>`` and calls its ``cli()``.

    For a command of ``SIGNALS_FROM_START``, SIGINT, SIGTERM and SIGHUP stop the process from the
    first line on: during the imports with one line (nothing saved or written) and status
    128 + the signal number; its ``cli()`` says the same from then on.
    """
    if name not in SIGNALS_FROM_START:
        importlib.import_module(f"dqnfast.cli.{name}").cli()
        return
    try:
        raise_on_signals()
        reached("imports")
        command = importlib.import_module(f"dqnfast.cli.{name}")
    except StopRequested as e:
        try:
            print(f"{nothing_saved(e.signum)} or written", file=sys.stderr)
        except OSError:  # the terminal has gone (SIGHUP)
            pass
        sys.exit(128 + e.signum)
    command.cli()
