"""Train a DQN agent: ``python -m dqnfast.train game=SpaceInvaders``.

The command line lives in ``dqnfast.cli.train`` (Hydra), the run in
``dqnfast.training`` (no Hydra: ``from dqnfast.training import train``).
"""

from dqnfast.cli.train import cli

if __name__ == "__main__":
    cli()
