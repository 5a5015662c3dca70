"""Training: build a run's parts from its config, run the loop, checkpoint, resume, stop on signals.

Library use, no Hydra::

    from dqnfast.config import Config
    from dqnfast.training import train
    summary = train(Config(game="CartPole", ...), "runs/cartpole")

``run`` is one run's lifecycle, the same for every learner (lock, resume plan, seeding,
loggers, signals, metric rows and checkpoints, summary, final evaluation); each learner
plugs its parts and its loop into it: DQN (``dqn``: ``components`` builds env, ring,
networks, learner, actor; ``loop`` is its loop body), REINFORCE (``reinforce``).
``state`` holds the loop's state and the checkpoint payload; ``resume`` continues a run;
``rundir`` locks the run dir (one writer), checks it and carries a fork's files into it;
``stop`` handles SIGINT/SIGTERM/SIGHUP; ``limits`` checks what a run asks of the machine (memory
budget, seed range).

The names below are imported on first use, so that ``dqnfast.training.stop`` (the standard
library only) loads in a millisecond: ``python -m dqnfast.train`` installs its start-up
signal handlers from it before it imports numpy, Hydra or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ENV_RESEED_STRIDE", "GracefulStop", "check_config", "objective", "run_name", "train"]

_HOME = {
    "ENV_RESEED_STRIDE": "resume",
    "GracefulStop": "stop",
    "check_config": "components",
    "objective": "run",
    "run_name": "resume",
    "train": "run",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
