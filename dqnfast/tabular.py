"""``python -m dqnfast.tabular``: Q-value iteration and Q-learning on the textbook MDP (the command line: ``dqnfast.cli.tabular``)."""

if __name__ == "__main__":
    from dqnfast.cli import run

    run("tabular")
