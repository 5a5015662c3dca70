"""``python -m dqnfast.report multirun/DATE/TIME``: the sweep report (the command line: ``dqnfast.cli.report``)."""

if __name__ == "__main__":
    from dqnfast.cli import run

    run("report")
