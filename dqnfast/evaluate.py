"""``python -m dqnfast.evaluate run=<run dir or checkpoint>``: evaluate a trained agent (the command line: ``dqnfast.cli.evaluate``; the evaluation without Hydra: ``dqnfast.evaluation``)."""

if __name__ == "__main__":
    from dqnfast.cli import run

    run("evaluate")
