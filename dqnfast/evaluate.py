"""Evaluate a trained agent: ``python -m dqnfast.evaluate run=<run dir or checkpoint>``.

The entry point of the command (Hydra: ``dqnfast.cli.evaluate``, conf/evaluate.yaml); the
evaluation itself is the ``dqnfast.evaluation`` package, whose public names this module
also offers (``from dqnfast.evaluate import EvalConfig, evaluate``).
"""

from dqnfast import evaluation
from dqnfast.evaluation import *  # noqa: F403 - this module offers the package's public names

__all__ = list(evaluation.__all__)

if __name__ == "__main__":
    from dqnfast.cli.evaluate import cli

    cli()
