"""``python -m dqnfast.tabular``: Q-value iteration and Q-learning on the textbook MDP (see dqnfast.cli.tabular)."""

from dqnfast.cli.tabular import main

if __name__ == "__main__":
    raise SystemExit(main())
