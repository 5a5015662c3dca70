"""Training: build a run's parts from its config, run the loop, checkpoint, resume, stop on signals.

Library use, no Hydra::

    from dqnfast.config import Config
    from dqnfast.training import train
    summary = train(Config(game="CartPole", ...), "runs/cartpole")

``components`` builds env, ring, networks, learner, actor; ``state`` holds the loop's
state and its checkpoint payload; ``loop`` is the loop; ``resume`` continues a run;
``rundir`` locks the run dir (one writer), checks it and carries a fork's files into it;
``stop`` handles SIGINT/SIGTERM; ``limits`` checks what a run asks of the machine (memory
budget, seed range); ``trainer`` ties them together.
"""

from dqnfast.training.components import check_config
from dqnfast.training.resume import ENV_RESEED_STRIDE, run_name
from dqnfast.training.stop import GracefulStop
from dqnfast.training.trainer import objective, train

__all__ = ["ENV_RESEED_STRIDE", "GracefulStop", "check_config", "objective", "run_name", "train"]
