"""Train a DQN agent: ``python -m dqnfast.train game=SpaceInvaders``.

The command line lives in ``dqnfast.cli.train`` (Hydra), the run in
``dqnfast.training`` (no Hydra: ``from dqnfast.training import train``).
"""

if __name__ == "__main__":
    import sys

    from dqnfast.training.stop import StopRequested, nothing_saved, raise_on_signals, reached

    try:
        # The start-up signal handlers come before the CLI's imports (Hydra, numpy: most of a second),
        # so a signal at any moment of start-up ends in one line, not a KeyboardInterrupt traceback.
        raise_on_signals()
        reached("imports")
        from dqnfast.cli.train import cli
    except StopRequested as e:
        try:
            print(f"{nothing_saved(e.signum)} or written", file=sys.stderr)
        except OSError:  # the terminal has gone (SIGHUP)
            pass
        sys.exit(128 + e.signum)
    cli()
