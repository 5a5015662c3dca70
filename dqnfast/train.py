"""``python -m dqnfast.train game=SpaceInvaders``: train an agent (the command line: ``dqnfast.cli.train``; the run without Hydra: ``dqnfast.training.train``)."""

if __name__ == "__main__":
    from dqnfast.cli import run

    run("train")
